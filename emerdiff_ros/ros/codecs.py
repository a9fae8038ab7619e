"""rclpy messages from the runtime's layouts (decoding lives in runtime.messages)."""

from __future__ import annotations

import numpy as np
from sensor_msgs.msg import Image, PointCloud2, PointField

from ..runtime.clouds import Cloud
from ..runtime.messages import cloud_layout, image_layout


def to_image(pixels: np.ndarray, header) -> Image:
    """Labels (mono8/mono16) or an RGB image (rgb8); bytes, which rclpy copies in quickly."""
    return Image(header=header, **image_layout(pixels))


def to_cloud(cloud: Cloud, header) -> PointCloud2:
    layout = cloud_layout(cloud)
    fields = [PointField(name=n, offset=o, datatype=d, count=c) for n, o, d, c in layout.pop("fields")]
    return PointCloud2(header=header, fields=fields, **layout)
