"""What `emerdiff bag` is asked for: the topics and the output storage. Torch-free, unlike
tools/bag.py, so the CLI builds its flags without loading the engine."""

from __future__ import annotations

from dataclasses import dataclass

from rosbags.rosbag2 import StoragePlugin

STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}


@dataclass(frozen=True)
class BagTopics:
    image: str = "/carla/ego_vehicle/rgb_front/image"
    camera_info: str = "/carla/ego_vehicle/rgb_front/camera_info"
    lidar: str = "/carla/ego_vehicle/lidar"
    radar: str = "/carla/ego_vehicle/radar_front"
