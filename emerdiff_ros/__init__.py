"""emerdiff_ros: label-free semantic segmentation (EmerDiff) for ROS 2 driving stacks."""

__version__ = "0.1.0"
