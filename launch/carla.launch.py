"""emerdiff next to CARLA's sensors:  ros2 launch emerdiff_ros carla.launch.py [model:=...] [source:=native]

source:=bridge (default) is the CARLA ROS 2 bridge (CARLA 0.9.13); source:=native is CARLA >= 0.9.15
publishing over ROS 2 itself (`emerdiff carla --ros2`). Both use the same topic names; they differ in
what the semantic camera sends (palette colours or raw tags) and in camera_info (CARLA's own is wrong,
so the intrinsics then come from the camera's field of view in config/carla_sensors.json).

The node is a lifecycle node that configures and activates itself (parameter `autostart`), so it comes
up the same under any launch_ros version. The parameter arguments below override the params file when
given and leave its values alone otherwise. RViz starts only where rviz2 is installed, showing the
topics of the node's namespace.
"""

import yaml
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode, Node
from launch_ros.substitutions import FindPackageShare

SHARE = FindPackageShare("emerdiff_ros")
ARGUMENTS = {
    "source": ("bridge", "who publishes CARLA's sensors: bridge (carla-ros-bridge) or native (CARLA >= 0.9.15 --ros2)"),
    "role_name": ("ego_vehicle", "role name of CARLA's ego vehicle"),
    "camera": ("rgb_front", "id (role name) of the RGB camera in config/carla_sensors.json"),
    "lidar": ("lidar", "id of the LiDAR"),
    "radar": ("radar_front", "id of the radar"),
    "ground_truth_camera": ("semantic_segmentation_front", "id of the semantic camera, for live scoring"),
    "live_scoring": ("true", "score every segmented frame against the semantic camera"),
    "params_file": (PathJoinSubstitution([SHARE, "config", "carla.yaml"]), "node parameters"),
    "use_sim_time": ("true", "follow CARLA's /clock"),
    "rviz": ("true", "start RViz with config/emerdiff.rviz, where rviz2 is installed"),
    "namespace": ("", "namespace of the node (and of the topics RViz shows)"),
}
# Node parameters, typed as the node declares them; empty = the params file's value (or the node's default).
OVERRIDES = {"model": str, "device": str, "preset": str, "num_masks": int, "max_rate_hz": float,
             "image_transport": str, "qos_reliability": str, "autostart": bool, "shutdown_timeout": float}
# What each source's semantic camera sends: the bridge converts tags to its CARLA's (0.9.13) palette;
# CARLA's own ROS 2 publishing sends the raw tags, numbered as since 0.9.14.
SOURCES = {"bridge": {"ground_truth_format": "carla-palette", "carla_version": "0.9.13"},
           "native": {"ground_truth_format": "carla-tags", "carla_version": "0.9.14"}}
DEFAULT_SHUTDOWN_TIMEOUT = 30.0  # the node's default for shutdown_timeout
SIGTERM_MARGIN_S = 5.0  # after the node's own budget, before launch sends SIGTERM


def _launch(context):
    def arg(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    source = arg("source")
    if source not in SOURCES:
        raise ValueError(f"launch argument source:={source!r} must be one of {', '.join(SOURCES)}")
    vehicle = f"/carla/{arg('role_name')}/"
    from_source = dict(SOURCES[source]) if _true(arg("live_scoring")) else {"ground_truth_format": ""}
    if source == "native":
        from_source["camera_fov"] = _camera_fov(arg("camera"))
    overrides = {name: _typed(name, kind, arg(name)) for name, kind in OVERRIDES.items() if arg(name)}
    budget = overrides.get("shutdown_timeout", _file_value(arg("params_file"), "shutdown_timeout",
                                                           DEFAULT_SHUTDOWN_TIMEOUT))
    emerdiff = LifecycleNode(
        package="emerdiff_ros",
        executable="emerdiff_node",
        name="emerdiff",
        namespace=arg("namespace"),
        output="screen",
        parameters=[arg("params_file"), from_source, {"use_sim_time": _true(arg("use_sim_time"))}, overrides],
        remappings=[
            ("image", f"{vehicle}{arg('camera')}/image"),
            ("camera_info", f"{vehicle}{arg('camera')}/camera_info"),
            ("lidar", f"{vehicle}{arg('lidar')}"),
            ("radar", f"{vehicle}{arg('radar')}"),
            ("ground_truth", f"{vehicle}{arg('ground_truth_camera')}/image"),
        ],
        # Ctrl-C reaches the node at once; it finishes the frame in progress within its budget.
        sigterm_timeout=str(float(budget) + SIGTERM_MARGIN_S),
    )
    return [emerdiff, *_rviz(_true(arg("rviz")), arg("namespace"), _true(arg("use_sim_time")))]


def _true(text: str) -> bool:
    return text.strip().lower() in ("true", "1", "yes", "on")


def _typed(name: str, kind: type, text: str):
    try:
        if kind is bool:
            if text.strip().lower() not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                raise ValueError
            return _true(text)
        return kind(text)
    except ValueError:
        raise ValueError(f"launch argument {name}:={text!r} is not a valid {kind.__name__}") from None


def _file_value(params_file: str, name: str, default):
    """A parameter's value in a params file (for any node name or /**), else default."""
    with open(params_file) as f:
        sections = yaml.safe_load(f) or {}
    for section in sections.values():
        value = (section or {}).get("ros__parameters", {}).get(name)
        if value is not None:
            return value
    return default


def _camera_fov(camera: str) -> float:
    """The camera's horizontal field of view in the rig definition (config/carla_sensors.json)."""
    from emerdiff_ros.carla.rigfile import default_rig_file, load_rig

    found = next((s for s in load_rig(default_rig_file()).sensors if s.id == camera), None)
    if found is None:
        raise ValueError(f"no camera {camera!r} in config/carla_sensors.json")
    return float(found.attributes.get("fov", 90.0))  # CARLA's default


def _rviz(wanted: bool, namespace: str, sim_time: bool) -> list:
    if not wanted:
        return []
    from ament_index_python.packages import PackageNotFoundError, get_package_prefix, get_package_share_directory

    try:
        get_package_prefix("rviz2")
    except PackageNotFoundError:
        return [LogInfo(msg="rviz2 is not installed: emerdiff runs without RViz (install ros-$ROS_DISTRO-rviz2 to "
                            "see its outputs, or pass rviz:=false)")]
    from emerdiff_ros.runtime.rviz import namespaced_rviz_config

    config = namespaced_rviz_config(get_package_share_directory("emerdiff_ros") + "/config/emerdiff.rviz", namespace)
    return [Node(package="rviz2", executable="rviz2", name="emerdiff_rviz", namespace=namespace,
                 arguments=["-d", config], parameters=[{"use_sim_time": sim_time}])]


def generate_launch_description():
    declared = [DeclareLaunchArgument(name, default_value=default, description=text)
                for name, (default, text) in ARGUMENTS.items()]
    declared += [DeclareLaunchArgument(name, default_value="", description=f"node parameter {name} (default: the "
                                       "params file's)") for name in OVERRIDES]
    return LaunchDescription(declared + [OpaqueFunction(function=_launch)])
