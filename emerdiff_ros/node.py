"""`python -m emerdiff_ros.node` / `emerdiff_node`: run the ROS 2 node."""

import signal
import sys

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _stop_starting(signum, frame) -> None:
    """The first Ctrl-C or SIGTERM while the node starts ends the start, cleanly. Further ones are ignored
    from then on: a terminal and `ros2 launch` often both send one, and a second KeyboardInterrupt during the
    clean-up (or in torch's exit handlers) would turn a clean exit into a traceback or a kill."""
    for number in STOP_SIGNALS:
        signal.signal(number, signal.SIG_IGN)
    raise KeyboardInterrupt


def main(args=None) -> int:
    for number in STOP_SIGNALS:
        signal.signal(number, _stop_starting)
    try:
        from .ros.main import main as run  # rclpy and torch load here: Ctrl-C meanwhile is a clean exit
    except KeyboardInterrupt:
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
