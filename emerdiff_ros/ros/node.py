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
from dataclasses import replace
from functools import partial

from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.duration import Duration
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Float32, Header

from ..engine import PRESETS, CheckpointError, ConfigError, EmerDiffConfig
from ..engine.config import method_model
from ..engine.models import resolve_device
from ..runtime.gate import FrameWorker, LatestFrameGate
from ..runtime.livescore import LiveScore
from ..runtime.messages import (MessageError, camera_from_info, check_image, cloud_from_msg, frame_rgb, label_pixels,
                                stamp_ns)
from ..rig import RigError
from ..runtime.cdr import image_header
from ..runtime.counters import CameraCount, Count
from ..runtime.outputs import (CAMERA_INFO, CLOUD, IMAGE, INPUTS, NODE_NAME, SCORES, SENSORS, SensorCloud,
                               camera_topic, output_table, whose)
from ..runtime.pipeline import FramePipeline, load_on_devices
from ..runtime.projection import CameraModel
from ..runtime.rigging import SINGLE, surround_rig
from ..runtime.settings import StreamSettings
from ..runtime.stamps import RateMeter
from ..runtime.step import FrameStep
from ..runtime.surround import Gathered, SurroundFrame, SurroundGatherer
from ..runtime.sync import Arrival, CloudSync, FrameCompanions
from ..runtime.throttle import KindThrottle
from ..scoring import ScoringError
from .codecs import to_layout_message
from .diagnostics import NodeHealth, diagnostics_message
from .params import changes_for, declare_settings

