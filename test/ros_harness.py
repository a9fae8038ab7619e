"""Real DDS traffic for node tests: a CARLA-bridge-like publisher and output collectors."""

from __future__ import annotations

import io
import math
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from rclpy.executors import MultiThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from PIL import Image as PILImage
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField
from std_msgs.msg import Float32, Header

from emerdiff_ros.ros.node import EmerDiffNode
from emerdiff_ros.runtime.outputs import OUTPUTS, SCORES, output_topic
from tiny import TINY

# Fast, real: the tiny random model at a small processing size.
FAST_PARAMS = {**TINY, "max_rate_hz": 0.0}
ROLE = "/carla/ego_vehicle"
WIDTH, HEIGHT, FOV = 800, 600, 90.0
FX = WIDTH / (2 * math.tan(math.radians(FOV) / 2))  # the bridge's camera_info: fx = fy, centre of the image


def stamp(seconds: float) -> Time:
    return Time(sec=int(seconds), nanosec=int(round((seconds % 1) * 1e9)))


def bgra_image(rgb: np.ndarray, t: float, frame_id: str = "ego_vehicle/rgb_front") -> Image:
    bgra = np.concatenate([rgb[:, :, ::-1], np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2)
    msg = Image(header=Header(stamp=stamp(t), frame_id=frame_id), height=rgb.shape[0], width=rgb.shape[1],
                encoding="bgra8", step=rgb.shape[1] * 4)
    msg.data = bgra.tobytes()
    return msg


def compressed_image(rgb: np.ndarray, t: float, fmt: str = "jpeg") -> CompressedImage:
    """What image_transport's compressed plugin publishes."""
    buffer = io.BytesIO()
    PILImage.fromarray(rgb).save(buffer, format=fmt.upper())
    msg = CompressedImage(header=Header(stamp=stamp(t), frame_id="ego_vehicle/rgb_front"),
                          format=f"rgb8; {fmt} compressed bgr8")
    msg.data = buffer.getvalue()
    return msg


def camera_info(t: float) -> CameraInfo:
    msg = CameraInfo(header=Header(stamp=stamp(t), frame_id="ego_vehicle/rgb_front"), width=WIDTH, height=HEIGHT,
                     distortion_model="plumb_bob")
    msg.k = [FX, 0.0, WIDTH / 2, 0.0, FX, HEIGHT / 2, 0.0, 0.0, 1.0]
    msg.p = [FX, 0.0, WIDTH / 2, 0.0, 0.0, FX, HEIGHT / 2, 0.0, 0.0, 0.0, 1.0, 0.0]
    return msg


def lidar_cloud(points: np.ndarray, t: float) -> PointCloud2:
    """The bridge's LiDAR layout: x, y, z, intensity float32, packed (point_step 16)."""
    data = np.concatenate([points, np.ones((len(points), 1))], axis=1).astype(np.float32)
    fields = [PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1)
              for i, n in enumerate(("x", "y", "z", "intensity"))]
    msg = PointCloud2(header=Header(stamp=stamp(t), frame_id="ego_vehicle/lidar"), height=1, width=len(points),
                      fields=fields, is_bigendian=False, point_step=16, row_step=16 * len(points), is_dense=True)
    msg.data = data.tobytes()
    return msg


def radar_cloud(points: np.ndarray, t: float) -> PointCloud2:
    """The bridge's radar layout: 7 float32 fields, ElevationAngle at offset 28, point_step 32 (padding at 24)."""
    depth = np.linalg.norm(points, axis=1)
    azimuth = -np.arctan2(points[:, 1], points[:, 0])
    altitude = np.arcsin(points[:, 2] / depth)
    rows = np.zeros((len(points), 8), np.float32)
    rows[:, :3], rows[:, 3], rows[:, 4], rows[:, 5], rows[:, 6], rows[:, 7] = points, depth, -1.5, azimuth, 99, altitude
    names = [("x", 0), ("y", 4), ("z", 8), ("Range", 12), ("Velocity", 16), ("AzimuthAngle", 20),
             ("ElevationAngle", 28)]
    fields = [PointField(name=n, offset=o, datatype=PointField.FLOAT32, count=1) for n, o in names]
    msg = PointCloud2(header=Header(stamp=stamp(t), frame_id="ego_vehicle/radar_front"), height=1,
                      width=len(points), fields=fields, is_bigendian=False, point_step=32,
                      row_step=32 * len(points), is_dense=True)
    msg.data = rows.tobytes()
    return msg


