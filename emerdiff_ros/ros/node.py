"""The `emerdiff` node: CARLA camera in; labels, overlay and stamp-matched clouds out.

Callbacks only check and store messages. One worker thread owns the GPU and always takes the
newest waiting frame; every output carries the header of the frame it was computed from.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import traceback

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.duration import Duration
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header

from ..engine import PRESETS, EmerDiffConfig, Segmenter
from ..runtime.gate import FrameWorker, LatestFrameGate
from ..runtime.pipeline import SENSORS, FramePipeline
from ..runtime.settings import StreamSettings
from ..runtime.stamps import RateMeter, StampBuffer
from ..runtime.messages import MessageError, camera_from_info, check_image, cloud_from_msg, image_to_rgb, stamp_ns
from .codecs import to_cloud, to_image
from .diagnostics import NodeHealth, diagnostics_message
from .params import changes_for, declare_settings

CLOUD_CAPACITY = 200  # per sensor, on top of the time horizon
LOG_THROTTLE_S = 5.0
SHUTDOWN_ACK_S = 5.0  # in all, for every subscriber to acknowledge the last outputs


class EmerDiffNode(Node):
    def __init__(self, **kwargs):
        super().__init__("emerdiff", **kwargs)
        preset = self.declare_parameter(
            "preset", "paper", ParameterDescriptor(description=f"method preset: {', '.join(PRESETS)}", read_only=True)
        ).value
        self.config = declare_settings(self, EmerDiffConfig, EmerDiffConfig.from_preset(preset))
        self.settings = declare_settings(self, StreamSettings, StreamSettings())
        self.get_logger().info(f"loading model {self.config.model!r} on {self.config.device} ...")
        segmenter = Segmenter.load(self.config)
        self.smoke_note = segmenter.model.smoke_note
        if self.smoke_note:
            self.get_logger().warning(self.smoke_note)
        self.device = str(segmenter.model.device)
        self.pipeline = FramePipeline(segmenter, self.settings)

        self.health = NodeHealth()
        self.input_rate, self.processed_rate = RateMeter(), RateMeter()
        self.gate: LatestFrameGate[Image] = LatestFrameGate(self.settings.max_rate_hz)
        horizon = int(self.settings.cloud_buffer_seconds * 1e9)
        self.clouds = {name: StampBuffer(CLOUD_CAPACITY, horizon) for name in SENSORS}
        self.camera = None

        qos = QoSProfile(
            history=HistoryPolicy.KEEP_LAST, depth=self.settings.qos_depth, durability=DurabilityPolicy.VOLATILE,
            reliability=ReliabilityPolicy.BEST_EFFORT if self.settings.qos_reliability == "best_effort"
            else ReliabilityPolicy.RELIABLE,
        )
        self.create_subscription(Image, "image", self._on_image, qos)
        self.create_subscription(CameraInfo, "camera_info", self._on_camera_info, qos)
        for name in SENSORS:
            self.create_subscription(PointCloud2, name, lambda msg, name=name: self._on_cloud(name, msg), qos)
        self.labels_pub = self.create_publisher(Image, "~/labels", 10)
        self.overlay_pub = self.create_publisher(Image, "~/overlay", 10)
        self.points_pub = {name: self.create_publisher(PointCloud2, f"~/{name}/points", 10) for name in SENSORS}
        self.labeled_pub = {name: self.create_publisher(PointCloud2, f"~/{name}/labeled", 10) for name in SENSORS}
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        # A steady timer: diagnostics keep coming while the simulation (and sim time) is paused.
        self.create_timer(self.settings.diagnostics_period, self._publish_diagnostics,
                          clock=Clock(clock_type=ClockType.STEADY_TIME))

        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.worker = FrameWorker(self.gate, self._process, self._on_error)
        self.worker.start()
        self.get_logger().info(f"ready: model {self.config.model!r} on {self.device}, K={self.config.num_masks}")

    def destroy_node(self):
        self.worker.stop()
        # The last outputs may still be on their way: let the (reliable) subscribers acknowledge them.
        deadline = time.monotonic() + SHUTDOWN_ACK_S
        for publisher in (self.labels_pub, self.overlay_pub, *self.points_pub.values(), *self.labeled_pub.values()):
            publisher.wait_for_all_acked(Duration(seconds=max(0.0, deadline - time.monotonic())))
        return super().destroy_node()

    # --- callbacks: check and store, never segment ----------------------------------------------

    def _on_image(self, msg: Image) -> None:
        self.input_rate.tick()
        self.health.count("frames_received")
        try:
            check_image(msg)
        except MessageError as exc:
            self._skip("bad_images", f"skipping image: {exc}")
            return
        self.gate.offer(msg)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        try:
            self.camera = camera_from_info(msg)
        except MessageError as exc:
            self._skip("bad_camera_info", f"ignoring camera_info: {exc}")

    def _on_cloud(self, name: str, msg: PointCloud2) -> None:
        try:
            cloud = cloud_from_msg(msg)
        except MessageError as exc:
            self._skip("bad_clouds", f"skipping {name} cloud: {exc}")
            return
        self.clouds[name].add(stamp_ns(msg.header.stamp), (msg, cloud))

    def _skip(self, counter: str, message: str) -> None:
        self.health.count(counter)
        self.get_logger().warning(message, throttle_duration_sec=LOG_THROTTLE_S)

    # --- the worker -------------------------------------------------------------------------

    def _process(self, msg: Image) -> None:
        waited, started = self.gate.last_wait, time.monotonic()
        frame = self.pipeline.segment(image_to_rgb(msg))
        header = msg.header
        self.labels_pub.publish(to_image(frame.labels, header))
        self.overlay_pub.publish(to_image(frame.overlay, header))
        latency = (self.get_clock().now().nanoseconds - stamp_ns(header.stamp)) / 1e9

        stamp, slop = stamp_ns(header.stamp), int(self.settings.sync_slop * 1e9)
        matched = {}
        for name in SENSORS:
            found = self.clouds[name].nearest(stamp, slop)
            if found is None:
                self.health.count(f"unmatched_{name}")
                continue
            cloud_msg, cloud = found[1]
            # The points stay in their sensor's frame; the stamp becomes the frame's.
            out_header = Header(stamp=header.stamp, frame_id=cloud_msg.header.frame_id)
            self.points_pub[name].publish(_restamped(cloud_msg, out_header))
            matched[name] = (out_header, cloud)
        camera = self.camera
        if matched and camera is None:
            self.health.count("clouds_without_camera_info", len(matched))
            self.get_logger().warning("no camera_info yet: clouds are not labelled",
                                      throttle_duration_sec=LOG_THROTTLE_S)
        elif matched:
            labeled = self.pipeline.label_clouds(frame.labels, {n: c for n, (_, c) in matched.items()}, camera)
            for name, cloud in labeled.clouds.items():
                self.labeled_pub[name].publish(to_cloud(cloud, matched[name][0]))
                self.health.count(f"nan_points_{name}", labeled.nan_points[name])
        self.processed_rate.tick()
        self.health.frame_done(frame.segmentation.stats, latency, waited, time.monotonic() - started)

    def _on_error(self, msg: Image, exc: BaseException) -> None:
        self.health.failed(f"{type(exc).__name__}: {exc}")
        self.get_logger().error(f"frame {stamp_ns(msg.header.stamp)} failed: {exc}\n{traceback.format_exc()}",
                                throttle_duration_sec=LOG_THROTTLE_S)

    # --- parameters and diagnostics ---------------------------------------------------------------

    def _on_set_parameters(self, params) -> SetParametersResult:
        try:
            config = self.config.replace(**changes_for(EmerDiffConfig, params))
            settings = self.settings.replace(**changes_for(StreamSettings, params))
            segmenter = self.pipeline.segmenter
            if config != self.config:  # model, device and dtype are read-only: the same model serves
                segmenter = Segmenter(segmenter.model, config)
        except ValueError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        self.config, self.settings = config, settings
        self.pipeline.configure(segmenter, settings)
        self.gate.set_max_rate(settings.max_rate_hz)
        for buffer in self.clouds.values():
            buffer.horizon_ns = int(settings.cloud_buffer_seconds * 1e9)
        return SetParametersResult(successful=True)

    def _publish_diagnostics(self) -> None:
        self.diagnostics_pub.publish(diagnostics_message(
            self.health, self.get_clock().now().to_msg(), name="emerdiff: segmentation",
            hardware_id=self.device, input_rate=self.input_rate.rate(), processed_rate=self.processed_rate.rate(),
            dropped=self.gate.replaced, smoke_note=self.smoke_note,
        ))


def _restamped(msg: PointCloud2, header: Header) -> PointCloud2:
    return PointCloud2(header=header, height=msg.height, width=msg.width, fields=msg.fields,
                       is_bigendian=msg.is_bigendian, point_step=msg.point_step, row_step=msg.row_step,
                       data=msg.data, is_dense=msg.is_dense)


class RosLogHandler(logging.Handler):
    """Engine and runtime log records into the node's ROS log."""

    def __init__(self, logger):
        super().__init__()
        self._logger = logger

    def emit(self, record: logging.LogRecord) -> None:
        level = "error" if record.levelno >= logging.ERROR else "warning" if record.levelno >= logging.WARNING \
            else "info"
        getattr(self._logger, level)(f"{record.name}: {record.getMessage()}")


