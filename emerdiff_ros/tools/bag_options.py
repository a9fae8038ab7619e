"""What `emerdiff bag` is asked for: the topics and the output storage. Torch-free, unlike
tools/bag.py, so the CLI builds its flags without loading the engine."""

from __future__ import annotations

from dataclasses import dataclass

from rosbags.rosbag2 import StoragePlugin

from ..rig import default_rig, sensor_topics

STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}


RIG = default_rig()
CAMERA_TOPICS = sensor_topics(RIG, RIG.first("camera"))


@dataclass(frozen=True)
class BagTopics:
    """The input topics; by default the rig's camera, LiDAR and radar, as the bridge names them."""

    image: str = CAMERA_TOPICS["image"]
    camera_info: str = CAMERA_TOPICS["camera_info"]
    lidar: str = sensor_topics(RIG, RIG.first("lidar"))["cloud"]
    radar: str = sensor_topics(RIG, RIG.first("radar"))["cloud"]
