"""What `emerdiff bag` is asked for: the topics and the output storage. Torch-free, unlike
tools/bag.py, so the CLI builds its flags without loading the engine."""

from __future__ import annotations

from dataclasses import dataclass, field

from rosbags.rosbag2 import StoragePlugin

from ..rig import Rig, default_rig, sensor_topics
from ..runtime.rigging import SINGLE
from ..runtime.settings import StreamSettings

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
    # surround: camera -> its topics by kind (image, camera_info); empty: the one camera on image and camera_info
    surround: dict[str, dict[str, str]] = field(default_factory=dict)

    def cameras(self) -> dict[str, dict[str, str]]:
        """camera -> its image and camera_info topics (the single camera's name is SINGLE)."""
        return self.surround or {SINGLE: {"image": self.image, "camera_info": self.camera_info}}


def surround_topics(rig: Rig, settings: StreamSettings) -> BagTopics:
    """The surround cameras', the LiDAR's and the radar's topics, by their ids in the rig, as the bridge names them."""
    cameras = {camera: sensor_topics(rig, rig.sensor(camera)) for camera in settings.cameras}
    return BagTopics(lidar=sensor_topics(rig, rig.sensor(settings.lidar_id))["cloud"],
                     radar=sensor_topics(rig, rig.sensor(settings.radar_id))["cloud"], surround=cameras)
