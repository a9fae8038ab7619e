"""Reading and laying out sensor_msgs without ROS.

The functions read any object shaped like a sensor_msgs message (rclpy's, or rosbags' when a bag
is processed offline), and layouts are plain dicts that each side turns into its own message
class, so the node and the bag tool decode and encode through the same code.
"""

from __future__ import annotations

import io
import math
import sys

import numpy as np
from PIL import Image as PILImage

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


def is_compressed(msg) -> bool:
    """A sensor_msgs/CompressedImage (format + data) rather than an Image (encoding + layout)."""
    return not hasattr(msg, "encoding")


def check_image(msg, max_pixels: int | None = None) -> None:
    """Raise MessageError unless the Image's layout describes its data (cheap).

    A CompressedImage is only checked for data here: its size is known once its header is parsed,
    which frame_rgb does (in the worker, never in a callback).
    """
    if is_compressed(msg):
        if len(msg.data) == 0:
            raise MessageError("empty compressed image")
        return
    check_image_layout(msg.encoding, msg.width, msg.height, msg.step, len(msg.data), max_pixels)


def check_image_layout(encoding: str, width: int, height: int, step: int, data_length: int,
                       max_pixels: int | None = None) -> None:
    """check_image on an Image's fields: a deserialized message's, or those read from its serialized
    bytes (runtime.cdr.ImageHeader) before its pixels are deserialized."""
    if encoding not in IMAGE_ENCODINGS:
        raise MessageError(f"unsupported encoding {encoding!r} (use one of {', '.join(IMAGE_ENCODINGS)})")
    if width == 0 or height == 0:
        raise MessageError(f"empty image {width}x{height}")
    _check_pixels(width, height, max_pixels)
    channels = IMAGE_ENCODINGS[encoding][0]
    if step < width * channels:
        raise MessageError(f"step {step} < width {width} x {channels} channels")
    if data_length != step * height:
        raise MessageError(f"{data_length} bytes of data, step x height is {step * height}")


def _check_pixels(width: int, height: int, max_pixels: int | None) -> None:
    if max_pixels is not None and width * height > max_pixels:
        raise MessageError(f"{width}x{height} image is larger than max_image_pixels {max_pixels}")


def frame_rgb(msg, max_pixels: int | None = None) -> np.ndarray:
    """H x W x 3 uint8 RGB of an Image or a CompressedImage (JPEG or PNG, as image_transport sends)."""
    return compressed_to_rgb(msg, max_pixels) if is_compressed(msg) else image_to_rgb(msg, max_pixels)


def compressed_to_rgb(msg, max_pixels: int | None = None) -> np.ndarray:
    unreadable = (OSError, SyntaxError, ValueError, PILImage.DecompressionBombError)
    try:
        image = PILImage.open(io.BytesIO(bytes(msg.data)))
    except unreadable as exc:
        raise MessageError(f"undecodable compressed image (format {msg.format!r}): {exc}") from None
    with image:
        if image.format not in ("JPEG", "PNG"):
            raise MessageError(f"compressed image is {image.format}, not JPEG or PNG")
        _check_pixels(image.width, image.height, max_pixels)  # from the header: no decompression bombs
        try:
            return np.asarray(image.convert("RGB"))
        except unreadable as exc:  # e.g. truncated data
            raise MessageError(f"undecodable compressed image (format {msg.format!r}): {exc}") from None


def image_to_rgb(msg, max_pixels: int | None = None) -> np.ndarray:
    """H x W x 3 uint8 RGB."""
    check_image(msg, max_pixels)
    channels, order = IMAGE_ENCODINGS[msg.encoding]
    rows = np.frombuffer(msg.data, dtype=np.uint8).reshape(msg.height, msg.step)
    pixels = rows[:, : msg.width * channels].reshape(msg.height, msg.width, channels)
    return np.ascontiguousarray(pixels[:, :, list(order)])


MONO = {"mono8": np.uint8, "8UC1": np.uint8, "mono16": np.uint16, "16UC1": np.uint16}


def label_pixels(msg) -> np.ndarray:
    """A label or ground-truth Image's pixels: (H, W) values for mono8/mono16, else (H, W, 3) RGB."""
    if msg.encoding not in MONO:
        return image_to_rgb(msg)
    dtype = np.dtype(MONO[msg.encoding]).newbyteorder(">" if msg.is_bigendian else "<")
    row = msg.width * dtype.itemsize
    if msg.step < row or len(msg.data) != msg.step * msg.height:
        raise MessageError(f"{msg.encoding} image {msg.width}x{msg.height} with step {msg.step} and "
                           f"{len(msg.data)} bytes")
    rows = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.step)[:, :row]
    return np.ascontiguousarray(rows).view(dtype).astype(MONO[msg.encoding])


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


def cloud_from_msg(msg, max_points: int | None = None) -> Cloud:
    """The cloud of a PointCloud2, its layout checked (no copy of the points)."""
    cloud = Cloud(
        fields=tuple(CloudField(f.name, f.offset, f.datatype, f.count) for f in msg.fields),
        point_step=msg.point_step, row_step=msg.row_step, width=msg.width, height=msg.height,
        data=memoryview(msg.data).cast("B"), is_bigendian=bool(msg.is_bigendian),
    )
    try:
        cloud.check(max_points)
    except CloudError as exc:
        raise MessageError(str(exc)) from None
    return cloud


def cloud_layout(cloud: Cloud, is_dense: bool = False) -> dict:
    """PointCloud2 fields (all but the header); `fields` holds (name, offset, datatype, count) tuples."""
    return dict(height=cloud.height, width=cloud.width, is_bigendian=cloud.is_bigendian,
                point_step=cloud.point_step, row_step=cloud.row_step, is_dense=is_dense,
                fields=[(f.name, f.offset, f.datatype, f.count) for f in cloud.fields], data=bytes(cloud.data))


def camera_from_info(msg) -> CameraModel:
    k = [float(v) for v in (msg.k if hasattr(msg, "k") else msg.K)]  # ROS 1 spells it K
    fx, fy, cx, cy = k[0], k[4], k[2], k[5]
    if not all(math.isfinite(v) for v in k):
        raise MessageError(f"camera_info k has non-finite values (k={_numbers(k)})")
    if not (fx > 0 and fy > 0) or msg.width == 0 or msg.height == 0:
        raise MessageError(f"camera_info without intrinsics (k={_numbers(k)}, {msg.width}x{msg.height})")
    return CameraModel(fx, fy, cx, cy, int(msg.width), int(msg.height))


def _numbers(values) -> str:
    return "[" + ", ".join(f"{v:g}" for v in values) + "]"
