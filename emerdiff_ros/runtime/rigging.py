"""Where the cameras and the cloud sensors sit, and where each camera's intrinsics come from.

One camera (parameter `cameras` empty): the *_pose parameters, and camera_fov when set. Surround: the
rig file, by sensor id, and each camera's `fov` there with fov_from_rig.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..rig import Rig, RigError, default_rig, load_rig
from .settings import StreamSettings

SINGLE = ""  # the single camera's name: its topics are image, camera_info, ~/labels, ...


@dataclass(frozen=True)
class Rigging:
    cameras: tuple[str, ...]  # (SINGLE,) or the surround cameras, in the order of `cameras`
    poses: dict[str, tuple[float, ...]]  # each camera's and each cloud sensor's (lidar, radar), vehicle frame
    fovs: dict[str, float]  # cameras whose intrinsics come from a field of view and the frame's size

    @property
    def surround(self) -> bool:
        return self.cameras != (SINGLE,)

    @classmethod
    def of(cls, settings: StreamSettings, rig: Rig | None = None) -> "Rigging":
        """The rigging the settings describe; surround needs the rig (surround_rig(settings))."""
        if not settings.cameras:
            return cls((SINGLE,), {SINGLE: settings.camera_pose, "lidar": settings.lidar_pose,
                                   "radar": settings.radar_pose},
                       {SINGLE: settings.camera_fov} if settings.camera_fov else {})
        cameras = {camera: rig.sensor(camera) for camera in settings.cameras}
        sensors = {"lidar": rig.sensor(settings.lidar_id), "radar": rig.sensor(settings.radar_id)}
        return cls(settings.cameras, {name: spec.pose.as_tuple() for name, spec in {**cameras, **sensors}.items()},
                   {camera: spec.fov for camera, spec in cameras.items()} if settings.fov_from_rig else {})


def surround_rig(settings: StreamSettings) -> Rig | None:
    """The rig file surround mode takes its poses from (None with one camera), checked: every camera in
    `cameras` an RGB camera of it, lidar_id and radar_id its LiDAR and radar. Raises RigError naming what
    is wrong."""
    if not settings.cameras:
        return None
    rig = load_rig(Path(settings.rig_file)) if settings.rig_file else default_rig()
    wanted = {**{camera: "camera" for camera in settings.cameras},
              settings.lidar_id: "lidar", settings.radar_id: "radar"}
    if len(set(settings.cameras)) != len(settings.cameras):
        raise RigError(f"cameras names a camera twice: {list(settings.cameras)}")
    for sensor_id, kind in wanted.items():
        try:
            spec = rig.sensor(sensor_id)
        except RigError as exc:
            raise RigError(f"{exc} in {settings.rig_file or 'the shipped rig file'}") from None
        if spec.kind != kind:
            raise RigError(f"sensor {sensor_id!r} of {settings.rig_file or 'the shipped rig file'} is a {spec.kind}, "
                           f"not a {kind}")
    return rig