def main(args=None) -> int:
    # Signals are handled here rather than by rclpy, so the frame in progress is finished and published
    # before the context shuts down: nothing the node accepted is lost on Ctrl-C.
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    package_log = logging.getLogger("emerdiff_ros")
    package_log.addHandler(RosLogHandler(rclpy.logging.get_logger("emerdiff")))
    package_log.setLevel(logging.INFO)
    package_log.propagate = False
    try:
        node = EmerDiffNode()
    except KeyboardInterrupt:  # Ctrl-C while the model loads
        rclpy.try_shutdown()
        return 0
    except Exception as exc:  # a missing checkpoint or an invalid parameter: say why and stop
        rclpy.logging.get_logger("emerdiff").fatal(str(exc))
        rclpy.try_shutdown()
        return 1
    stopping = threading.Event()
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda *_: stopping.set())
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        while not stopping.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
    finally:
        # Shutdown has begun: more Ctrl-Cs are ignored (the wait below is bounded), also while the
        # interpreter exits, where a default handler would turn a second Ctrl-C into a kill.
        for number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(number, signal.SIG_IGN)
        node.destroy_node()  # finishes the frame in progress and the one waiting, up to the worker's timeout
        counts = node.health.counts
        node.get_logger().info(f"stopped: {counts['frames_received']} frames received, "
                               f"{counts['frames_processed']} segmented, {node.gate.replaced} replaced by newer ones")
        rclpy.try_shutdown(uninstall_handlers=False)  # rclpy installed none; keep ours
    if node.worker.alive:
        rclpy.logging.get_logger("emerdiff").error("the worker did not finish its frame in time; exiting")
        os._exit(1)  # a thread left inside torch would abort the interpreter's exit
    return 0