def points_at_pixels(pixels, depth: float, sensor_offset) -> np.ndarray:
    """Points (in a sensor frame whose origin sits at sensor_offset from the camera, same axes) that the
    bridge camera sees at the centres of the given (u, v) pixels, at the given depth."""
    u, v = np.asarray(pixels, dtype=np.float64).T
    forward = np.full_like(u, depth)
    left = -(u + 0.5 - WIDTH / 2) * depth / FX
    up = -(v + 0.5 - HEIGHT / 2) * depth / FX
    return np.stack([forward, left, up], axis=1) - np.asarray(sensor_offset, dtype=np.float64)


class Collector:
    def __init__(self):
        self.messages = []
        self.receive_times = []  # time.monotonic() of each message's arrival
        self._cond = threading.Condition()

    def __call__(self, msg):
        with self._cond:
            self.messages.append(msg)
            self.receive_times.append(time.monotonic())
            self._cond.notify_all()

    def wait(self, count: int, timeout: float = 30.0) -> list:
        with self._cond:
            self._cond.wait_for(lambda: len(self.messages) >= count, timeout)
            return list(self.messages)


class Bridge(Node):
    """Publishes like the CARLA bridge (RELIABLE, depth 10) and collects the emerdiff node's outputs."""

    def __init__(self, context: rclpy.Context, name: str = "fake_carla_bridge", namespace: str = ""):
        super().__init__(name, context=context)
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.image = self.create_publisher(Image, f"{ROLE}/rgb_front/image", qos)
        self.compressed = self.create_publisher(CompressedImage, f"{ROLE}/rgb_front/image/compressed", qos)
        self.ground_truth = self.create_publisher(Image, f"{ROLE}/semantic_segmentation_front/image", qos)
        self.info = self.create_publisher(CameraInfo, f"{ROLE}/rgb_front/camera_info", qos)
        self.lidar = self.create_publisher(PointCloud2, f"{ROLE}/lidar", qos)
        self.radar = self.create_publisher(PointCloud2, f"{ROLE}/radar_front", qos)
        self.namespace = namespace
        self.out = {}
        for name, kind in OUTPUTS.items():
            self.out[name] = Collector()
            self.create_subscription(Image if kind.endswith("Image") else PointCloud2, output_topic(name, namespace),
                                     self.out[name], 10)
        for name in SCORES:
            self.out[name] = Collector()
            self.create_subscription(Float32, output_topic(name, namespace), self.out[name], 10)
        from diagnostic_msgs.msg import DiagnosticArray

        self.diagnostics = Collector()
        self.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics, 10)

    def wait_for_subscribers(self, timeout: float = 10.0, compressed: bool = False, camera_info: bool = True) -> None:
        deadline = time.monotonic() + timeout
        publishers = (self.compressed if compressed else self.image, *((self.info,) if camera_info else ()),
                      self.lidar, self.radar)
        while time.monotonic() < deadline:
            if all(p.get_subscription_count() > 0 for p in publishers) and all(
                    self.count_publishers(output_topic(name, self.namespace)) > 0 for name in OUTPUTS):
                return
            time.sleep(0.05)
        raise TimeoutError("the emerdiff node's topics did not connect")

    def diagnostics_when(self, ready, timeout: float = 60.0) -> dict[str, str]:
        """The first diagnostics for which ready(values) holds (they come every diagnostics_period)."""
        deadline = time.monotonic() + timeout
        while not ready(values := self.latest_diagnostics()):
            assert time.monotonic() < deadline, f"diagnostics never got there: {values}"
        return values

    def latest_diagnostics(self, timeout: float = 5.0, status: str = "emerdiff: segmentation") -> dict[str, str]:
        seen = len(self.diagnostics.messages)
        message = self.diagnostics.wait(seen + 1, timeout)[-1]
        status = next(s for s in message.status if s.name == status)
        return {"level": status.level, "message": status.message, **{kv.key: kv.value for kv in status.values}}



def answer(client, request, timeout: float):
    """The service's reply, or None when none came in time (the request is then forgotten).

    A new client's request can reach the server before the server's reply writer has matched the
    client, and that reply is lost: callers ask again, with a call that has no side effects first."""
    future = client.call_async(request)
    deadline = time.monotonic() + timeout
    while not future.done():
        if time.monotonic() > deadline:
            client.remove_pending_request(future)
            return None
        time.sleep(0.02)
    return future.result()


