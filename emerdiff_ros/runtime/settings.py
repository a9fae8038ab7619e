"""Settings of the streaming side (node and bag tool), declared like the method's configuration."""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..engine.config import METHODS, check_fields, param
from ..rig import default_rig
from ..scoring import CARLA_FAMILIES, DEFAULT_CARLA_VERSION, ClassMap, ground_truth_format

# The rig of config/carla_sensors.json (the CARLA bridge's default ego sensors), vehicle frame.
RIG = default_rig()
CAMERA_POSE, LIDAR_POSE, RADAR_POSE = (RIG.first(kind).pose.as_tuple() for kind in ("camera", "lidar", "radar"))
POSE = ("[x, y, z, roll, pitch, yaw] in the vehicle frame (m, degrees; ROS axes as in the bridge's objects file; "
        "default: the rig file's)")


@dataclass(frozen=True)
class StreamSettings:
    method: str = param("emerdiff", "segmentation method: emerdiff (the paper's), lowres (its baseline: the masks "
                        "upsampled), dino (k-means on DINO features) or segformer (SUPERVISED, Cityscapes classes: a "
                        "reference); a method's model loads on the worker the first time it is asked for",
                        choices=METHODS)
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
    max_image_pixels: int = param(4096 * 4096, "largest camera frame accepted (width x height); larger ones are "
                                  "skipped and counted", low=1, high=2**31 - 1)
    max_cloud_points: int = param(2_000_000, "largest LiDAR/radar cloud accepted (points); larger ones are skipped "
                                  "and counted", low=1, high=2**31 - 1)
    image_transport: str = param("raw", "camera input: raw (sensor_msgs/Image on `image`) or compressed "
                                 "(sensor_msgs/CompressedImage, JPEG or PNG, on `image`/compressed)",
                                 choices=("raw", "compressed"), read_only=True)
    qos_reliability: str = param("best_available", "input subscriptions' reliability: best_available follows each "
                                 "publisher (reliable from a reliable one), best_effort, or reliable",
                                 choices=("best_available", "best_effort", "reliable"), read_only=True)
    # As deep as the bridge's publishers: a busy executor must not lose the clouds frames are matched with
    # (with 5, a 10-minute 30 Hz soak on a loaded 2-core machine left 6% of frames without their LiDAR).
    qos_depth: int = param(10, "input subscriptions' queue depth", low=1, high=1000, read_only=True)
    diagnostics_period: float = param(1.0, "seconds between /diagnostics messages", low=0.1, high=60.0,
                                      read_only=True)
    camera_fov: float = param(0.0, "horizontal field of view (degrees) to derive the intrinsics from the frame's size "
                              "as CARLA does, instead of camera_info (CARLA's own ROS 2 camera_info is wrong); "
                              "camera_info is then not subscribed to; 0 uses camera_info", low=0.0, high=179.0)
    ground_truth_format: str = param("", "encoding of the `ground_truth` input for live scoring: a format of emerdiff "
                                     "eval (carla-palette as the bridge publishes it, carla-tags for raw tags in the "
                                     "red channel, ...) or a class map file; empty: no live scoring", read_only=True,
                                     may_be_empty=True)
    carla_version: str = param(DEFAULT_CARLA_VERSION, "CARLA release whose tag numbering and palette the carla-tags "
                               "and carla-palette ground truth follow (0.9.5, 0.9.13, 0.9.14 and later)",
                               read_only=True)
    cameras: tuple[str, ...] = param((), "surround: the rig's camera ids segmented together in one label space, "
                                     "inputs <camera>/image and <camera>/camera_info, outputs ~/<camera>/labels, "
                                     "...; empty: one camera on `image` (outputs ~/labels, ...)", read_only=True)
    rig_file: str = param("", "surround: the CARLA objects file (the bridge's format) giving each camera's, the "
                          "LiDAR's and the radar's pose by sensor id; empty: the shipped config/carla_sensors.json",
                          read_only=True, may_be_empty=True)
    lidar_id: str = param(RIG.first("lidar").id, "surround: the rig's LiDAR (its sensor id)", read_only=True)
    radar_id: str = param(RIG.first("radar").id, "surround: the rig's radar (its sensor id)", read_only=True)
    fov_from_rig: bool = param(False, "surround: each camera's intrinsics from its `fov` in rig_file and its frame "
                               "size, as camera_fov for one camera (CARLA's own ROS 2 camera_info is wrong); "
                               "camera_info is then not subscribed to", read_only=True)
    surround_timeout: float = param(0.5, "surround: seconds a surround frame waits for a missing camera before "
                                    "the cameras it has are segmented", low=0.01, high=60.0)
    devices: tuple[str, ...] = param((), "surround: one model per torch device, the cameras of a surround frame "
                                     "spread across them in parallel (e.g. [cuda:0, cuda:1]); empty: [device]",
                                     read_only=True)
    autostart: bool = param(True, "configure (load the model) and activate at start-up; false leaves the "
                            "lifecycle node unconfigured until told", read_only=True)
    shutdown_timeout: float = param(30.0, "seconds Ctrl-C or deactivate waits for the accepted frames to be "
                                    "segmented and published; the launch file's SIGTERM waits longer",
                                    low=1.0, high=3600.0)

    def __post_init__(self) -> None:
        check_fields(self)
        if self.ground_truth_format:
            self.scoring_format()  # a name or class map that cannot be used stops here, with the reason

    def scoring_format(self) -> ClassMap | None:
        """The ground truth's class map for live scoring, or None without it."""
        if not self.ground_truth_format:
            return None
        version = self.carla_version if self.ground_truth_format in CARLA_FAMILIES else None
        return ground_truth_format(self.ground_truth_format, version)

    def replace(self, **changes) -> "StreamSettings":
        return replace(self, **changes)


# The settings that shape a frame's outputs, so `emerdiff bag` takes each as a flag: a bag segmented offline
# holds what the node would have published with the same settings.
OUTPUT_SETTINGS = ("sync_slop", "camera_pose", "lidar_pose", "radar_pose", "camera_fov", "track_labels",
                   "track_smoothing", "overlay_alpha", "cameras", "rig_file", "lidar_id", "radar_id", "fov_from_rig")
