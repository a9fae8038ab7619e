"""Settings of the streaming side (node and bag tool), declared like the method's configuration."""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..engine.config import check_fields, param

# The rig of config/carla_sensors.json (the CARLA bridge's default ego sensors), vehicle frame.
CAMERA_POSE = (2.0, 0.0, 2.0, 0.0, 0.0, 0.0)
LIDAR_POSE = (0.0, 0.0, 2.4, 0.0, 0.0, 0.0)
RADAR_POSE = (2.0, 0.0, 2.0, 0.0, 0.0, 0.0)
POSE = "[x, y, z, roll, pitch, yaw] in the vehicle frame (m, degrees; ROS axes as in the bridge's objects file)"


@dataclass(frozen=True)
class StreamSettings:
    max_rate_hz: float = param(2.0, "most frames segmented per second; 0 = as fast as the GPU allows",
                               low=0.0, high=1000.0)
    sync_slop: float = param(0.025, "seconds a cloud's stamp may differ from the frame's to match it",
                             low=0.0, high=10.0)
    cloud_buffer_seconds: float = param(10.0, "seconds of LiDAR/radar clouds kept for matching", low=0.1, high=600.0)
    camera_pose: tuple[float, ...] = param(CAMERA_POSE, f"camera {POSE}", length=6)
    lidar_pose: tuple[float, ...] = param(LIDAR_POSE, f"LiDAR {POSE}", length=6)
    radar_pose: tuple[float, ...] = param(RADAR_POSE, f"radar {POSE}", length=6)
    track_labels: bool = param(True, "keep label values stable across frames (match clusters to the previous ones)")
    track_smoothing: float = param(0.5, "how fast a tracked cluster centre follows its cluster (1 = at once)",
                                   low=0.01, high=1.0)
    overlay_alpha: float = param(0.5, "weight of the label colours in the overlay", low=0.0, high=1.0)
    qos_reliability: str = param("best_effort", "input subscriptions' reliability (best_effort matches any publisher)",
                                 choices=("best_effort", "reliable"), read_only=True)
    qos_depth: int = param(5, "input subscriptions' queue depth", low=1, high=1000, read_only=True)
    diagnostics_period: float = param(1.0, "seconds between /diagnostics messages", low=0.1, high=60.0,
                                      read_only=True)

    def __post_init__(self) -> None:
        check_fields(self)

    def replace(self, **changes) -> "StreamSettings":
        return replace(self, **changes)
