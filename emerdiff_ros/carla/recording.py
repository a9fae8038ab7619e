"""Where a drive goes: a rosbag2 of the bridge's messages, and image/ground-truth PNG pairs for eval.

The bag holds what the CARLA ROS 2 bridge publishes for the rig in synchronous mode: per tick a
/clock message and, for each sensor, its messages with the tick's simulation time as header stamp
(and as the bag's log time), the bridge's frame ids, encodings, layouts and publisher QoS. It is
written with rosbags (no ROS needed) and closed on every way out of the drive, so an interrupted
recording is a valid bag of the ticks done. Both record the server's CARLA version (the bag in its
custom_data, the frames in a manifest beside the ground truth): its release numbers the semantic classes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from ..runtime.messages import cloud_layout
from ..scoring import BAG_CARLA_VERSION_KEY, write_frames_manifest
from .convert import camera_info_fields, image_fields, lidar_cloud, radar_cloud
from ..rig import Rig, SensorSpec, frame_id, sensor_topics
from .session import CameraGeometry, Tick

_UNSET = QosTime(0, 0)
# The bridge's publishers: depth 10, reliable, volatile (rclpy's defaults for a depth).
BRIDGE_QOS = Qos(QosHistory.KEEP_LAST, 10, QosReliability.RELIABLE, QosDurability.VOLATILE, _UNSET, _UNSET,
                 QosLiveliness.AUTOMATIC, _UNSET, False)
MSGTYPES = {"image": "sensor_msgs/msg/Image", "camera_info": "sensor_msgs/msg/CameraInfo",
            "cloud": "sensor_msgs/msg/PointCloud2"}
CLOCK_TOPIC, CLOCK_TYPE = "/clock", "rosgraph_msgs/msg/Clock"


class RecordError(ValueError):
    """The recording cannot be made where asked; the text says why."""


def check_new_bag(path: Path) -> None:
    if path.exists():
        raise RecordError(f"{path} exists; carla_rig never overwrites a bag, choose another --record")


class BagRecorder:
    """The drive into a new rosbag2 (MCAP), one tick at a time."""

    def __init__(self, path: Path, rig: Rig, cameras: dict[str, CameraGeometry], carla_version: str):
        check_new_bag(path)
        self.rig, self.path = rig, path
        self.store = get_typestore(Stores.ROS2_KILTED)
        self.camera_info = {sensor_id: camera_info_fields(g.width, g.height, g.fov) for sensor_id, g in cameras.items()}
        self.messages = 0
        self.ticks = 0
        self._writer = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP)
        self._writer.set_custom_data(BAG_CARLA_VERSION_KEY, carla_version)
        self._writer.open()
        self._clock = self._connect(CLOCK_TOPIC, CLOCK_TYPE)
        self._connections = {(sensor.id, part): self._connect(topic, MSGTYPES[part])
                             for sensor in rig.sensors for part, topic in sensor_topics(rig, sensor).items()}

    def _connect(self, topic: str, msgtype: str):
        return self._writer.add_connection(topic, msgtype, typestore=self.store, offered_qos_profiles=[BRIDGE_QOS])

    def __enter__(self) -> "BagRecorder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Write the bag's index and metadata: after this it is a valid rosbag2."""
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.close()

    def write(self, tick: Tick) -> None:
        types = self.store.types
        sec, nanosec = divmod(tick.stamp, 1_000_000_000)
        time = types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec)
        self._emit(self._clock, CLOCK_TYPE, types[CLOCK_TYPE](clock=time), tick.stamp)
        for sensor in self.rig.sensors:
            value = tick.readings.get(sensor.id)
            if value is None:
                continue
            header = types["std_msgs/msg/Header"](stamp=time, frame_id=frame_id(self.rig, sensor))
            for part, msg in self._messages(sensor, value, header):
                self._emit(self._connections[(sensor.id, part)], MSGTYPES[part], msg, tick.stamp)
        self.ticks += 1

    def _messages(self, sensor: SensorSpec, value: np.ndarray, header):
        types = self.store.types
        if sensor.kind in ("camera", "semantic"):
            roi = types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0,
                                                            do_rectify=False)
            yield "camera_info", types["sensor_msgs/msg/CameraInfo"](header=header, roi=roi,
                                                                     **self.camera_info[sensor.id])
            yield "image", types["sensor_msgs/msg/Image"](header=header, **image_fields(value))
            return
        cloud = lidar_cloud(value) if sensor.kind == "lidar" else radar_cloud(value)
        layout = cloud_layout(cloud, is_dense=False)  # the bridge never claims a dense cloud
        point_field = types["sensor_msgs/msg/PointField"]
        layout["fields"] = [point_field(name=n, offset=o, datatype=d, count=c) for n, o, d, c in layout["fields"]]
        layout["data"] = np.frombuffer(layout["data"], dtype=np.uint8)
        yield "cloud", types["sensor_msgs/msg/PointCloud2"](header=header, **layout)

    def _emit(self, connection, msgtype: str, msg, timestamp: int) -> None:
        self._writer.write(connection, timestamp, self.store.serialize_cdr(msg, msgtype))
        self.messages += 1


def ground_truth_pair(rig: Rig, cameras: dict[str, CameraGeometry]) -> tuple[str, str]:
    """(RGB camera, semantic camera) ids of the first RGB camera with a semantic camera at its pose and size."""
    for camera in rig.of_kind("camera"):
        for semantic in rig.of_kind("semantic"):
            if semantic.pose == camera.pose and cameras.get(semantic.id) == cameras.get(camera.id):
                return camera.id, semantic.id
    raise RecordError("--save-frames needs a semantic camera at the RGB camera's pose, size and field of view")


class FrameWriter:
    """rgb/<frame>.png and gt/<frame>.png (CityScapes palette colours) per tick: inputs for
    `emerdiff segment` and ground truth for `emerdiff eval --gt-format carla-palette`, which reads the
    CARLA version from gt/'s manifest."""

    def __init__(self, folder: Path, camera: str, semantic: str, carla_version: str):
        self.check_folder(folder)
        self.folders = {camera: folder / "rgb", semantic: folder / "gt"}
        for sub in self.folders.values():
            sub.mkdir(parents=True, exist_ok=True)
        write_frames_manifest(folder / "gt", carla_version)
        self.pairs = 0

    @staticmethod
    def check_folder(folder: Path) -> None:
        for sub in (folder / "rgb", folder / "gt"):
            if sub.is_dir() and any(sub.glob("*.png")):
                raise RecordError(f"{sub} already holds PNGs; choose an empty --save-frames folder")

    def write(self, tick: Tick) -> None:
        if not all(sensor in tick.readings for sensor in self.folders):
            return  # a pair or nothing: a frame without its ground truth cannot be scored
        for sensor, sub in self.folders.items():
            bgra = tick.readings[sensor]
            Image.fromarray(np.ascontiguousarray(bgra[:, :, 2::-1])).save(sub / f"{tick.frame:08d}.png")
        self.pairs += 1