def answered(client, request, timeout: float = 60.0, attempt: float = 3.0):
    """The reply to a request without side effects, asked again until one is answered."""
    assert client.wait_for_service(timeout_sec=30), client.srv_name
    deadline = time.monotonic() + timeout
    while (reply := answer(client, request, attempt)) is None:
        assert time.monotonic() < deadline, f"{client.srv_name} never answered"
    return reply


def node_arguments() -> list[str]:
    """The remappings carla.launch.py applies, as command-line arguments."""
    return ["--ros-args", "-r", f"image:={ROLE}/rgb_front/image", "-r", f"camera_info:={ROLE}/rgb_front/camera_info",
            "-r", f"lidar:={ROLE}/lidar", "-r", f"radar:={ROLE}/radar_front",
            "-r", f"ground_truth:={ROLE}/semantic_segmentation_front/image"]


def spinning(executor) -> threading.Thread:
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    return thread


def stop_spinning(executor, thread: threading.Thread) -> None:
    executor.shutdown()
    thread.join(timeout=10)  # out of its wait set before the nodes in it are destroyed


@contextmanager
def own_context(args: list[str] | None = None):
    """An rclpy context of the test's own: nothing an earlier test did to another context reaches it."""
    context = rclpy.Context()
    rclpy.init(context=context, args=args)
    try:
        yield context
    finally:
        rclpy.try_shutdown(context=context)


@contextmanager
def node_and_bridge(params: dict, arguments: list[str], make_bridge, connect):
    """The emerdiff node (in this process, its own executor thread) and a bridge node over DDS; connect(bridge)
    waits until the two are connected."""
    overrides = [Parameter(k, value=v) for k, v in params.items()]
    with own_context(arguments) as context, own_context() as bridge_context:
        node = EmerDiffNode(context=context, parameter_overrides=overrides)
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        bridge = make_bridge(bridge_context)
        executors = []
        for n, ctx in ((node, context), (bridge, bridge_context)):
            executor = MultiThreadedExecutor(context=ctx)
            executor.add_node(n)
            executors.append((executor, spinning(executor)))
        try:
            connect(bridge)
            yield node, bridge
        finally:
            for executor, thread in executors:
                stop_spinning(executor, thread)
            if node.lifecycle_state == "active":
                node.trigger_shutdown()
            node.destroy_node()
            bridge.destroy_node()


@contextmanager
def running(**params):
    """The emerdiff node and a CARLA-bridge-like node connected to it over DDS."""
    def connect(bridge):
        bridge.wait_for_subscribers(compressed=params.get("image_transport") == "compressed",
                                    camera_info=not params.get("camera_fov"))

    with node_and_bridge({**FAST_PARAMS, **params}, node_arguments(), Bridge, connect) as (node, bridge):
        yield node, bridge


@contextmanager
def node_process(*ros_args: str, connect: bool = True, **params):
    """The emerdiff node as its own process (python -m emerdiff_ros.node), and a bridge connected to it
    (unless connect is false: a node that does not activate itself has no subscriptions to connect to).

    Yields (process, bridge); the process must exit 0 on SIGINT. It ends with the test, pass or fail.
    """
    settings = [arg for k, v in {**FAST_PARAMS, **params}.items() for arg in ("-p", f"{k}:={_param_text(v)}")]
    with node_subprocess(*node_arguments(), *ros_args, *settings) as process, own_context() as context:
        bridge = Bridge(context)
        executor = MultiThreadedExecutor(context=context)
        executor.add_node(bridge)
        thread = spinning(executor)
        try:
            if connect:
                bridge.wait_for_subscribers(timeout=60, camera_info=not params.get("camera_fov"))
            yield process, bridge
        finally:
            stop_spinning(executor, thread)
            bridge.destroy_node()


@contextmanager
def node_subprocess(*args: str):
    """`python -m emerdiff_ros.node ARGS`, in a session of its own so that it, and any process it started, is
    ended when the test ends: Ctrl-C first, then a kill of the whole session."""
    process = subprocess.Popen([sys.executable, "-m", "emerdiff_ros.node", *args], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(process.pid, signal.SIGKILL)  # whatever the node's process left behind goes too
        except ProcessLookupError:
            pass
        process.wait()


def _param_text(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def process_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024
