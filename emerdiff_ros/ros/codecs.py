"""rclpy messages from the runtime's layouts (decoding lives in runtime.messages)."""

from __future__ import annotations

from sensor_msgs.msg import Image, PointCloud2, PointField

from ..runtime.outputs import CLOUD, IMAGE


def to_image(layout: dict, header) -> Image:
    return Image(header=header, **layout)


def to_cloud(layout: dict, header) -> PointCloud2:
    fields = [PointField(name=n, offset=o, datatype=d, count=c) for n, o, d, c in layout["fields"]]
    return PointCloud2(header=header, **{**layout, "fields": fields})


def to_layout_message(kind: str, layout: dict, header):
    """The rclpy message of a runtime layout of the given type (an OUTPUTS value)."""
    return {IMAGE: to_image, CLOUD: to_cloud}[kind](layout, header)
