"""`python -m emerdiff_ros.node` / `emerdiff_node`: run the ROS 2 node."""

import sys

from .ros.node import main

if __name__ == "__main__":
    sys.exit(main())
