"""sensor_msgs <-> numpy and the runtime's cloud type. Checks are cheap and run in the callbacks."""

from __future__ import annotations

import sys

import numpy as np
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField

from ..runtime.clouds import Cloud, CloudError, CloudField
from ..runtime.projection import CameraModel

# encoding -> (channels, index of R, G, B)
IMAGE_ENCODINGS = {"rgb8": (3, (0, 1, 2)), "rgba8": (4, (0, 1, 2)), "bgr8": (3, (2, 1, 0)),
                   "bgra8": (4, (2, 1, 0)), "mono8": (1, (0, 0, 0))}
BIG_ENDIAN = sys.byteorder == "big"


class MessageError(ValueError):
    """A message that cannot be used; the reason is the text."""


def stamp_ns(stamp) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def check_image(msg: Image) -> None:
    if msg.encoding not in IMAGE_ENCODINGS:
        raise MessageError(f"unsupported encoding {msg.encoding!r} (use one of {', '.join(IMAGE_ENCODINGS)})")
    if msg.width == 0 or msg.height == 0:
        raise MessageError(f"empty image {msg.width}x{msg.height}")
    channels = IMAGE_ENCODINGS[msg.encoding][0]
    if msg.step < msg.width * channels:
        raise MessageError(f"step {msg.step} < width {msg.width} x {channels} channels")
    if len(msg.data) != msg.step * msg.height:
        raise MessageError(f"{len(msg.data)} bytes of data, step x height is {msg.step * msg.height}")


def image_to_rgb(msg: Image) -> np.ndarray:
    """H x W x 3 uint8 RGB from a checked Image."""
    check_image(msg)
    channels, order = IMAGE_ENCODINGS[msg.encoding]
    rows = np.frombuffer(msg.data, dtype=np.uint8).reshape(msg.height, msg.step)
    pixels = rows[:, : msg.width * channels].reshape(msg.height, msg.width, channels)
    return np.ascontiguousarray(pixels[:, :, list(order)])


def labels_to_image(labels: np.ndarray, header) -> Image:
    """mono8, or mono16 for uint16 labels."""
    encoding = {np.dtype(np.uint8): "mono8", np.dtype(np.uint16): "mono16"}[labels.dtype]
    return _image(labels, encoding, header)


def rgb_to_image(rgb: np.ndarray, header) -> Image:
    return _image(rgb, "rgb8", header)


def _image(pixels: np.ndarray, encoding: str, header) -> Image:
    msg = Image(header=header, height=pixels.shape[0], width=pixels.shape[1], encoding=encoding,
                is_bigendian=BIG_ENDIAN and pixels.dtype.itemsize > 1)
    msg.step = pixels.shape[1] * pixels.dtype.itemsize * (pixels.shape[2] if pixels.ndim == 3 else 1)
    msg.data = np.ascontiguousarray(pixels).tobytes()
    return msg


def cloud_from_msg(msg: PointCloud2) -> Cloud:
    """The runtime cloud of a PointCloud2, with its layout checked (no copy of the points)."""
    cloud = Cloud(
        fields=tuple(CloudField(f.name, f.offset, f.datatype, f.count) for f in msg.fields),
        point_step=msg.point_step, row_step=msg.row_step, width=msg.width, height=msg.height,
        data=memoryview(msg.data).cast("B"), is_bigendian=msg.is_bigendian,
    )
    try:
        cloud.check()
    except CloudError as exc:
        raise MessageError(str(exc)) from None
    return cloud


def cloud_to_msg(cloud: Cloud, header) -> PointCloud2:
    msg = PointCloud2(header=header, height=cloud.height, width=cloud.width, is_bigendian=cloud.is_bigendian,
                      point_step=cloud.point_step, row_step=cloud.row_step, is_dense=False)
    msg.fields = [PointField(name=f.name, offset=f.offset, datatype=f.datatype, count=f.count) for f in cloud.fields]
    msg.data = bytes(cloud.data)
    return msg


def camera_from_info(msg: CameraInfo) -> CameraModel:
    fx, fy, cx, cy = msg.k[0], msg.k[4], msg.k[2], msg.k[5]
    if not (fx > 0 and fy > 0) or msg.width == 0 or msg.height == 0:
        raise MessageError(f"camera_info without intrinsics (k={list(msg.k)}, {msg.width}x{msg.height})")
    return CameraModel(float(fx), float(fy), float(cx), float(cy), int(msg.width), int(msg.height))
