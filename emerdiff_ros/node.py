"""`python -m emerdiff_ros.node` / `emerdiff_node`: run the ROS 2 node."""

import sys


def main(args=None) -> int:
    try:
        from .ros.main import main as run  # rclpy and torch load here: Ctrl-C meanwhile is a clean exit
    except KeyboardInterrupt:
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
