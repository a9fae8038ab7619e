"""Small CARLA-like bags written with rosbags: camera, camera_info, LiDAR, radar and an unrelated topic."""

from __future__ import annotations

import importlib
import io
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image
from rclpy.serialization import deserialize_message
from rosbags.highlevel import AnyReader
from rosbags.rosbag1 import Writer as Writer1
from rosbags.rosbag2 import StoragePlugin, Writer as Writer2
from rosbags.typesys import Stores, get_typestore

from ros_harness import FX, HEIGHT, WIDTH, lidar_cloud, points_at_pixels, radar_cloud

TOPICS = {"image": "/carla/ego_vehicle/rgb_front/image", "info": "/carla/ego_vehicle/rgb_front/camera_info",
          "lidar": "/carla/ego_vehicle/lidar", "radar": "/carla/ego_vehicle/radar_front", "note": "/driver_note"}
TYPES = {"image": "sensor_msgs/msg/Image", "info": "sensor_msgs/msg/CameraInfo",
         "lidar": "sensor_msgs/msg/PointCloud2", "radar": "sensor_msgs/msg/PointCloud2", "note": "std_msgs/msg/String"}
COMPRESSED_TOPIC = TOPICS["image"] + "/compressed"
PIXELS = [(u, v) for u in range(10, WIDTH, 130) for v in range(20, HEIGHT, 110)]
LIDAR_POINTS = points_at_pixels(PIXELS, 12.0, (-2.0, 0.0, 0.4))
RADAR_POINTS = points_at_pixels(PIXELS[::2], 30.0, (0.0, 0.0, 0.0))


def frame_stamp(i: int) -> int:
    return 1_000_000_000 * (100 + i) + 50_000_000 * i  # CARLA ticks of 1.05 s, in nanoseconds


