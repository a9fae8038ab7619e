"""The `emerdiff` lifecycle node: CARLA camera in; labels, overlay and stamp-matched clouds out.

configure loads the model, activate subscribes and starts the worker, deactivate finishes the
accepted frames and stops, cleanup frees the model (and the GPU memory). With `autostart` (the
default) the node goes to active by itself. Callbacks only check and store messages; one worker
thread owns the GPU and always takes the newest waiting frame, with the clouds that match it.
"""

from __future__ import annotations

import gc
import re
import time
import traceback

from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.duration import Duration
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Float32, Header

from ..engine import PRESETS, CheckpointError, ConfigError, EmerDiffConfig, load_segmenter
from ..engine.config import method_model
from ..engine.models import resolve_device
from ..runtime.gate import FrameWorker, LatestFrameGate
from ..runtime.livescore import LiveScore
from ..runtime.messages import (MessageError, camera_from_info, check_image, cloud_from_msg, frame_rgb, label_pixels,
                                stamp_ns)
from ..runtime.counters import Count
from ..runtime.outputs import CAMERA_INFO, CLOUD, IMAGE, INPUTS, NODE_NAME, OUTPUTS, SCORES, SENSORS, SensorCloud
from ..runtime.pipeline import FramePipeline
from ..runtime.settings import StreamSettings
from ..runtime.stamps import RateMeter
from ..runtime.step import FrameStep
from ..runtime.sync import Arrival, CloudSync, FrameCompanions
from ..runtime.throttle import KindThrottle
from ..scoring import ScoringError
from .codecs import to_layout_message
from .diagnostics import NodeHealth, diagnostics_message
from .params import changes_for, declare_settings

LOG_THROTTLE_S = 5.0
OUTPUT_DEPTH = 10
MAX_ACK_S = 5.0  # of the shutdown budget, at most this long for subscribers to acknowledge the last outputs
# A stamp further than this from the node's clock is on another clock (a replayed bag without
# use_sim_time, say): a latency computed from it would mean nothing.
MAX_MEANINGFUL_LATENCY_S = 3600.0
MESSAGE_CLASSES = {IMAGE: Image, CAMERA_INFO: CameraInfo, CLOUD: PointCloud2}
RELIABILITY = {"best_available": ReliabilityPolicy.BEST_AVAILABLE, "best_effort": ReliabilityPolicy.BEST_EFFORT,
               "reliable": ReliabilityPolicy.RELIABLE}
# A number in a warning (a size, a stamp, a count) does not make it another reason to warn about.
NUMBER = re.compile(r"\d+(\.\d+)?")