LOG_THROTTLE_S = 5.0
POLL_S = 0.02  # surround: how often a surround frame still gathering is checked against surround_timeout
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
        self.cameras = self.settings.cameras or (SINGLE,)  # the single camera is named "" (topics image, ...)
        self.ground_truth: dict[str, FrameCompanions[Image]] = {
            camera: FrameCompanions(int(self.settings.sync_slop * 1e9)) for camera in self.cameras}
        self.gatherer: SurroundGatherer | None = None  # surround: the cameras' frames of one stamp, gathered
        self.rig = None  # surround: the rig file the poses come from
        self.live: dict[str, LiveScore] = {}  # camera -> its live score (with ground_truth_format)
        self.camera_infos: dict[str, CameraModel] = {}  # camera -> the latest camera_info's model
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
        self._poll_timer = None  # surround: sends a surround frame whose cameras are late
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
            self.rig = surround_rig(self.settings)
        except RigError as exc:
            self.get_logger().fatal(f"cannot start surround perception: {exc}")
            return TransitionCallbackReturn.FAILURE
        if self.settings.cameras and self.settings.camera_fov:
            self.get_logger().warning("camera_fov is for one camera and is not used in surround perception: set "
                                      "fov_from_rig to take each camera's fov from rig_file")
        devices = self.settings.devices
        if len(devices) > 1 and not self.settings.cameras:
            self.get_logger().warning(f"devices lists {len(devices)} devices but one camera has use for one: the "
                                      f"model loads on {devices[0]} only (set cameras for surround perception)")
            devices = devices[:1]
        try:
            named = ", ".join(str(resolve_device(d)) for d in devices or (self.config.device,))
            self.get_logger().info(f"loading model {method_model(self.config, self.settings.method)!r} on {named} "
                                   f"({self.settings.method}) ...")
            segmenters = load_on_devices(self.config, self.settings.method, devices)
        except CheckpointError as exc:  # on one line, as every start-up error, in ROS's words
            self.get_logger().fatal(f"cannot load the model: {' '.join(exc.for_ros().split())}")
            return TransitionCallbackReturn.FAILURE
        except ConfigError as exc:  # a device or layer this machine or model does not have
            self.get_logger().fatal(f"cannot load the model: {exc}")
            return TransitionCallbackReturn.FAILURE
        self.smoke_note = segmenters[0].model.smoke_note
        if self.smoke_note:
            self.get_logger().warning(self.smoke_note)
        self.pipeline = FramePipeline(segmenters, self.config, self.settings)
        self.device = ", ".join(self.pipeline.devices)
        self._outputs = {name: self.create_lifecycle_publisher(MESSAGE_CLASSES[kind], f"~/{name}", OUTPUT_DEPTH)
                         for name, kind in output_table(self.settings.cameras).items()}
        scoring = self.settings.scoring_format()
        if scoring is not None:
            self.live = {camera: LiveScore(scoring, ids_consistent=self.settings.track_labels)
                         for camera in self.cameras}
            self._scores = {camera_topic(camera, name): self.create_lifecycle_publisher(
                Float32, f"~/{camera_topic(camera, name)}", OUTPUT_DEPTH) for camera in self.cameras for name in SCORES}
        model = method_model(self.config, self.settings.method)
        surround = f", surround of {', '.join(self.settings.cameras)}" if self.settings.cameras else ""
        self.get_logger().info(f"configured: {self.settings.method}, model {model!r} on {self.device}, "
                               f"K={self.config.num_masks}{surround}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        # A new timeline: while inactive the drive went on, and clouds must not wait for a camera stamp of then.
        settings = self.settings
        self.sync = CloudSync(SENSORS, int(settings.cloud_buffer_seconds * 1e9))
        for camera in self.cameras:
            self._subscribe(camera_topic(camera, "image"))
            if self.live:
                self._subscribe(camera_topic(camera, "ground_truth"))
        for sensor in SENSORS:
            self._subscribe(sensor)
        self._follow_camera_fov()
        if settings.cameras:
            self.gatherer = SurroundGatherer(settings.cameras, int(settings.sync_slop * 1e9), settings.surround_timeout)
            self._poll_timer = self.create_timer(POLL_S, self._poll_surround,
                                                 clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.gate.reopen()
        self._stop_deadline = None
        self.worker = FrameWorker(self.gate, self._process, self._on_error)
        self.worker.start()
        topics = [self._inputs[camera_topic(camera, "image")].topic_name for camera in self.cameras]
        self.get_logger().info("active: segmenting " + ", ".join(topics))
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
        for camera in self.cameras:
            if camera_topic(camera, "image") in self._inputs:
                self.destroy_subscription(self._inputs.pop(camera_topic(camera, "image")))
        self._stop_polling()
        self.gate.close()
        self._stop_deadline = time.monotonic() + self.settings.shutdown_timeout

    @property
    def frames_in_flight(self) -> bool:
        return self.worker is not None and self.worker.alive

    def _finish_accepted_frames(self) -> bool:
        """Stop taking input, segment and publish what was accepted, within shutdown_timeout. True if done."""
        for name in list(self._inputs):
            self.destroy_subscription(self._inputs.pop(name))
        self._stop_polling()
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

    def _stop_polling(self) -> None:
        """Surround: no more gathering; the newest surround frame still gathering is segmented as it is."""
        if self._poll_timer is not None:
            self.destroy_timer(self._poll_timer)
            self._poll_timer = None
        if self.gatherer is not None and not self.gate.closed:
            flushed = self.gatherer.flush()
            if flushed.ready is not None and self.gate.waiting:  # the frame accepted before it is kept
                flushed.dropped.update(flushed.ready.frames.keys())
                flushed.ready = None
            self._gathered(flushed)

    def _release(self) -> None:
        """Drop the model and the output publishers; the GPU memory goes back to the device."""
        for publisher in (*self._outputs.values(), *self._scores.values()):
            self.destroy_lifecycle_publisher(publisher)
        if self.pipeline is not None:
            self.pipeline.close()
        self._outputs, self._scores, self.pipeline, self.camera_infos, self.live = {}, {}, None, {}, {}
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
        camera, _, kind_of_input = name.rpartition("/")  # <camera>/image, or image for the single camera
        if kind_of_input == "image" and settings.image_transport == "compressed":
            # As image_transport: the compressed stream of the (remapped) image topic.
            kind, topic = CompressedImage, self.resolve_topic_name(name).rstrip("/") + "/compressed"
        else:
            kind, topic = MESSAGE_CLASSES[INPUTS[kind_of_input]], name
        on_camera = {"image": self._on_image, "camera_info": self._on_camera_info,
                     "ground_truth": self._on_ground_truth}.get(kind_of_input)
        callback = (partial(on_camera, camera) if on_camera is not None
                    else lambda msg, name=name: self._on_cloud(name, msg))
        # Raw images come serialized: their size is checked from the header before the pixels are copied.
        raw = kind is Image and kind_of_input == "image"
        self._inputs[name] = self.create_subscription(kind, topic, callback, qos, event_callbacks=events, raw=raw)

    def _follow_camera_fov(self) -> None:
        """camera_info is subscribed to only while it is used: with camera_fov (fov_from_rig in surround) set,
        CARLA's own (wrong) one would be rejected and warned about for ever."""
        settings = self.settings
        from_fov = settings.fov_from_rig if settings.cameras else bool(settings.camera_fov)
        for camera in self.cameras:
            name = camera_topic(camera, "camera_info")
            if from_fov and name in self._inputs:
                self.destroy_subscription(self._inputs.pop(name))
            elif not from_fov and name not in self._inputs:
                self._subscribe(name)
        if from_fov and settings.cameras:
            self._say_once("camera_fov", "fov_from_rig: each camera's intrinsics come from its fov in the rig file "
                                         "and its frames' size; camera_info is not used", "info")
        elif from_fov:
            self._say_once("camera_fov", f"camera_fov is {settings.camera_fov:g} degrees: the intrinsics come "
                                         "from it and each frame's size; camera_info is not used", "info")

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

    def _on_image(self, camera: str, msg) -> None:
        """msg: a raw Image's serialized bytes (checked from its header: an oversized frame is never
        deserialized), or a CompressedImage."""
        self.input_rate.tick()
        self.health.count(Count.FRAMES_RECEIVED)
        if camera:
            self.health.count_camera(camera, CameraCount.RECEIVED)
        try:
            if isinstance(msg, bytes):
                header = image_header(msg)
                header.check(self.settings.max_image_pixels)
                stamp = header.stamp_ns
            else:
                check_image(msg, self.settings.max_image_pixels)
                stamp = stamp_ns(msg.header.stamp)
        except MessageError as exc:
            self._skip(Count.BAD_IMAGES, camera_topic(camera, "image"), f"skipping {whose(camera)}image: {exc}")
            return
        arrival = self.sync.frame(stamp)
        if arrival is Arrival.TIME_JUMP:
            self._time_jump(camera or "camera", stamp)
        elif arrival is Arrival.STALE:
            self.health.count(Count.STALE_STAMPS)  # segmented all the same: it is the newest frame there is
        self.ground_truth[camera].frame(stamp)
        if self.gatherer is None:
            self._offer(SurroundFrame(stamp, {SINGLE: msg}))
        else:
            self._gathered(self.gatherer.add(camera, stamp, msg), camera)

    def _poll_surround(self) -> None:
        if self.gatherer is not None:
            self._gathered(self.gatherer.poll())

    def _gathered(self, gathered: Gathered, camera: str = "") -> None:
        for dropped, n in gathered.dropped.items():
            self.health.count_camera(dropped, CameraCount.DROPPED, n)
        if gathered.returned:
            self.get_logger().info(f"camera {camera} sends again: surround frames wait for it from now on")
        if gathered.late:
            self.health.count_camera(camera, CameraCount.LATE)
            why = ("it was silent, and its surround frame did not wait for it" if gathered.returned
                   else "it came more than surround_timeout after the first camera's")
            self._warn(f"late:{camera}", f"dropping a {camera} frame: its surround frame went out without it ({why})")
        for silent in gathered.silenced:
            self._say_once(f"silent:{silent}", f"camera {silent} sent no frame within surround_timeout "
                                               f"({self.settings.surround_timeout:g} s): the other cameras are "
                                               f"segmented without it until it sends again ({silent}/frames_timed_out "
                                               "counts those frames)")
        if gathered.ready is not None:
            self._offer(gathered.ready)

    def _offer(self, frame: SurroundFrame) -> None:
        replaced = self.gate.offer(frame)
        if replaced is not None and self.gatherer is not None:
            for camera in replaced.frames:
                self.health.count_camera(camera, CameraCount.DROPPED)

    def _on_ground_truth(self, camera: str, msg: Image) -> None:
        self.health.count(Count.RECEIVED_GROUND_TRUTH)
        # decoded in the worker, for the frames it takes
        self.ground_truth[camera].add(stamp_ns(msg.header.stamp), msg)

    def _on_camera_info(self, camera: str, msg: CameraInfo) -> None:
        self.health.count(Count.RECEIVED_CAMERA_INFO)
        try:
            self.camera_infos[camera] = camera_from_info(msg)
        except MessageError as exc:
            self._skip(Count.BAD_CAMERA_INFO, camera_topic(camera, "camera_info"),
                       f"ignoring {whose(camera)}camera_info: {exc}")

    def _on_cloud(self, name: str, msg: PointCloud2) -> None:
        self.health.count(Count.of("received", name))
        try:
            cloud = cloud_from_msg(msg, self.settings.max_cloud_points)
        except MessageError as exc:
            self._skip(Count.BAD_CLOUDS, name, f"skipping {name} cloud: {exc}")
            return
        stamp = stamp_ns(msg.header.stamp)
        arrival = self.sync.add(name, stamp, SensorCloud(cloud, msg.header.frame_id, bool(msg.is_dense)))
        if arrival is Arrival.FUTURE:
            self._skip(Count.FUTURE_STAMPS, name, f"holding back {name} cloud stamped {_seconds(stamp)}: "
                                                  "more than cloud_buffer_seconds ahead of every other stream; it "
                                                  "counts once the camera or more messages confirm that time")
        elif arrival is Arrival.OUTLIER:
            self._skip(Count.OUTLIER_STAMPS, name, f"holding back {name} cloud stamped {_seconds(stamp)}: "
                                                   "more than cloud_buffer_seconds before the drive's time; it counts "
                                                   "only if the camera or more messages confirm that time went back")
        elif arrival is Arrival.UNSTAMPED:
            self._skip(Count.BAD_CLOUDS, name, f"skipping {name} cloud stamped 0: it cannot be matched to a frame")
        elif arrival is Arrival.STALE:
            self.health.count(Count.STALE_STAMPS)  # from before time went back: no frame will match it
        elif arrival is Arrival.TIME_JUMP:
            self._time_jump(name, stamp)

    def _time_jump(self, stream: str, stamp: int) -> None:
        self.health.count(Count.TIME_JUMPS)
        self.get_logger().warning(
            f"time went back to {_seconds(stamp)} ({stream}): more than cloud_buffer_seconds "
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
        if kind in self._said:
            return
        self._said.add(kind)
        # One call site per severity: rclpy refuses a call site whose severity changes between calls.
        if level == "info":
            self.get_logger().info(message)
        else:
            self.get_logger().warning(message)

    # --- the worker -------------------------------------------------------------------------

    def _process(self, frame: SurroundFrame) -> None:
        waited, started = self.gate.last_wait, time.monotonic()
        settings, pipeline = self.settings, self.pipeline
        frame = replace(frame, frames={camera: _deserialized(msg) for camera, msg in frame.frames.items()})
        # From now on the frame holds its clouds: those buffered and those of its tick still to come, however
        # long it takes to segment and however far the drive goes on meanwhile.
        self.sync.hold(frame.stamp, int(settings.sync_slop * 1e9))
        for camera, msg in frame.frames.items():
            self.ground_truth[camera].hold(stamp_ns(msg.header.stamp))
        try:
            rgbs = self._decoded(frame)
            segmented = self._segmented(pipeline, rgbs) if rgbs else {}
        except CheckpointError as exc:  # a method switched to at run time whose weights are not here
            self.health.failed(f"method {settings.method}: {exc.reason}")
            self._warn(f"checkpoint:{settings.method}", f"method {settings.method} cannot run, frames are skipped "
                                                       f"until it can: {' '.join(exc.for_ros().split())}")
            return
        finally:
            clouds = self.sync.release()
            ground_truth = {camera: self.ground_truth[camera].release() for camera in frame.frames}
        if not segmented:
            return
        wanted = {name for name, publisher in self._outputs.items() if publisher.get_subscription_count() > 0}
        result = FrameStep(settings, self.rig).surround(
            {camera: (rgbs[camera], done.labels) for camera, done in segmented.items()}, clouds, self.camera_infos,
            wanted)
        cloud_stamp = Time(sec=frame.stamp // 10**9, nanosec=frame.stamp % 10**9)  # the surround frame's one stamp
        kinds = output_table(settings.cameras)
        for output in result.outputs:
            header = (frame.frames[output.camera].header if output.frame_id is None
                      else Header(stamp=cloud_stamp, frame_id=output.frame_id))
            self._outputs[output.name].publish(to_layout_message(kinds[output.name], output.layout, header))
        for counter, n in result.counts.items():
            self.health.count(counter, n)
        for problem in result.problems:
            self._warn(problem.kind, problem.message)
        for camera, done in segmented.items():
            if self.live:
                self._score(camera, done.labels, ground_truth[camera], frame.frames[camera].header)
            if settings.cameras:
                self.health.camera_done(camera, done.segmentation.stats)
        if settings.cameras:
            self._count_surround(frame, segmented)
        first = next(iter(segmented.values())).segmentation
        self.smoke_note = first.smoke_note  # the method's model says whether it is a smoke run
        self.processed_rate.tick()
        self.health.frame_done(first.stats, self._latency(frame.stamp), waited, time.monotonic() - started)

    def _decoded(self, frame: SurroundFrame) -> dict:
        """camera -> RGB array of each frame that decodes; the others are skipped and counted."""
        rgbs = {}
        for camera, msg in frame.frames.items():
            try:
                rgbs[camera] = frame_rgb(msg, self.settings.max_image_pixels)
            except MessageError as exc:
                if camera:
                    self.health.count_camera(camera, CameraCount.BAD)
                self._skip(Count.BAD_IMAGES, camera_topic(camera, "image"), f"skipping {whose(camera)}image: {exc}")
        return rgbs

    def _segmented(self, pipeline: FramePipeline, rgbs: dict) -> dict:
        """camera -> its segmented frame; a surround frame's cameras in one label space."""
        if not self.settings.cameras:
            return {camera: pipeline.segment(rgb) for camera, rgb in rgbs.items()}
        return dict(zip(rgbs, pipeline.segment_surround(list(rgbs.values()))))

    def _count_surround(self, frame: SurroundFrame, segmented: dict) -> None:
        for camera in frame.missing:
            self.health.count_camera(camera, CameraCount.TIMED_OUT)
        complete = len(segmented) == len(self.cameras)
        self.health.count(Count.SURROUND_COMPLETE if complete else Count.SURROUND_PARTIAL)

    def _score(self, camera: str, labels, ground_truth: Image | None, header) -> None:
        if ground_truth is None:
            self.health.count(Count.FRAMES_WITHOUT_GROUND_TRUTH)
            topic, stamp = camera_topic(camera, "ground_truth"), _seconds(stamp_ns(header.stamp))
            self._say_once(f"no_ground_truth:{camera}", f"no ground truth within sync_slop of {whose(camera)}frame "
                                                        f"{stamp}: it is not scored (frames_without_ground_truth "
                                                        f"counts the others; is the semantic camera publishing on "
                                                        f"`{topic}`?)")
            return
        try:
            values = self.live[camera].add(labels, label_pixels(ground_truth))
        except (MessageError, ScoringError) as exc:
            self._skip(Count.BAD_GROUND_TRUTH, camera_topic(camera, "ground_truth"),
                       f"ground truth of {whose(camera)}frame {_seconds(stamp_ns(header.stamp))} not scored: {exc}")
            return
        self.health.count(Count.SCORED_FRAMES)
        for name, value in values.items():
            self._scores[camera_topic(camera, f"score/{name}")].publish(Float32(data=value))

    def _latency(self, stamp: int) -> float | None:
        """Seconds from the frame's stamp to now on the node's clock, or None when that means nothing."""
        if stamp == 0:
            return None
        latency = (self.get_clock().now().nanoseconds - stamp) / 1e9
        return latency if abs(latency) <= MAX_MEANINGFUL_LATENCY_S else None

    def _on_error(self, frame: SurroundFrame, exc: BaseException) -> None:
        self.health.failed(f"{type(exc).__name__}: {exc}")
        text = self._throttle("processing_error", f"frame {_seconds(frame.stamp)} failed: {exc}")
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
        for companions in self.ground_truth.values():
            companions.slop = int(settings.sync_slop * 1e9)
        if self.gatherer is not None:
            self.gatherer.slop_ns, self.gatherer.timeout_s = int(settings.sync_slop * 1e9), settings.surround_timeout
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
            live=self.live, cameras=self.settings.cameras,
        ))


def _deserialized(msg):
    """A raw image's message (deserialized here, in the worker: never in a callback); others as they are."""
    return deserialize_message(msg, Image) if isinstance(msg, bytes) else msg


def _seconds(stamp: int) -> str:
    """A stamp in nanoseconds as a log shows it."""
    return f"{stamp / 1e9:.3f} s"