def _messages(store, rgb: np.ndarray, i: int, ros1: bool, native_info: bool = False) -> dict:
    t = store.types
    sec, nanosec = divmod(frame_stamp(i), 1_000_000_000)
    stamp = t["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec)

    def header(frame_id):
        return t["std_msgs/msg/Header"](**({"seq": i} if ros1 else {}), stamp=stamp, frame_id=frame_id)

    image = _image(store, rgb, header("ego_vehicle/rgb_front"))
    focal = -FX * np.pi / 180 if native_info else FX  # CARLA's own ROS 2 camera_info: a negative focal length
    k = np.array([focal, 0, WIDTH / 2, 0, focal, HEIGHT / 2, 0, 0, 1], dtype=np.float64)
    roi = t["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    info = t["sensor_msgs/msg/CameraInfo"](
        header=header("ego_vehicle/rgb_front"), height=HEIGHT, width=WIDTH, distortion_model="plumb_bob",
        **{("D" if ros1 else "d"): np.zeros(5), ("K" if ros1 else "k"): k, ("R" if ros1 else "r"): np.eye(3).ravel(),
           ("P" if ros1 else "p"): np.array([FX, 0, WIDTH / 2, 0, 0, FX, HEIGHT / 2, 0, 0, 0, 1, 0], np.float64)},
        binning_x=0, binning_y=0, roi=roi)
    clouds = {name: _cloud(store, source, header(source.header.frame_id))
              for name, source in (("lidar", lidar_cloud(LIDAR_POINTS, 0)), ("radar", radar_cloud(RADAR_POINTS, 0)))}
    note = t["std_msgs/msg/String"](data=f"frame {i}")
    png = io.BytesIO()
    Image.fromarray(rgb).save(png, format="PNG")
    compressed = t["sensor_msgs/msg/CompressedImage"](header=header("ego_vehicle/rgb_front"),
                                                      format="rgb8; png compressed",
                                                      data=np.frombuffer(png.getvalue(), np.uint8))
    return {"image": image, "compressed": compressed, "info": info, **clouds, "note": note}


def _image(store, rgb: np.ndarray, header):
    """A camera frame as the bridge publishes it (bgra8)."""
    bgra = np.concatenate([rgb[:, :, ::-1], np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2)
    return store.types["sensor_msgs/msg/Image"](header=header, height=HEIGHT, width=WIDTH, encoding="bgra8",
                                                is_bigendian=0, step=WIDTH * 4, data=bgra.reshape(-1))


def _cloud(store, source, header):
    """An rclpy PointCloud2 (ros_harness's layouts) as a rosbags message with this header."""
    t = store.types
    fields = [t["sensor_msgs/msg/PointField"](name=f.name, offset=f.offset, datatype=f.datatype, count=f.count)
              for f in source.fields]
    return t["sensor_msgs/msg/PointCloud2"](
        header=header, height=1, width=source.width, fields=fields, is_bigendian=False, point_step=source.point_step,
        row_step=source.row_step, data=np.frombuffer(bytes(source.data), np.uint8), is_dense=True)


def write_bag(path: Path, rgb: np.ndarray, frames: int = 3, kind: str = "mcap", compressed: bool = False,
              native_info: bool = False) -> Path:
    """A bag of `frames` CARLA ticks; kind is mcap, sqlite3 or ros1 (path.bag); compressed: the camera as
    image_transport's PNG stream on TOPICS["image"]/compressed instead of raw; native_info: camera_info as
    CARLA's native ROS 2 publishes it (unusable intrinsics)."""
    ros1 = kind == "ros1"
    store = get_typestore(Stores.ROS1_NOETIC if ros1 else Stores.ROS2_KILTED)
    if ros1:
        writer = Writer1(path)
    else:
        storage = StoragePlugin.MCAP if kind == "mcap" else StoragePlugin.SQLITE3
        writer = Writer2(path, version=9, storage_plugin=storage)
    writer.open()
    topics, types = dict(TOPICS), dict(TYPES)
    if compressed:
        topics["compressed"], types["compressed"] = COMPRESSED_TOPIC, "sensor_msgs/msg/CompressedImage"
        del topics["image"]
    connections = {key: writer.add_connection(topics[key], types[key], typestore=store) for key in topics}
    for i in range(frames):
        messages = _messages(store, np.roll(rgb, 8 * i, axis=1), i, ros1, native_info)
        # the bridge publishes a tick's sensors in no fixed order: clouds here come after the image
        for j, key in enumerate(("info", "compressed" if compressed else "image", "lidar", "radar", "note")):
            data = store.serialize_ros1(messages[key], types[key]) if ros1 else \
                store.serialize_cdr(messages[key], types[key])
            writer.write(connections[key], frame_stamp(i) + 1_000_000 * (j + 1), data)
    writer.close()
    return path


def write_surround_bag(path: Path, rgb: np.ndarray | dict[str, np.ndarray], cameras: tuple[str, ...],
                       lidar_points: np.ndarray, frames: int = 2,
                       missing: frozenset[tuple[int, str]] = frozenset(),
                       unreadable: frozenset[tuple[int, str]] = frozenset()) -> Path:
    """An MCAP bag of `frames` CARLA ticks of the surround rig's cameras (no camera_info: fov_from_rig) and
    LiDAR, each camera stamped a little after the tick as the bridge may; missing: (tick, camera) without
    an image; unreadable: (tick, camera) whose image has an encoding the node does not take. rgb: one view for
    every camera, or each camera's own (camera -> view)."""
    store = get_typestore(Stores.ROS2_KILTED)
    t = store.types
    writer = Writer2(path, version=9, storage_plugin=StoragePlugin.MCAP)
    writer.open()
    images = {camera: writer.add_connection(f"/carla/ego_vehicle/{camera}/image", "sensor_msgs/msg/Image",
                                            typestore=store) for camera in cameras}
    lidar = writer.add_connection(TOPICS["lidar"], "sensor_msgs/msg/PointCloud2", typestore=store)
    for i in range(frames):
        def header(frame_id: str, offset_ns: int = 0):
            sec, nanosec = divmod(frame_stamp(i) + offset_ns, 1_000_000_000)
            return t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec),
                                            frame_id=frame_id)

        cloud = _cloud(store, lidar_cloud(lidar_points, 0), header("ego_vehicle/lidar"))
        writer.write(lidar, frame_stamp(i), store.serialize_cdr(cloud, "sensor_msgs/msg/PointCloud2"))
        for k, camera in enumerate(cameras):
            if (i, camera) in missing:
                continue
            view = rgb[camera] if isinstance(rgb, dict) else rgb
            image = _image(store, np.roll(view, 8 * i, axis=1), header(f"ego_vehicle/{camera}", 1_000_000 * k))
            if (i, camera) in unreadable:
                image.encoding = "yuv422"
            writer.write(images[camera], frame_stamp(i) + 1_000_000 * (k + 1),
                         store.serialize_cdr(image, "sensor_msgs/msg/Image"))
    writer.close()
    return path


def read_back(path: Path) -> dict[str, list]:
    """Every message of a bag, deserialised with rclpy's type support (as a subscriber gets it), by topic."""
    messages = defaultdict(list)
    with AnyReader([Path(path)]) as reader:
        for conn, _, raw in reader.messages():
            package, _, name = conn.msgtype.split("/")
            kind = getattr(importlib.import_module(f"{package}.msg"), name)
            messages[conn.topic].append(deserialize_message(bytes(raw), kind))
    return messages


def field(cloud, name: str) -> np.ndarray:
    """One float32, uint16 or uint8 field of a PointCloud2 message."""
    f = next(f for f in cloud.fields if f.name == name)
    dtype = {2: "u1", 4: "<u2", 7: "<f4"}[f.datatype]
    return np.ndarray((cloud.width * cloud.height,), dtype=dtype, buffer=bytes(cloud.data), offset=f.offset,
                      strides=(cloud.point_step,))
