"""emerdiff next to a running CARLA ROS 2 bridge:  ros2 launch emerdiff_ros carla.launch.py

Arguments: role_name, camera, lidar, radar (the bridge's sensor ids), params_file, use_sim_time,
rviz, namespace. Everything else is a node parameter (config/carla.yaml).
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

ARGUMENTS = {
    "role_name": ("ego_vehicle", "role name of the bridge's ego vehicle"),
    "camera": ("rgb_front", "id of the RGB camera in the bridge's objects file"),
    "lidar": ("lidar", "id of the LiDAR"),
    "radar": ("radar_front", "id of the radar"),
    "params_file": (PathJoinSubstitution([FindPackageShare("emerdiff_ros"), "config", "carla.yaml"]),
                    "node parameters"),
    "use_sim_time": ("true", "follow the bridge's /clock"),
    "rviz": ("true", "start RViz with config/emerdiff.rviz"),
    "namespace": ("", "namespace of the node"),
}


def generate_launch_description():
    arg = LaunchConfiguration
    vehicle = ["/carla/", arg("role_name"), "/"]
    sim_time = {"use_sim_time": ParameterValue(arg("use_sim_time"), value_type=bool)}
    emerdiff = Node(
        package="emerdiff_ros",
        executable="emerdiff_node",
        name="emerdiff",
        namespace=arg("namespace"),
        output="screen",
        parameters=[arg("params_file"), sim_time],
        remappings=[
            ("image", vehicle + [arg("camera"), "/image"]),
            ("camera_info", vehicle + [arg("camera"), "/camera_info"]),
            ("lidar", vehicle + [arg("lidar")]),
            ("radar", vehicle + [arg("radar")]),
        ],
    )
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        arguments=["-d", PathJoinSubstitution([FindPackageShare("emerdiff_ros"), "config", "emerdiff.rviz"])],
        parameters=[sim_time],
        condition=IfCondition(arg("rviz")),
    )
    declared = [DeclareLaunchArgument(name, default_value=default, description=text)
                for name, (default, text) in ARGUMENTS.items()]
    return LaunchDescription(declared + [emerdiff, rviz])
