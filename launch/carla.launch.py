"""emerdiff next to CARLA's sensors:  ros2 launch emerdiff_ros carla.launch.py [model:=...] [source:=native]

source:=bridge (default) is the CARLA ROS 2 bridge (CARLA 0.9.13); source:=native is CARLA >= 0.9.15
publishing over ROS 2 itself (`emerdiff carla --ros2`). Both use the same topic names; they differ in
what the semantic camera sends (palette colours or raw tags) and in camera_info (CARLA's own is wrong,
so the intrinsics then come from the camera's field of view in the rig file). rig:=front (default) is the one
camera of config/carla_sensors.json; rig:=surround the four cameras of config/carla_surround.json, segmented
together.

The node is a lifecycle node that configures and activates itself (parameter `autostart`), so it comes
up the same under any launch_ros version. The parameter arguments override the params file when given
and leave its values alone otherwise. RViz starts only where rviz2 is installed, showing the topics of
the node's namespace. What is started (arguments, remappings, parameters) is worked out in
emerdiff_ros.ros.launch_plan, from the rig file and the node's parameter specs; this file only wires it.
"""

import signal

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, LogInfo, OpaqueFunction, RegisterEventHandler
from launch.event_handlers import OnShutdown
from launch.events.process import SignalProcess
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode, Node
from launch_ros.substitutions import FindPackageShare

from emerdiff_ros.ros import launch_plan

PARAMS_FILE = ("params_file", PathJoinSubstitution([FindPackageShare("emerdiff_ros"), "config", "carla.yaml"]),
               "node parameters")


def _launch(context):
    arguments = {name: LaunchConfiguration(name).perform(context)
                 for name in (*launch_plan.launch_arguments(), PARAMS_FILE[0])}
    overrides = launch_plan.typed_overrides(arguments)
    emerdiff = LifecycleNode(
        package="emerdiff_ros",
        executable="emerdiff_node",
        name="emerdiff",
        namespace=arguments["namespace"],
        output="screen",
        parameters=[arguments["params_file"], launch_plan.source_parameters(arguments),
                    launch_plan.rig_parameters(arguments),
                    {"use_sim_time": launch_plan.switch(arguments, "use_sim_time")}, overrides],
        remappings=launch_plan.remappings(arguments),
        # Ctrl-C reaches the node at once; it finishes the frame in progress within its budget.
        sigterm_timeout=str(launch_plan.sigterm_timeout(overrides, arguments["params_file"])),
    )
    processes = [emerdiff, *_rviz(arguments)]
    return [*processes, _forward_sigint(processes)]


def _forward_sigint(processes: list) -> RegisterEventHandler:
    """launch forwards SIGINT only when it thinks no terminal did (--noninteractive): a supervisor's
    `kill -INT <launch>` would otherwise leave the node segmenting until SIGTERM. A second SIGINT after
    the terminal's is harmless: the node is already finishing, and ignores it."""
    return RegisterEventHandler(OnShutdown(on_shutdown=[
        EmitEvent(event=SignalProcess(signal_number=signal.SIGINT, process_matcher=matches_action(process)))
        for process in processes if isinstance(process, Node)]))


def _rviz(arguments: dict) -> list:
    if not launch_plan.switch(arguments, "rviz"):
        return []
    from ament_index_python.packages import PackageNotFoundError, get_package_prefix, get_package_share_directory

    try:
        get_package_prefix("rviz2")
    except PackageNotFoundError:
        return [LogInfo(msg="rviz2 is not installed: emerdiff runs without RViz (install ros-$ROS_DISTRO-rviz2 to "
                            "see its outputs, or pass rviz:=false)")]
    from emerdiff_ros.runtime.rviz import namespaced_rviz_config

    namespace = arguments["namespace"]
    view = launch_plan.rig_choice(arguments).rviz_config
    config = namespaced_rviz_config(get_package_share_directory("emerdiff_ros") + "/config/" + view, namespace)
    return [Node(package="rviz2", executable="rviz2", name="emerdiff_rviz", namespace=namespace,
                 arguments=["-d", config],
                 parameters=[{"use_sim_time": launch_plan.switch(arguments, "use_sim_time")}])]


def generate_launch_description():
    declared = [DeclareLaunchArgument(name, default_value=default, description=text)
                for name, (default, text) in launch_plan.launch_arguments().items()]
    declared.append(DeclareLaunchArgument(PARAMS_FILE[0], default_value=PARAMS_FILE[1], description=PARAMS_FILE[2]))
    return LaunchDescription(declared + [OpaqueFunction(function=_launch)])