class EmerDiffNode(LifecycleNode):
    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        preset = self.declare_parameter(
            "preset", "paper", ParameterDescriptor(description=f"method preset: {', '.join(PRESETS)}", read_only=True)
        ).value
        self.config = declare_settings(self, EmerDiffConfig, EmerDiffConfig.from_preset(preset))
        self.settings = declare_settings(self, StreamSettings, StreamSettings())
        self.health = NodeHealth()
        self.input_rate, self.processed_rate = RateMeter(), RateMeter()
        self.gate: LatestFrameGate = LatestFrameGate(self.settings.max_rate_hz)
        self.sync: CloudSync[SensorCloud] = CloudSync(SENSORS, int(self.settings.cloud_buffer_seconds * 1e9))
        self.ground_truth: FrameCompanions[Image] = FrameCompanions(int(self.settings.sync_slop * 1e9))
        self.live: LiveScore | None = None
        self.camera = None  # the latest camera_info's model
        self.pipeline: FramePipeline | None = None
        self.worker: FrameWorker | None = None
        self.smoke_note: str | None = None
        self.device = self.config.device
        self._inputs: dict[str, object] = {}  # input name -> subscription
        self._resubscribe: set[str] = set()  # inputs whose publisher offered an incompatible QoS
        self._outputs: dict[str, object] = {}  # output name -> lifecycle publisher
        self._scores: dict[str, object] = {}  # live score name -> lifecycle publisher
        self._throttle = KindThrottle(LOG_THROTTLE_S)
        self._said: set[str] = set()  # kinds of warnings said once and then only counted
        self._stop_deadline: float | None = None  # when the accepted frames must be done, once stopping
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        # A steady timer: diagnostics keep coming while the simulation (and sim time) is paused.
        self.create_timer(self.settings.diagnostics_period, self._on_timer,
                          clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.add_on_set_parameters_callback(self._on_set_parameters)

    @property
    def lifecycle_state(self) -> str:
        return self._state_machine.current_state[1]

    # --- lifecycle ----------------------------------------------------------------------------

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            device = resolve_device(self.config.device)
            self.get_logger().info(f"loading model {method_model(self.config, self.settings.method)!r} on {device} "
                                   f"({self.settings.method}) ...")
            segmenter = load_segmenter(self.config, self.settings.method)
        except CheckpointError as exc:  # on one line, as every start-up error, in ROS's words
            self.get_logger().fatal(f"cannot load the model: {' '.join(exc.for_ros().split())}")
            return TransitionCallbackReturn.FAILURE
        except ConfigError as exc:  # a device or layer this machine or model does not have
            self.get_logger().fatal(f"cannot load the model: {exc}")
            return TransitionCallbackReturn.FAILURE
        self.smoke_note = segmenter.model.smoke_note
        if self.smoke_note:
            self.get_logger().warning(self.smoke_note)
        self.device = str(segmenter.model.device)
        self.pipeline = FramePipeline(segmenter, self.settings)
        self._outputs = {name: self.create_lifecycle_publisher(MESSAGE_CLASSES[kind], f"~/{name}", OUTPUT_DEPTH)
                         for name, kind in OUTPUTS.items()}
        scoring = self.settings.scoring_format()
        if scoring is not None:
            self.live = LiveScore(scoring, ids_consistent=self.settings.track_labels)
            self._scores = {name: self.create_lifecycle_publisher(Float32, f"~/{name}", OUTPUT_DEPTH)
                            for name in SCORES}
        model = method_model(self.config, self.settings.method)
        self.get_logger().info(f"configured: {self.settings.method}, model {model!r} on {self.device}, "
                               f"K={self.config.num_masks}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        # A new timeline: while inactive the drive went on, and clouds must not wait for a camera stamp of then.
        self.sync = CloudSync(SENSORS, int(self.settings.cloud_buffer_seconds * 1e9))
        for name in ("image", *SENSORS, *(("ground_truth",) if self.live else ())):
            self._subscribe(name)
        self._follow_camera_fov()
        self.gate.reopen()
        self._stop_deadline = None
        self.worker = FrameWorker(self.gate, self._process, self._on_error)
        self.worker.start()
        self.get_logger().info("active: segmenting " + self._inputs["image"].topic_name)
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        if not self._finish_accepted_frames():
            return TransitionCallbackReturn.FAILURE
        self.get_logger().info(f"inactive: {self.health.counts[Count.FRAMES_PROCESSED]} frames segmented so far; "
                               "the model stays loaded")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self.get_logger().info("unconfigured: the model is released")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        finished = self._finish_accepted_frames() if state.label == "active" else True
        if finished:
            self._release()
        return TransitionCallbackReturn.SUCCESS if finished else TransitionCallbackReturn.FAILURE

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._finish_accepted_frames()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def stop_taking_frames(self) -> None:
        """No new frames from now on; the clouds and ground truth of the accepted ones still come in."""
        if "image" in self._inputs:
            self.destroy_subscription(self._inputs.pop("image"))
        self.gate.close()
        self._stop_deadline = time.monotonic() + self.settings.shutdown_timeout

    @property
    def frames_in_flight(self) -> bool:
        return self.worker is not None and self.worker.alive

    def _finish_accepted_frames(self) -> bool:
        """Stop taking input, segment and publish what was accepted, within shutdown_timeout. True if done."""
        for name in list(self._inputs):
            self.destroy_subscription(self._inputs.pop(name))
        if self.worker is None:
            return True
        # One budget from the moment frames stopped being taken, however the wait is split.
        deadline = self._stop_deadline or time.monotonic() + self.settings.shutdown_timeout
        self.worker.stop(timeout=max(0.0, deadline - time.monotonic()))
        if self.worker.alive:
            self.get_logger().error(f"the frame in progress did not finish within shutdown_timeout "
                                    f"({self.settings.shutdown_timeout:g} s)")
            return False
        self.worker = None
        # The last outputs may still be on their way: let the (reliable) subscribers acknowledge them.
        for publisher in self._outputs.values():
            left = min(MAX_ACK_S, deadline - time.monotonic())
            if left <= 0:
                break
            publisher.wait_for_all_acked(Duration(seconds=left))
        return True

    def _release(self) -> None:
        """Drop the model and the output publishers; the GPU memory goes back to the device."""
        for publisher in (*self._outputs.values(), *self._scores.values()):
            self.destroy_lifecycle_publisher(publisher)
        self._outputs, self._scores, self.pipeline, self.camera, self.live = {}, {}, None, None, None
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass

    # --- inputs: check and store, never segment ---------------------------------------------

    def _subscribe(self, name: str) -> None:
        settings = self.settings
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=settings.qos_depth,
                         durability=DurabilityPolicy.VOLATILE, reliability=RELIABILITY[settings.qos_reliability])
        events = SubscriptionEventCallbacks(incompatible_qos=lambda info, name=name: self._on_incompatible_qos(name))
        if name == "image" and settings.image_transport == "compressed":
            # As image_transport: the compressed stream of the (remapped) image topic.
            kind, topic = CompressedImage, self.resolve_topic_name("image").rstrip("/") + "/compressed"
        else:
            kind, topic = MESSAGE_CLASSES[INPUTS[name]], name
        callback = {"image": self._on_image, "camera_info": self._on_camera_info,
                    "ground_truth": self._on_ground_truth}.get(name, lambda msg, name=name: self._on_cloud(name, msg))
        self._inputs[name] = self.create_subscription(kind, topic, callback, qos, event_callbacks=events)

    def _follow_camera_fov(self) -> None:
        """camera_info is subscribed to only while it is used: with camera_fov set, CARLA's own (wrong) one
        would be rejected and warned about for ever."""
        if self.settings.camera_fov and "camera_info" in self._inputs:
            self.destroy_subscription(self._inputs.pop("camera_info"))
        if self.settings.camera_fov:
            self._say_once("camera_fov", f"camera_fov is {self.settings.camera_fov:g} degrees: the intrinsics come "
                                         "from it and each frame's size; camera_info is not used", "info")
        elif "camera_info" not in self._inputs:
            self._subscribe("camera_info")

    def _on_incompatible_qos(self, name: str) -> None:
        topic = self._inputs[name].topic_name if name in self._inputs else name
        if self.settings.qos_reliability == "best_available":
            # best_available is settled when a subscription is made (reliable if no publisher is known yet):
            # made again, it follows the publishers there are now.
            self._resubscribe.add(name)
            self._warn("qos", f"a publisher on {topic} offers a QoS the subscription does not match; subscribing "
                              "again to follow it")
        else:
            self._warn("qos", f"a publisher on {topic} offers a QoS incompatible with qos_reliability: "
                              f"{self.settings.qos_reliability}; nothing arrives from it (use best_available)")

    def _on_image(self, msg) -> None:
        self.input_rate.tick()
        self.health.count(Count.FRAMES_RECEIVED)
        try:
            check_image(msg, self.settings.max_image_pixels)
        except MessageError as exc:
            self._skip(Count.BAD_IMAGES, "image", f"skipping image: {exc}")
            return
        stamp = stamp_ns(msg.header.stamp)
        arrival = self.sync.frame(stamp)
        if arrival is Arrival.TIME_JUMP:
            self._time_jump("camera", msg)
        elif arrival is Arrival.STALE:
            self.health.count(Count.STALE_STAMPS)  # segmented all the same: it is the newest frame there is
        self.ground_truth.frame(stamp)
        self.gate.offer(msg)

    def _on_ground_truth(self, msg: Image) -> None:
        self.health.count(Count.RECEIVED_GROUND_TRUTH)
        self.ground_truth.add(stamp_ns(msg.header.stamp), msg)  # decoded in the worker, for the frames it takes

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self.health.count(Count.RECEIVED_CAMERA_INFO)
        try:
            self.camera = camera_from_info(msg)
        except MessageError as exc:
            self._skip(Count.BAD_CAMERA_INFO, "camera_info", f"ignoring camera_info: {exc}")

    def _on_cloud(self, name: str, msg: PointCloud2) -> None:
        self.health.count(Count.of("received", name))
        try:
            cloud = cloud_from_msg(msg, self.settings.max_cloud_points)
        except MessageError as exc:
            self._skip(Count.BAD_CLOUDS, name, f"skipping {name} cloud: {exc}")
            return
        arrival = self.sync.add(name, stamp_ns(msg.header.stamp), SensorCloud(cloud, msg.header.frame_id,
                                                                             bool(msg.is_dense)))
        if arrival is Arrival.FUTURE:
            self._skip(Count.FUTURE_STAMPS, name, f"skipping {name} cloud stamped {_seconds(msg.header.stamp)}: more "
                                                  "than cloud_buffer_seconds ahead of every other stream")
        elif arrival is Arrival.OUTLIER:
            self._skip(Count.OUTLIER_STAMPS, name, f"holding back {name} cloud stamped {_seconds(msg.header.stamp)}: "
                                                   "more than cloud_buffer_seconds before the drive's time; it counts "
                                                   "only if the camera or more messages confirm that time went back")
        elif arrival is Arrival.UNSTAMPED:
            self._skip(Count.BAD_CLOUDS, name, f"skipping {name} cloud stamped 0: it cannot be matched to a frame")
        elif arrival is Arrival.STALE:
            self.health.count(Count.STALE_STAMPS)  # from before time went back: no frame will match it
        elif arrival is Arrival.TIME_JUMP:
            self._time_jump(name, msg)

    def _time_jump(self, stream: str, msg) -> None:
        self.health.count(Count.TIME_JUMPS)
        self.get_logger().warning(
            f"time went back to {_seconds(msg.header.stamp)} ({stream}): more than cloud_buffer_seconds "
            "before the newest stamp (a bag loop, a /clock jump or a simulator restart); matching starts afresh")

    def _skip(self, counter: Count, source: str, message: str) -> None:
        """Count a problem and warn about it, throttled per input and reason (numbers aside)."""
        self.health.count(counter)
        self._warn(f"{source}:{NUMBER.sub('#', message)}", message)

    def _warn(self, kind: str, message: str) -> None:
        text = self._throttle(kind, message)
        if text is not None:
            self.get_logger().warning(text)

    def _say_once(self, kind: str, message: str, level: str = "warning") -> None:
        """For a state that goes on (no ground truth published at all, say): news once, then only counted."""
        if kind not in self._said:
            self._said.add(kind)
            getattr(self.get_logger(), level)(message)

    # --- the worker -------------------------------------------------------------------------

    def _process(self, msg) -> None:
        waited, started = self.gate.last_wait, time.monotonic()
        header, settings, pipeline = msg.header, self.settings, self.pipeline
        stamp, slop = stamp_ns(header.stamp), int(settings.sync_slop * 1e9)
        # From now on the frame holds its clouds: those buffered and those of its tick still to come, however
        # long it takes to segment and however far the drive goes on meanwhile.
        self.sync.hold(stamp, slop)
        self.ground_truth.hold(stamp)
        try:
            rgb = frame_rgb(msg, settings.max_image_pixels)
            frame = pipeline.segment(rgb)
        except MessageError as exc:
            self._skip(Count.BAD_IMAGES, "image", f"skipping image: {exc}")
            return
        except CheckpointError as exc:  # a method switched to at run time whose weights are not here
            self.health.failed(f"method {settings.method}: {exc.reason}")
            self._warn(f"checkpoint:{settings.method}", f"method {settings.method} cannot run, frames are skipped "
                                                       f"until it can: {' '.join(exc.for_ros().split())}")
            return
        finally:
            clouds, ground_truth = self.sync.release(), self.ground_truth.release()
        wanted = {name for name, publisher in self._outputs.items() if publisher.get_subscription_count() > 0}
        result = FrameStep(settings)(rgb, frame.labels, clouds, self.camera, wanted)
        for output in result.outputs:
            out_header = header if output.frame_id is None else Header(stamp=header.stamp, frame_id=output.frame_id)
            self._outputs[output.name].publish(to_layout_message(OUTPUTS[output.name], output.layout, out_header))
        for counter, n in result.counts.items():
            self.health.count(counter, n)
        for problem in result.problems:
            self._warn(problem.kind, problem.message)
        if self.live is not None:
            self._score(frame.labels, ground_truth, header)
        self.smoke_note = frame.segmentation.smoke_note  # the method's model says whether it is a smoke run
        self.processed_rate.tick()
        self.health.frame_done(frame.segmentation.stats, self._latency(stamp), waited, time.monotonic() - started)

    def _score(self, labels, ground_truth: Image | None, header) -> None:
        if ground_truth is None:
            self.health.count(Count.FRAMES_WITHOUT_GROUND_TRUTH)
            self._say_once("no_ground_truth", f"no ground truth within sync_slop of frame {_seconds(header.stamp)}: "
                                              "it is not scored (frames_without_ground_truth counts the others; is "
                                              "the semantic camera publishing on `ground_truth`?)")
            return
        try:
            values = self.live.add(labels, label_pixels(ground_truth))
        except (MessageError, ScoringError) as exc:
            self._skip(Count.BAD_GROUND_TRUTH, "ground_truth", f"ground truth of frame {_seconds(header.stamp)} not "
                                                               f"scored: {exc}")
            return
        self.health.count(Count.SCORED_FRAMES)
        for name, value in values.items():
            self._scores[f"score/{name}"].publish(Float32(data=value))

    def _latency(self, stamp: int) -> float | None:
        """Seconds from the frame's stamp to now on the node's clock, or None when that means nothing."""
        if stamp == 0:
            return None
        latency = (self.get_clock().now().nanoseconds - stamp) / 1e9
        return latency if abs(latency) <= MAX_MEANINGFUL_LATENCY_S else None

    def _on_error(self, msg, exc: BaseException) -> None:
        self.health.failed(f"{type(exc).__name__}: {exc}")
        text = self._throttle("processing_error", f"frame {_seconds(msg.header.stamp)} failed: {exc}")
        if text is not None:
            self.get_logger().error(f"{text}\n{traceback.format_exc()}")

    # --- parameters and diagnostics ---------------------------------------------------------------

    def _on_set_parameters(self, params) -> SetParametersResult:
        try:
            config = self.config.replace(**changes_for(EmerDiffConfig, params))
            settings = self.settings.replace(**changes_for(StreamSettings, params))
            if self.pipeline is not None:  # checked against the loaded models first: nothing changes on failure
                self.pipeline.configure(config, settings)
        except ConfigError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        fov_changed = settings.camera_fov != self.settings.camera_fov
        self.config, self.settings = config, settings
        if fov_changed and self.lifecycle_state == "active":
            self._said.discard("camera_fov")
            self._follow_camera_fov()
        self.gate.set_max_rate(settings.max_rate_hz)
        self.sync.set_horizon(int(settings.cloud_buffer_seconds * 1e9))
        self.ground_truth.slop = int(settings.sync_slop * 1e9)
        return SetParametersResult(successful=True)

    def _on_timer(self) -> None:
        for name in list(self._resubscribe):
            self._resubscribe.discard(name)
            if name in self._inputs:
                self.destroy_subscription(self._inputs.pop(name))
                self._subscribe(name)
        self.diagnostics_pub.publish(diagnostics_message(
            self.health, self.get_clock().now().to_msg(), name=f"{NODE_NAME}: segmentation",
            hardware_id=self.device, state=self.lifecycle_state, method=self.settings.method,
            input_rate=self.input_rate.rate(),
            processed_rate=self.processed_rate.rate(), dropped=self.gate.replaced, smoke_note=self.smoke_note,
            live=self.live,
        ))


def _seconds(stamp) -> str:
    return f"{stamp_ns(stamp) / 1e9:.3f} s"
