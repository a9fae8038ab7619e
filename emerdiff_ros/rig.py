"""The rig: the CARLA ROS bridge's objects file (config/carla_sensors.json), the one source of sensor ids,
poses, topics, frame ids and fields of view for the node's defaults, the tools, the launch file and carla_rig.

The same file `carla_spawn_objects` reads: one vehicle whose `id` is its role name, with sensors
whose `id` names their topics, `spawn_point` in ROS axes (x forward, y left, z up; metres and
degrees) and every other key a blueprint attribute. Pseudo sensors (tf, odometry, control, ...)
exist only inside the bridge and are skipped here.
"""

from __future__ import annotations

import functools
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

# blueprint type -> what the rig records it as
SENSOR_KINDS = {"sensor.camera.rgb": "camera", "sensor.camera.semantic_segmentation": "semantic",
                "sensor.lidar.ray_cast": "lidar", "sensor.other.radar": "radar"}
RIG_FILE = "carla_sensors.json"


class RigError(ValueError):
    """The rig file cannot be used; the text says why."""


@dataclass(frozen=True)
class Pose:
    """A spawn point as the bridge's objects file writes it: ROS axes, metres, degrees."""

    x: float = 0.0
    y: float = 0.0
    z: float = 0.0
    roll: float = 0.0
    pitch: float = 0.0
    yaw: float = 0.0

    def as_tuple(self) -> tuple[float, ...]:
        """[x, y, z, roll, pitch, yaw], as the node's *_pose parameters take it."""
        return (self.x, self.y, self.z, self.roll, self.pitch, self.yaw)

    def to_carla(self) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
        """((x, y, z), (pitch, yaw, roll)) in CARLA's left-handed axes (y right), as the bridge converts:
        y, pitch and yaw change sign."""
        return (self.x, -self.y, self.z), (-self.pitch, -self.yaw, self.roll)


@dataclass(frozen=True)
class SensorSpec:
    type: str
    id: str
    pose: Pose
    attributes: dict[str, str] = field(default_factory=dict)  # as the bridge passes them: str(value)

    @property
    def kind(self) -> str:
        return SENSOR_KINDS[self.type]

    @property
    def fov(self) -> float:
        """A camera's horizontal field of view in degrees (CARLA's default, 90, where the rig sets none)."""
        return float(self.attributes.get("fov", 90.0))


@dataclass(frozen=True)
class Rig:
    vehicle_type: str
    role_name: str
    vehicle_pose: Pose | None  # None: a spawn point of the map
    sensors: tuple[SensorSpec, ...]
    skipped: tuple[str, ...]  # the bridge's pseudo sensors, by id

    def of_kind(self, kind: str) -> list[SensorSpec]:
        return [s for s in self.sensors if s.kind == kind]

    def first(self, kind: str) -> SensorSpec:
        """The rig's first sensor of a kind: the one the node, the bag tool and eval use by default."""
        found = self.of_kind(kind)
        if not found:
            raise RigError(f"the rig has no {kind} sensor")
        return found[0]

    def ground_truth_of(self, camera: SensorSpec) -> SensorSpec | None:
        """The semantic camera that sees what a camera sees (the same pose), or None."""
        return next((s for s in self.of_kind("semantic") if s.pose == camera.pose), None)

    def sensor(self, sensor_id: str) -> SensorSpec:
        found = next((s for s in self.sensors if s.id == sensor_id), None)
        if found is None:
            raise RigError(f"the rig has no sensor {sensor_id!r} (it has {', '.join(s.id for s in self.sensors)})")
        return found


def rig_file_candidates(name: str = RIG_FILE) -> list[Path]:
    """Where a shipped rig file (a name in config/) is looked for, first found wins: this checkout's config/,
    the ament index's share (a colcon workspace), then this Python's share (a pip install, possibly stale
    beside a workspace)."""
    candidates = [Path(__file__).resolve().parents[1] / "config" / name]
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory("emerdiff_ros")) / "config" / name)
    except (ImportError, LookupError, OSError):  # no ament index, or the package is not in it
        pass
    return candidates + [Path(sys.prefix) / "share" / "emerdiff_ros" / "config" / name]


def default_rig_file(name: str = RIG_FILE) -> Path:
    candidates = rig_file_candidates(name)
    return next((p for p in candidates if p.is_file()), candidates[0])


