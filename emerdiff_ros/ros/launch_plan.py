"""What carla.launch.py starts, worked out without the `launch` library (which CI does not have).

The launch file only turns this plan into launch actions. Everything here comes from the rig file
(sensor ids, topics, fields of view), the node's input table and its parameter specs, so none of it
is written twice. The `rig` argument picks the rig file: front (one camera on the node's `image`) or
surround (every RGB camera of the rig segmented together, on `<camera>/image`, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from ..engine.config import EmerDiffConfig, param_specs
from ..rig import RIG_FILE, Rig, RigError, default_rig, default_rig_file, load_rig, sensor_topics
from ..runtime.outputs import CAMERA_INPUTS, INPUTS, SENSORS, camera_topic
from ..runtime.settings import StreamSettings


class LaunchError(ValueError):
    """A launch argument that cannot be used; the text says why."""


# What each source's semantic camera sends: the bridge converts tags to its CARLA's (0.9.13) palette;
# CARLA's own ROS 2 publishing sends the raw tags, numbered as since 0.9.14.
SOURCES = {"bridge": {"ground_truth_format": "carla-palette", "carla_version": "0.9.13"},
           "native": {"ground_truth_format": "carla-tags", "carla_version": "0.9.14"}}
# Node parameters a launch argument of the same name overrides (empty: the params file's value).
OVERRIDDEN = ("method", "model", "device", "preset", "num_masks", "max_rate_hz", "image_transport",
              "qos_reliability", "autostart", "shutdown_timeout")
SIGTERM_MARGIN_S = 5.0  # after the node's own shutdown budget, before launch sends SIGTERM
TRUE, FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


@dataclass(frozen=True)
class RigChoice:
    rig_file: str  # a file of config/, found as the shipped rig file is
    rviz_config: str  # a file of config/
    surround: bool  # every RGB camera segmented together (parameter `cameras`), not one camera on `image`


# Launch argument rig -> what it starts.
RIGS = {"front": RigChoice(RIG_FILE, "emerdiff.rviz", surround=False),
        "surround": RigChoice("carla_surround.json", "emerdiff_surround.rviz", surround=True)}
# Arguments that choose the front rig's one camera; surround segments every camera, each with its own ground truth.
FRONT_ONLY = ("camera", "ground_truth_camera")


def launch_arguments(rig: Rig | None = None) -> dict[str, tuple[str, str]]:
    """Launch argument -> (default, description), the sensors' defaults from the rig (params_file aside)."""
    rig = rig or default_rig()
    return {
        "source": ("bridge", "who publishes CARLA's sensors: bridge (carla-ros-bridge) or native (CARLA >= 0.9.15 "
                             "--ros2)"),
        "rig": ("front", "the sensor rig: " + ", ".join(f"{name} (config/{choice.rig_file})"
                                                        for name, choice in RIGS.items())
                + "; surround segments every RGB camera of its rig together"),
        "role_name": (rig.role_name, "role name of CARLA's ego vehicle"),
        "camera": (rig.first("camera").id, "id (role name) of the RGB camera in config/carla_sensors.json "
                                           "(rig:=front only)"),
        "lidar": (rig.first("lidar").id, "id of the LiDAR"),
        "radar": (rig.first("radar").id, "id of the radar"),
        "ground_truth_camera": (rig.first("semantic").id, "id of the semantic camera, for live scoring "
                                                          "(rig:=front only)"),
        "live_scoring": ("true", "score every segmented frame against the semantic camera"),
        "use_sim_time": ("true", "follow CARLA's /clock"),
        "rviz": ("true", "start RViz with the rig's view (" + ", ".join(f"config/{choice.rviz_config}"
                                                                        for choice in RIGS.values())
                 + "), where rviz2 is installed"),
        "namespace": ("", "namespace of the node (and of the topics RViz shows)"),
        **{name: ("", f"node parameter {name} (default: the params file's)") for name in OVERRIDDEN},
    }


def override_types() -> dict[str, type]:
    """Each overridable parameter's type, as the node declares it."""
    specs = {spec.name: spec.type for cls in (EmerDiffConfig, StreamSettings) for spec in param_specs(cls)}
    return {name: specs.get(name, str) for name in OVERRIDDEN}  # preset is a plain string parameter


def switch(arguments: dict[str, str], name: str) -> bool:
    """A true/false launch argument; anything else is an error, never silently false."""
    text = arguments[name].strip().lower()
    if text not in TRUE + FALSE:
        raise LaunchError(f"launch argument {name}:={arguments[name]!r} must be true or false")
    return text in TRUE


def typed_overrides(arguments: dict[str, str]) -> dict:
    """The parameter overrides given as launch arguments, typed as the node declares them."""
    overrides = {}
    for name, kind in override_types().items():
        text = arguments.get(name, "")
        if not text:
            continue
        try:
            if kind is bool and text.strip().lower() not in TRUE + FALSE:
                raise ValueError
            overrides[name] = text.strip().lower() in TRUE if kind is bool else kind(text)
        except ValueError:
            raise LaunchError(f"launch argument {name}:={text!r} is not a valid {kind.__name__}") from None
    return overrides


