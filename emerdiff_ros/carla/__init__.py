"""A CARLA rig without the ROS bridge: spawn config/carla_sensors.json, drive, publish or record.

`carla_rig` (also `emerdiff carla`) connects with the `carla` Python client, runs the world in
synchronous mode, spawns the ego vehicle and the sensors of the bridge's objects file, and either
turns on CARLA's native ROS 2 publishing (servers >= 0.9.15 started with --ros2) or records the
messages the bridge would publish straight into a rosbag2. The `carla` module is imported only
when the rig runs, so nothing else in emerdiff_ros needs it installed.
"""
