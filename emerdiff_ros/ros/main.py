"""`emerdiff_node`: run the node until Ctrl-C (or SIGTERM), then finish what it accepted.

Every start-up failure is one line and a non-zero exit status: a missing checkpoint, an invalid
parameter, bad --ros-args. Ctrl-C at any moment, model loading included, exits 0 without a traceback.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

import rclpy
from rclpy.exceptions import NameValidationException, ParameterException
from rclpy.executors import SingleThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.signals import SignalHandlerOptions

from ..engine import ConfigError
from ..node import STOP_SIGNALS
from ..runtime.outputs import NODE_NAME
from ..scoring import ScoringError
from .node import EmerDiffNode

# A bad parameter value, name or type, or an unusable --ros-args: the user's to fix, told in one line.
START_ERRORS = (ConfigError, ScoringError, ParameterException, NameValidationException, _rclpy.RCLError)
ROS_ARGUMENTS = "-p name:=value, -r from:=to, --params-file FILE, --log-level LEVEL"


class RosLogHandler(logging.Handler):
    """Engine and runtime log records into the node's ROS log."""

    def __init__(self, logger):
        super().__init__()
        self.logger = logger

    def emit(self, record: logging.LogRecord) -> None:
        level = "error" if record.levelno >= logging.ERROR else "warning" if record.levelno >= logging.WARNING \
            else "info"
        getattr(self.logger, level)(f"{record.name}: {record.getMessage()}")


def _finish_with_their_clouds(node: EmerDiffNode, executor) -> None:
    """Take no new frames, but keep receiving while the accepted ones are segmented: the clouds and ground
    truth of their ticks may still be on their way. Bounded by shutdown_timeout."""
    if node.lifecycle_state != "active" or not rclpy.ok():
        return
    node.stop_taking_frames()
    deadline = time.monotonic() + node.settings.shutdown_timeout
    while node.frames_in_flight and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)


def main(args=None) -> int:
    try:
        return _run(args)
    except KeyboardInterrupt:  # Ctrl-C before the node was running: parameters, model loading
        rclpy.try_shutdown()
        return 0


def _run(args) -> int:
    log = rclpy.logging.get_logger(NODE_NAME)
    try:
        # Signals are handled here rather than by rclpy, so the frame in progress is finished and published
        # before the context shuts down: nothing the node accepted is lost on Ctrl-C.
        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
        handler = RosLogHandler(log)
        package_log = logging.getLogger("emerdiff_ros")
        package_log.addHandler(handler)
        package_log.setLevel(logging.INFO)
        package_log.propagate = False
        node = EmerDiffNode()
        log = handler.logger = node.get_logger()  # the node's name, with its namespace (car1.emerdiff)
    except START_ERRORS as exc:
        log.fatal(" ".join(str(exc).split()))
        rclpy.try_shutdown()
        return 1
    except _rclpy.UnknownROSArgsError as exc:  # raised by rclpy.init, before any context exists
        log.fatal(f"unknown ROS arguments {exc}: after --ros-args come {ROS_ARGUMENTS}")
        return 1
    if node.settings.autostart:
        for transition in (node.trigger_configure, node.trigger_activate):
            if transition() != TransitionCallbackReturn.SUCCESS:  # the node said why
                node.destroy_node()
                rclpy.try_shutdown()
                return 1
    stopping = threading.Event()
    for number in STOP_SIGNALS:
        signal.signal(number, lambda *_: stopping.set())
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        # `ros2 lifecycle set ... shutdown` finalizes the node: a finished node's process ends, too.
        while not stopping.is_set() and rclpy.ok() and node.lifecycle_state != "finalized":
            executor.spin_once(timeout_sec=0.1)
    finally:
        # Shutdown has begun: more signals are ignored (the wait is bounded by shutdown_timeout), also while
        # the interpreter exits, where a default handler would turn a second Ctrl-C into a kill.
        for number in STOP_SIGNALS:
            signal.signal(number, signal.SIG_IGN)
        _finish_with_their_clouds(node, executor)
        finished = node.lifecycle_state != "active" or node.trigger_shutdown() == TransitionCallbackReturn.SUCCESS
        counts = node.health.counts
        frames = "surround frames" if node.settings.cameras else "frames"  # images come in, surround frames out
        log.info(f"stopped: {counts['frames_received']} images received, {counts['frames_processed']} {frames} "
                 f"segmented, {node.gate.replaced} replaced by newer ones")
        if finished:
            node.destroy_node()
        rclpy.try_shutdown(uninstall_handlers=False)  # rclpy installed none; keep ours
    if not finished:
        log.error("exiting without the frame in progress (raise shutdown_timeout to let it finish)")
        os._exit(1)  # a thread left inside torch would abort the interpreter's exit
    return 0