def rig_choice(arguments: dict[str, str]) -> RigChoice:
    """What the rig argument starts; under surround the front rig's camera arguments must be left alone."""
    name = arguments["rig"]
    if name not in RIGS:
        raise LaunchError(f"launch argument rig:={name!r} must be one of {', '.join(RIGS)}")
    defaults = launch_arguments()
    given = [argument for argument in FRONT_ONLY if arguments[argument] != defaults[argument][0]]
    if RIGS[name].surround and given:
        raise LaunchError(f"launch argument {given[0]}:={arguments[given[0]]!r} chooses the camera of rig:=front; "
                          f"rig:={name} segments every RGB camera of config/{RIGS[name].rig_file}, each scored "
                          f"against the semantic camera at its pose: leave {' and '.join(FRONT_ONLY)} unset")
    return RIGS[name]


def rig_file(arguments: dict[str, str]) -> Path:
    """The rig argument's objects file, as installed."""
    return default_rig_file(rig_choice(arguments).rig_file)


def launch_rig(arguments: dict[str, str]) -> Rig:
    """The rig argument's rig, its vehicle under the role_name argument."""
    try:
        rig = load_rig(rig_file(arguments))
    except RigError as exc:
        raise LaunchError(str(exc)) from None
    return replace(rig, role_name=arguments["role_name"])


def rig_parameters(arguments: dict[str, str]) -> dict:
    """Surround's parameters: every RGB camera of the rig in file order, the rig file the node reads their
    poses and fields of view from, and its LiDAR and radar. None for the front rig: its one camera is `image`."""
    if not rig_choice(arguments).surround:
        return {}
    rig = launch_rig(arguments)
    return {"cameras": [camera.id for camera in rig.of_kind("camera")], "rig_file": str(rig_file(arguments)),
            "lidar_id": _sensor(rig, arguments, "lidar").id, "radar_id": _sensor(rig, arguments, "radar").id}


def source_parameters(arguments: dict[str, str]) -> dict:
    """The parameters the source implies: live scoring's ground-truth encoding, and for CARLA's own ROS 2
    publishing (whose camera_info is wrong) the cameras' fields of view from the rig."""
    source = arguments["source"]
    if source not in SOURCES:
        raise LaunchError(f"launch argument source:={source!r} must be one of {', '.join(SOURCES)}")
    parameters = dict(SOURCES[source]) if switch(arguments, "live_scoring") else {"ground_truth_format": ""}
    if source == "native" and rig_choice(arguments).surround:
        parameters["fov_from_rig"] = True
    elif source == "native":
        parameters["camera_fov"] = _sensor(launch_rig(arguments), arguments, "camera").fov
    return parameters


def remappings(arguments: dict[str, str]) -> list[tuple[str, str]]:
    """Each of the node's inputs remapped to the rig sensor's topic, as the bridge names it."""
    rig = launch_rig(arguments)
    clouds = {sensor: sensor_topics(rig, _sensor(rig, arguments, sensor))["cloud"] for sensor in SENSORS}
    if rig_choice(arguments).surround:
        return [*_camera_remappings(rig), *clouds.items()]
    camera = sensor_topics(rig, _sensor(rig, arguments, "camera"))
    topics = {"image": camera["image"], "camera_info": camera["camera_info"], **clouds,
              "ground_truth": sensor_topics(rig, _sensor(rig, arguments, "ground_truth_camera"))["image"]}
    return [(name, topics[name]) for name in INPUTS]


def _camera_remappings(rig: Rig) -> list[tuple[str, str]]:
    """Every RGB camera's inputs: its image and camera_info, and the image of the semantic camera at its pose
    as its ground truth (a camera without one is not scored)."""
    remapped = []
    for camera in rig.of_kind("camera"):
        topics, twin = sensor_topics(rig, camera), rig.ground_truth_of(camera)
        if twin:
            topics["ground_truth"] = sensor_topics(rig, twin)["image"]
        remapped += [(camera_topic(camera.id, name), topics[name]) for name in CAMERA_INPUTS if name in topics]
    return remapped


def sigterm_timeout(overrides: dict, params_file: str) -> float:
    """Seconds launch waits after Ctrl-C before SIGTERM: the node's shutdown budget and a margin."""
    budget = overrides.get("shutdown_timeout", file_value(params_file, "shutdown_timeout",
                                                          StreamSettings().shutdown_timeout))
    return float(budget) + SIGTERM_MARGIN_S


def file_value(params_file: str, name: str, default):
    """A parameter's value in a params file (for any node name or /**), else default."""
    try:
        with open(params_file) as f:
            sections = yaml.safe_load(f) or {}
    except OSError as exc:
        raise LaunchError(f"launch argument params_file:={params_file!r}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise LaunchError(f"launch argument params_file:={params_file!r} is not YAML: {exc}") from None
    for section in sections.values():
        value = (section or {}).get("ros__parameters", {}).get(name)
        if value is not None:
            return value
    return default


# The kind of rig sensor each sensor argument names.
SENSOR_ARGUMENTS = {"camera": "camera", "lidar": "lidar", "radar": "radar", "ground_truth_camera": "semantic"}


def _sensor(rig: Rig, arguments: dict[str, str], argument: str):
    try:
        sensor = rig.sensor(arguments[argument])
    except RigError as exc:
        raise LaunchError(f"{exc} in config/{rig_choice(arguments).rig_file}") from None
    wanted = SENSOR_ARGUMENTS[argument]
    if sensor.kind != wanted:
        others = ", ".join(s.id for s in rig.of_kind(wanted)) or "none"
        raise LaunchError(f"launch argument {argument}:={sensor.id!r} is a {sensor.kind} sensor, not a {wanted} one "
                          f"(the rig's {wanted} sensors: {others})")
    return sensor
