"""Reading and laying out sensor_msgs without ROS.

The functions read any object shaped like a sensor_msgs message (rclpy's, or rosbags' when a bag
is processed offline), and layouts are plain dicts that each side turns into its own message
class, so the node and the bag tool decode and encode through the same code.
"""

from __future__ import annotations

import sys

import numpy as np

from .clouds import Cloud, CloudError, CloudField
from .projection import CameraModel

# encoding -> (channels, index of R, G, B)
IMAGE_ENCODINGS = {"rgb8": (3, (0, 1, 2)), "rgba8": (4, (0, 1, 2)), "bgr8": (3, (2, 1, 0)),
                   "bgra8": (4, (2, 1, 0)), "mono8": (1, (0, 0, 0))}
BIG_ENDIAN = sys.byteorder == "big"


class MessageError(ValueError):
    """A message that cannot be used; the reason is the text."""


def stamp_ns(stamp) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def check_image(msg) -> None:
    """Raise MessageError unless the Image's layout describes its data (cheap)."""
    if msg.encoding not in IMAGE_ENCODINGS:
        raise MessageError(f"unsupported encoding {msg.encoding!r} (use one of {', '.join(IMAGE_ENCODINGS)})")
    if msg.width == 0 or msg.height == 0:
        raise MessageError(f"empty image {msg.width}x{msg.height}")
    channels = IMAGE_ENCODINGS[msg.encoding][0]
    if msg.step < msg.width * channels:
        raise MessageError(f"step {msg.step} < width {msg.width} x {channels} channels")
    if len(msg.data) != msg.step * msg.height:
        raise MessageError(f"{len(msg.data)} bytes of data, step x height is {msg.step * msg.height}")


def image_to_rgb(msg) -> np.ndarray:
    """H x W x 3 uint8 RGB."""
    check_image(msg)
    channels, order = IMAGE_ENCODINGS[msg.encoding]
    rows = np.frombuffer(msg.data, dtype=np.uint8).reshape(msg.height, msg.step)
    pixels = rows[:, : msg.width * channels].reshape(msg.height, msg.width, channels)
    return np.ascontiguousarray(pixels[:, :, list(order)])


def image_layout(pixels: np.ndarray) -> dict:
    """Image fields (all but the header) for labels (mono8/mono16) or an RGB image (rgb8)."""
    if pixels.ndim == 3:
        encoding = "rgb8"
    else:
        encoding = {np.dtype(np.uint8): "mono8", np.dtype(np.uint16): "mono16"}[pixels.dtype]
    channels = pixels.shape[2] if pixels.ndim == 3 else 1
    return dict(height=pixels.shape[0], width=pixels.shape[1], encoding=encoding,
                is_bigendian=BIG_ENDIAN and pixels.dtype.itemsize > 1,
                step=pixels.shape[1] * pixels.dtype.itemsize * channels,
                data=np.ascontiguousarray(pixels).tobytes())


def cloud_from_msg(msg) -> Cloud:
    """The cloud of a PointCloud2, its layout checked (no copy of the points)."""
    cloud = Cloud(
        fields=tuple(CloudField(f.name, f.offset, f.datatype, f.count) for f in msg.fields),
        point_step=msg.point_step, row_step=msg.row_step, width=msg.width, height=msg.height,
        data=memoryview(msg.data).cast("B"), is_bigendian=bool(msg.is_bigendian),
    )
    try:
        cloud.check()
    except CloudError as exc:
        raise MessageError(str(exc)) from None
    return cloud


def cloud_layout(cloud: Cloud, is_dense: bool = False) -> dict:
    """PointCloud2 fields (all but the header); `fields` holds (name, offset, datatype, count) tuples."""
    return dict(height=cloud.height, width=cloud.width, is_bigendian=cloud.is_bigendian,
                point_step=cloud.point_step, row_step=cloud.row_step, is_dense=is_dense,
                fields=[(f.name, f.offset, f.datatype, f.count) for f in cloud.fields], data=bytes(cloud.data))


def camera_from_info(msg) -> CameraModel:
    k = msg.k if hasattr(msg, "k") else msg.K  # ROS 1 spells it K
    fx, fy, cx, cy = k[0], k[4], k[2], k[5]
    if not (fx > 0 and fy > 0) or msg.width == 0 or msg.height == 0:
        raise MessageError(f"camera_info without intrinsics (k={list(k)}, {msg.width}x{msg.height})")
    return CameraModel(float(fx), float(fy), float(cx), float(cy), int(msg.width), int(msg.height))
