"""ROS-free streaming parts shared by the node and the offline tools."""
