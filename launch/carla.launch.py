"""emerdiff next to CARLA's sensors:  ros2 launch emerdiff_ros carla.launch.py [model:=...] [rviz:=false]

The camera, LiDAR and radar topics follow the CARLA ROS 2 bridge's names, which CARLA >= 0.9.15's own
ROS 2 publishing (`emerdiff carla --ros2`) uses too. The node is a lifecycle node that configures and
activates itself (parameter `autostart`), so it comes up the same under any launch_ros version.
Launch arguments given on the command line override the params file; the others keep its values.
RViz starts only where rviz2 is installed, showing the topics of the node's namespace.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode, Node
from launch_ros.substitutions import FindPackageShare

ARGUMENTS = {
    "role_name": ("ego_vehicle", "role name of CARLA's ego vehicle"),
    "camera": ("rgb_front", "id (role name) of the RGB camera"),
    "lidar": ("lidar", "id of the LiDAR"),
    "radar": ("radar_front", "id of the radar"),
    "params_file": (PathJoinSubstitution([FindPackageShare("emerdiff_ros"), "config", "carla.yaml"]),
                    "node parameters"),
    "use_sim_time": ("true", "follow CARLA's /clock"),
    "rviz": ("true", "start RViz with config/emerdiff.rviz, where rviz2 is installed"),
    "namespace": ("", "namespace of the node (and of the topics RViz shows)"),
    "shutdown_timeout": ("30.0", "seconds the node may take on Ctrl-C to finish its accepted frames; launch "
                                 "escalates to SIGTERM only after that"),
}
# Node parameters users change most, typed as the node declares them; empty = the params file's value.
OVERRIDES = {"model": str, "device": str, "preset": str, "num_masks": int, "max_rate_hz": float,
             "image_transport": str, "qos_reliability": str}
SIGTERM_MARGIN_S = 5.0  # after the node's own budget, before launch sends SIGTERM


def _launch(context):
    def arg(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    vehicle = f"/carla/{arg('role_name')}/"
    budget = float(arg("shutdown_timeout"))
    overrides = {name: kind(arg(name)) for name, kind in OVERRIDES.items() if arg(name)}
    emerdiff = LifecycleNode(
        package="emerdiff_ros",
        executable="emerdiff_node",
        name="emerdiff",
        namespace=arg("namespace"),
        output="screen",
        parameters=[arg("params_file"), {"use_sim_time": arg("use_sim_time").lower() == "true",
                                         "shutdown_timeout": budget, "autostart": True}, overrides],
        remappings=[
            ("image", f"{vehicle}{arg('camera')}/image"),
            ("camera_info", f"{vehicle}{arg('camera')}/camera_info"),
            ("lidar", f"{vehicle}{arg('lidar')}"),
            ("radar", f"{vehicle}{arg('radar')}"),
        ],
        # Ctrl-C reaches the node at once; it finishes the frame in progress within its budget.
        sigterm_timeout=str(budget + SIGTERM_MARGIN_S),
    )
    return [emerdiff, *_rviz(arg("rviz").lower() == "true", arg("namespace"), arg("use_sim_time").lower() == "true")]


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
    return [Node(package="rviz2", executable="rviz2", name="emerdiff_rviz", arguments=["-d", config],
                 parameters=[{"use_sim_time": sim_time}])]


def generate_launch_description():
    declared = [DeclareLaunchArgument(name, default_value=default, description=text)
                for name, (default, text) in ARGUMENTS.items()]
    declared += [DeclareLaunchArgument(name, default_value="", description=f"node parameter {name} (default: the "
                                       "params file's)") for name in OVERRIDES]
    return LaunchDescription(declared + [OpaqueFunction(function=_launch)])
