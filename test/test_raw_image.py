"""A serialized Image's header read from its CDR bytes (runtime.cdr), and checked before its pixels are
deserialized: against rclpy's own serialization, cut and bent bytes, and a raw subscription over DDS."""

import struct
import threading
import time

import pytest
from builtin_interfaces.msg import Time
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from emerdiff_ros.runtime.cdr import ImageHeader, image_header
from emerdiff_ros.runtime.messages import IMAGE_ENCODINGS, MessageError, check_image
from ros_harness import own_context, spinning, stop_spinning

CHANNELS = {**{k: v[0] for k, v in IMAGE_ENCODINGS.items()}, "mono16": 2, "32FC1": 4}


def image(width=3, height=2, encoding="rgb8", frame_id="camera", sec=1700000000, nanosec=123456789, step=None,
          data=None, is_bigendian=False) -> Image:
    step = width * CHANNELS.get(encoding, 1) if step is None else step
    msg = Image(header=Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id=frame_id), height=height, width=width,
                encoding=encoding, is_bigendian=is_bigendian, step=step)
    msg.data = bytes(i % 251 for i in range(step * height)) if data is None else data
    return msg


def expected(msg: Image, data_offset: int) -> ImageHeader:
    return ImageHeader(msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id, msg.height, msg.width,
                       msg.encoding, msg.is_bigendian, msg.step, len(msg.data), data_offset)


def cdr(msg: Image, order: str = "<") -> bytes:
    """The message in plain CDR of either byte order, written here field by field (padding zeroed)."""
    out = bytearray(b"\x00\x01\x00\x00" if order == "<" else b"\x00\x00\x00\x00")

    def number(code, value):
        out.extend(bytes(-(len(out) - 4) % struct.calcsize(code)))
        out.extend(struct.pack(order + code, value))

    def string(text):
        number("I", len(text.encode()) + 1)
        out.extend(text.encode() + b"\x00")

    number("i", msg.header.stamp.sec)
    number("I", msg.header.stamp.nanosec)
    string(msg.header.frame_id)
    number("I", msg.height)
    number("I", msg.width)
    string(msg.encoding)
    number("B", msg.is_bigendian)
    number("I", msg.step)
    number("I", len(msg.data))
    return bytes(out + bytes(msg.data))


def reason(check) -> str | None:
    try:
        check()
    except MessageError as exc:
        return str(exc)
    return None


@pytest.mark.parametrize("encoding", [*IMAGE_ENCODINGS, "mono16", "32FC1", "", "a-much-longer-encoding-name"])
def test_the_header_of_rclpy_serialized_images_reads_back_for_every_frame_id_length(encoding):
    for frame_id in ("ego_vehicle/rgb_front"[:n] for n in range(10)):
        for width, height in ((1, 1), (3, 2), (5, 7)):
            msg = image(width, height, encoding, frame_id)
            serialized = serialize_message(msg)
            header = image_header(serialized)
            assert header == expected(msg, len(serialized) - len(msg.data)), (frame_id, width, height)
            assert bytes(serialized[header.data_offset:header.data_offset + header.data_length]) == bytes(msg.data)
            assert header.stamp_ns == 1700000000_123456789
            assert reason(lambda: header.check()) == reason(lambda: check_image(msg))


def test_any_bytes_like_buffer_and_any_stamp_read_back():
    msg = image(frame_id="é/ünïcode", sec=-5, nanosec=999_999_999, is_bigendian=True)
    serialized = serialize_message(msg)
    for buffer in (serialized, bytearray(serialized), memoryview(serialized)):
        assert image_header(buffer) == expected(msg, len(serialized) - len(msg.data))


def test_a_full_hd_frame_reads_without_touching_its_pixels():
    msg = image(1920, 1080, "bgra8", data=bytes(1920 * 1080 * 4))
    serialized = serialize_message(msg)
    header = image_header(serialized)
    assert header == expected(msg, len(serialized) - 1920 * 1080 * 4)
    header.check(max_pixels=1920 * 1080)


@pytest.mark.parametrize("order", ["<", ">"])
def test_both_byte_orders_read_as_rclpy_deserializes_them(order):
    for frame_id in ("", "a", "ab", "abc", "abcd", "abcde"):
        for encoding in ("mono8", "rgb8", "bgra8"):
            msg = image(5, 3, encoding, frame_id, nanosec=0x01020304)
            serialized = cdr(msg, order)
            assert deserialize_message(serialized, Image) == msg  # the bytes written here are real CDR
            assert image_header(serialized) == expected(msg, len(serialized) - len(msg.data))
    if order == "<":
        assert len(serialized) == len(serialize_message(msg))


