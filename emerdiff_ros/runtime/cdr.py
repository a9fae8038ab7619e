"""A sensor_msgs/Image's header and layout read from its serialized (CDR) bytes, without ROS.

What `rclpy.serialization.serialize_message` produces and a `create_subscription(..., raw=True)` callback
receives: a 4-byte encapsulation header (its first two bytes say big- or little-endian CDR), then the
fields in order, each aligned to its own size counted from the end of that header; strings are a uint32
length that counts their NUL, then the characters and the NUL; the pixels are a uint32 count, then the
bytes. Only the fields before the pixels are read, through struct on offsets, so a frame can be checked
(check_image_layout, as a deserialized one is) before its pixels are ever copied into a Python message.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .messages import MessageError, check_image_layout

# Encapsulation ids of plain CDR (XCDR1), as rmw_fastrtps and rmw_cyclonedds write ROS messages.
ENCAPSULATIONS = {b"\x00\x00": ">", b"\x00\x01": "<"}  # CDR_BE, CDR_LE
ENCAPSULATION_SIZE = 4


@dataclass(frozen=True)
class ImageHeader:
    """A serialized sensor_msgs/Image's fields but its pixels: their count, and where they start."""

    sec: int
    nanosec: int
    frame_id: str
    height: int
    width: int
    encoding: str
    is_bigendian: bool
    step: int
    data_length: int
    data_offset: int  # of the first pixel byte in the serialized bytes

    @property
    def stamp_ns(self) -> int:
        return self.sec * 1_000_000_000 + self.nanosec

    def check(self, max_pixels: int | None = None) -> None:
        """Raise MessageError unless the layout describes the data: check_image, on the serialized frame."""
        check_image_layout(self.encoding, self.width, self.height, self.step, self.data_length, max_pixels)


def image_header(serialized: bytes | bytearray | memoryview) -> ImageHeader:
    """The header and layout of a serialized sensor_msgs/Image (no copy of its pixels).

    MessageError when the bytes are not one: an unknown encapsulation, a field or the pixels cut short,
    a string without its NUL or not UTF-8.
    """
    reader = _Reader(serialized)
    sec, nanosec = reader.number("i", "header.stamp.sec"), reader.number("I", "header.stamp.nanosec")
    frame_id = reader.string("header.frame_id")
    height, width = reader.number("I", "height"), reader.number("I", "width")
    encoding = reader.string("encoding")
    is_bigendian = reader.number("B", "is_bigendian") != 0
    step = reader.number("I", "step")
    data_length = reader.number("I", "data length")
    reader.need(data_length, "data")
    return ImageHeader(sec, nanosec, frame_id, height, width, encoding, is_bigendian, step, data_length,
                       reader.offset)


class _Reader:
    """Fields read in order from CDR bytes: offsets, alignment and bounds, never a copy of the rest."""

    def __init__(self, serialized: bytes | bytearray | memoryview):
        self.view = memoryview(serialized).cast("B")
        self.offset = ENCAPSULATION_SIZE
        if len(self.view) < ENCAPSULATION_SIZE:
            raise MessageError(f"serialized image of {len(self.view)} bytes: shorter than its CDR encapsulation "
                               "header")
        kind = bytes(self.view[:2])
        if kind not in ENCAPSULATIONS:
            raise MessageError(f"serialized image with encapsulation 0x{kind.hex()}: not plain CDR (0x0000 "
                               "big-endian or 0x0001 little-endian)")
        self.order = ENCAPSULATIONS[kind]

    def need(self, size: int, field: str) -> None:
        if self.offset + size > len(self.view):
            raise MessageError(f"serialized image cut short: {field} needs {size} bytes at offset {self.offset}, "
                               f"{max(len(self.view) - self.offset, 0)} are left of {len(self.view)}")

    def number(self, code: str, field: str) -> int:
        size = struct.calcsize(code)
        # Aligned to its size from the start of the payload (the encapsulation header is 4 bytes, so the
        # same as from the start of the buffer for sizes up to 4).
        self.offset += -(self.offset - ENCAPSULATION_SIZE) % size
        self.need(size, field)
        (value,) = struct.unpack_from(self.order + code, self.view, self.offset)
        self.offset += size
        return value

    def string(self, field: str) -> str:
        length = self.number("I", f"{field} length")  # with the NUL
        self.need(length, field)
        raw = self.view[self.offset:self.offset + length]
        self.offset += length
        if length == 0:  # not written by ROS's CDR libraries (an empty string is its NUL), yet unambiguous
            return ""
        if raw[-1] != 0:
            raise MessageError(f"serialized image's {field} ({length} bytes) does not end with a NUL")
        try:
            return str(raw[:-1], "utf-8")
        except UnicodeDecodeError as exc:
            raise MessageError(f"serialized image's {field} is not UTF-8: {exc}") from None