def _pose(point: dict, what: str, required: tuple[str, ...] = ()) -> Pose:
    if not isinstance(point, dict):
        raise RigError(f"{what}: spawn_point must be an object with x, y, z, roll, pitch, yaw")
    missing = [k for k in required if k not in point]
    if missing:  # where the bridge would log it and spawn at a random point of the map instead
        raise RigError(f"{what}: spawn_point lacks {', '.join(missing)}: give all of {', '.join(required)}, or no "
                       f"spawn_point for a random spawn point of the map")
    try:
        return Pose(**{k: float(point.get(k, 0.0)) for k in ("x", "y", "z", "roll", "pitch", "yaw")})
    except (TypeError, ValueError):
        raise RigError(f"{what}: spawn_point values must be numbers, got {point}") from None


def _is_pseudo(kind: str) -> bool:
    return ".pseudo." in kind


def parse_rig(objects: dict) -> Rig:
    entries = objects.get("objects") if isinstance(objects, dict) else None
    if not isinstance(entries, list):
        raise RigError('a rig file holds {"objects": [...]} like the bridge\'s objects.json')
    vehicles = [o for o in entries if str(o.get("type", "")).startswith("vehicle.")]
    others = [o for o in entries if o not in vehicles]
    unsupported = [str(o.get("id", o.get("type"))) for o in others if not _is_pseudo(str(o.get("type", "")))]
    if unsupported:
        raise RigError(f"only one vehicle with attached sensors is supported; not: {', '.join(unsupported)}")
    if len(vehicles) != 1:
        raise RigError(f"the rig needs exactly one vehicle, the file has {len(vehicles)}")
    vehicle = vehicles[0]
    role = str(vehicle.get("id", "")).strip()
    if not role:
        raise RigError("the vehicle needs an id (its role name)")
    vehicle_pose = (_pose(vehicle["spawn_point"], role, required=("x", "y", "z", "roll", "pitch", "yaw"))
                    if "spawn_point" in vehicle else None)
    sensors, skipped, seen = [], [str(o.get("id")) for o in others], set()
    for spec in vehicle.get("sensors", []):
        kind, sensor_id = str(spec.get("type", "")), str(spec.get("id", "")).strip()
        if not sensor_id:
            raise RigError(f"a {kind or 'sensor'} of {role} has no id")
        if sensor_id in seen:
            raise RigError(f"sensor id {sensor_id!r} is used twice")
        seen.add(sensor_id)
        if _is_pseudo(kind):
            skipped.append(sensor_id)
            continue
        if kind not in SENSOR_KINDS:
            raise RigError(f"sensor {sensor_id!r}: type {kind!r} is not supported "
                           f"(supported: {', '.join(SENSOR_KINDS)})")
        attributes = {str(k): str(v) for k, v in spec.items()
                      if k not in ("type", "id", "spawn_point", "attached_objects")}
        sensors.append(SensorSpec(kind, sensor_id, _pose(spec.get("spawn_point", {}), sensor_id), attributes))
    if not sensors:
        raise RigError(f"vehicle {role} has no sensors carla_rig can spawn")
    return Rig(str(vehicle["type"]), role, vehicle_pose, tuple(sensors), tuple(skipped))


def load_rig(path: Path) -> Rig:
    try:
        return parse_rig(json.loads(Path(path).read_text()))
    except FileNotFoundError:
        raise RigError(f"no such rig file: {path}") from None
    except json.JSONDecodeError as exc:
        raise RigError(f"{path} is not valid JSON: {exc}") from None
    except RigError as exc:
        raise RigError(f"{path}: {exc}") from None


def frame_id(rig: Rig, sensor: SensorSpec) -> str:
    """The bridge's header.frame_id of a sensor: <vehicle role>/<sensor id>."""
    return f"{rig.role_name}/{sensor.id}"


def sensor_topics(rig: Rig, sensor: SensorSpec) -> dict[str, str]:
    """The bridge's topics of a sensor (CARLA >= 0.9.15 names its native ones the same from ros_name)."""
    base = f"/carla/{rig.role_name}/{sensor.id}"
    if sensor.kind in ("camera", "semantic"):
        return {"camera_info": f"{base}/camera_info", "image": f"{base}/image"}
    return {"cloud": base}


@functools.cache
def default_rig() -> Rig:
    """The shipped rig (config/carla_sensors.json): the defaults of poses, topics and frame ids come from it."""
    return load_rig(default_rig_file())