def test_every_truncation_is_a_message_error():
    msg = image(2, 2, "mono8", "cam")
    serialized = serialize_message(msg)
    for end in range(len(serialized)):
        with pytest.raises(MessageError, match="serialized image"):
            image_header(serialized[:end])
    with pytest.raises(MessageError, match="data needs 4 bytes at offset 48, 3 are left of 51"):
        image_header(serialized[:-1])
    with pytest.raises(MessageError, match="frame_id needs 4 bytes at offset 16, 2 are left of 18"):
        image_header(serialized[:18])


def test_bent_bytes_are_message_errors_with_their_reason():
    good = cdr(image(2, 2, "mono8", "cam"))
    with pytest.raises(MessageError, match="encapsulation 0x0003"):
        image_header(b"\x00\x03" + good[2:])  # parameter-list CDR: not what ROS writes
    with pytest.raises(MessageError, match="frame_id .4 bytes. does not end with a NUL"):
        image_header(good.replace(b"cam\x00", b"camX"))
    with pytest.raises(MessageError, match="frame_id is not UTF-8"):
        image_header(good.replace(b"cam\x00", b"c\xffm\x00"))
    with pytest.raises(MessageError, match="frame_id needs 4294967295 bytes"):
        image_header(good[:12] + b"\xff\xff\xff\xff" + good[16:])  # a length that claims gigabytes
    with pytest.raises(MessageError, match="data needs 4294967295 bytes"):
        image_header(good[:-8] + b"\xff\xff\xff\xff" + good[-4:])
    assert image_header(good[:12] + struct.pack("<I", 0) + good[20:]).frame_id == ""  # a length without a NUL


def test_layouts_are_refused_from_the_header_as_check_image_refuses_them():
    bad = {
        "unsupported encoding '16UC1'": image(encoding="16UC1"),
        "empty image 0x2": image(width=0),
        "step 8 < width 3 x 3 channels": image(step=8),
        "17 bytes of data, step x height is 18": image(data=bytes(17)),
        "19 bytes of data, step x height is 18": image(data=bytes(19)),
    }
    for text, msg in bad.items():
        header = image_header(serialize_message(msg))
        assert reason(header.check) == reason(lambda: check_image(msg))
        assert reason(header.check).startswith(text)


def test_an_oversized_frame_is_refused_from_its_header():
    cap = 1920 * 1080
    # The pixel count is checked before the data length: a 8192x8192 rgb8 header is refused without its 192 MiB.
    header = image_header(serialize_message(image(8192, 8192, data=b"")))
    with pytest.raises(MessageError, match="8192x8192 image is larger than max_image_pixels 2073600"):
        header.check(cap)
    msg = image(1921, 1080, "mono8", data=bytes(1921 * 1080))
    header = image_header(serialize_message(msg))
    assert reason(lambda: header.check(cap)) == reason(lambda: check_image(msg, cap)) == (
        "1921x1080 image is larger than max_image_pixels 2073600")
    header.check(1921 * 1080)


def test_a_raw_subscription_receives_bytes_whose_header_is_what_was_published():
    """As the node subscribes (best_available, its event callbacks), but raw: the callback gets the bytes."""
    sent = [image(64, 48, "bgra8", f"camera_{n}", sec=100 + n, nanosec=n) for n in range(1, 4)]
    received, arrived, incompatible = [], threading.Event(), []
    qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, durability=DurabilityPolicy.VOLATILE,
                     reliability=ReliabilityPolicy.BEST_AVAILABLE)
    events = SubscriptionEventCallbacks(incompatible_qos=incompatible.append)

    def on_image(serialized):
        received.append(serialized)
        if len(received) == len(sent):
            arrived.set()

    with own_context() as context:
        subscriber = Node("raw_image_subscriber", context=context)
        publisher = Node("raw_image_publisher", context=context)
        subscriber.create_subscription(Image, "raw_image_test", on_image, qos, event_callbacks=events, raw=True)
        pub = publisher.create_publisher(Image, "raw_image_test", QoSProfile(depth=10,
                                                                             reliability=ReliabilityPolicy.RELIABLE))
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(subscriber)
        thread = spinning(executor)
        try:
            deadline = time.monotonic() + 10
            while pub.get_subscription_count() == 0:
                assert time.monotonic() < deadline, "the raw subscription never matched"
                time.sleep(0.02)
            for msg in sent:
                pub.publish(msg)
            assert arrived.wait(10), f"{len(received)} of {len(sent)} images arrived"
        finally:
            stop_spinning(executor, thread)
            subscriber.destroy_node()
            publisher.destroy_node()
    assert not incompatible
    for serialized, msg in zip(received, sent):
        assert isinstance(serialized, bytes)
        header = image_header(serialized)
        assert header == expected(msg, len(serialized) - len(msg.data))
        header.check(max_pixels=64 * 48)
        assert deserialize_message(serialized, Image) == msg
