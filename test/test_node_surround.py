"""Surround perception over real DDS: two cameras of the shipped surround rig in one node, one LiDAR around."""

from pathlib import Path

import numpy as np
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, PointCloud2
from std_msgs.msg import Float32

from emerdiff_ros.runtime.clouds import NO_CAMERA, NO_LABEL
from emerdiff_ros.runtime.messages import stamp_ns
from emerdiff_ros.ros.node import EmerDiffNode
from emerdiff_ros.runtime.outputs import SCORES, camera_topic, output_table, output_topic
from ros_harness import FAST_PARAMS, ROLE, Collector, bgra_image, lidar_cloud, node_and_bridge, own_context, stamp
from test_node import cloud_field, image_array

CAMERAS = ("rgb_front", "rgb_left")
SURROUND = {"cameras": list(CAMERAS), "rig_file": str(Path(__file__).resolve().parents[1] / "config" /
                                                      "carla_surround.json"), "fov_from_rig": True}
SEMANTIC = {camera: camera.replace("rgb", "semantic_segmentation") for camera in CAMERAS}  # at the same poses
LIDAR_Z = 2.4  # the rig's LiDAR height; its cameras sit at 2.0 m


class SurroundBridge(Node):
    """Publishes the cameras and the LiDAR as the CARLA bridge does; collects the node's surround outputs."""

    def __init__(self, context):
        super().__init__("surround_bridge", context=context)
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.images = {camera: self.create_publisher(Image, f"{ROLE}/{camera}/image", qos) for camera in CAMERAS}
        self.ground_truth = {camera: self.create_publisher(Image, f"{ROLE}/{SEMANTIC[camera]}/image", qos)
                             for camera in CAMERAS}
        self.lidar = self.create_publisher(PointCloud2, f"{ROLE}/lidar", qos)
        self.out = {name: Collector() for name in output_table(CAMERAS)}
        for name, kind in output_table(CAMERAS).items():
            self.create_subscription(Image if kind.endswith("Image") else PointCloud2, output_topic(name),
                                     self.out[name], 10)
        for camera in CAMERAS:
            for name in SCORES:
                self.out[camera_topic(camera, name)] = Collector()
                self.create_subscription(Float32, output_topic(camera_topic(camera, name)),
                                         self.out[camera_topic(camera, name)], 10)
        from diagnostic_msgs.msg import DiagnosticArray

        self.diagnostics = Collector()
        self.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics, 10)

    def connected(self) -> bool:
        return all(p.get_subscription_count() > 0 for p in (*self.images.values(), self.lidar)) and all(
            self.count_publishers(output_topic(name)) > 0 for name in output_table(CAMERAS))

    def wait_for_subscribers(self) -> None:
        for _ in range(200):
            if self.connected():
                return
            self.diagnostics.wait(len(self.diagnostics.messages) + 1, 0.05)
        assert self.connected(), "the emerdiff node's surround topics did not connect"

    def diagnostics_when(self, ready, timeout: float = 60.0) -> dict:
        for _ in range(int(timeout)):
            message = self.diagnostics.wait(len(self.diagnostics.messages) + 1, 5.0)[-1]
            values = {kv.key: kv.value for kv in message.status[0].values}
            if ready(values):
                return values
        raise AssertionError(f"diagnostics never got there: {values}")


def remappings() -> list[str]:
    return ["--ros-args", "-r", f"lidar:={ROLE}/lidar", "-r", f"radar:={ROLE}/radar_front",
            *[arg for camera in CAMERAS for arg in ("-r", f"{camera}/image:={ROLE}/{camera}/image")],
            *[arg for camera in CAMERAS for arg in ("-r", f"{camera}/ground_truth:={ROLE}/{SEMANTIC[camera]}/image")]]


def surround_node(**params):
    """The node on two cameras of the surround rig, and a bridge connected to it over DDS."""
    return node_and_bridge({**FAST_PARAMS, **SURROUND, **params}, remappings(), SurroundBridge,
                           SurroundBridge.wait_for_subscribers)


def test_two_cameras_label_one_cloud_all_around_the_car_in_one_label_space(carla_frame):
    height = 2.0 - LIDAR_Z  # the cameras' height, from the LiDAR
    # Ahead of the front camera, to the left of the left camera, behind the car.
    points = np.array([[12.0, 0.0, height], [0.0, 11.0, height], [-12.0, 0.0, height]])
    t = 100.0
    with surround_node() as (node, bridge):
        bridge.lidar.publish(lidar_cloud(points, t))
        for camera in CAMERAS:  # one view seen by both cameras: the same surface, the same labels
            bridge.images[camera].publish(bgra_image(carla_frame, t, frame_id=f"ego_vehicle/{camera}"))
        fused = bridge.out["lidar/labeled"].wait(1)[0]
        labels = {camera: bridge.out[f"{camera}/labels"].wait(1)[0] for camera in CAMERAS}
        values = bridge.diagnostics_when(lambda v: v["surround_frames_complete"] == "1")
    for camera, msg in labels.items():
        assert stamp_ns(msg.header.stamp) == stamp_ns(stamp(t)) and msg.header.frame_id == f"ego_vehicle/{camera}"
    assert stamp_ns(fused.header.stamp) == stamp_ns(stamp(t)) and fused.header.frame_id == "ego_vehicle/lidar"
    front, left = (image_array(labels[camera]) for camera in CAMERAS)
    np.testing.assert_array_equal(front, left)
    centre = front[300, 400]
    assert list(cloud_field(fused, "camera")) == [0, 1, NO_CAMERA]
    assert list(cloud_field(fused, "label")) == [centre, centre, NO_LABEL]
    assert values["rgb_front/frames_segmented"] == values["rgb_left/frames_segmented"] == "1"


def test_a_camera_that_goes_silent_does_not_stop_the_others(carla_frame):
    with surround_node(surround_timeout=0.2) as (node, bridge):
        for i in range(3):
            t = 200.0 + i
            bridge.images["rgb_front"].publish(bgra_image(carla_frame, t, frame_id="ego_vehicle/rgb_front"))
            bridge.out["rgb_front/labels"].wait(i + 1)
        values = bridge.diagnostics_when(lambda v: v["surround_frames_partial"] == "3")
    assert [stamp_ns(m.header.stamp) for m in bridge.out["rgb_front/labels"].messages] == [
        stamp_ns(stamp(200.0 + i)) for i in range(3)]
    assert values["rgb_left/frames_timed_out"] == "3" and values["rgb_front/frames_segmented"] == "3"
    assert not bridge.out["rgb_left/labels"].messages


def test_deactivating_segments_the_surround_frame_still_gathering(carla_frame):
    with surround_node(surround_timeout=60.0) as (node, bridge):
        bridge.images["rgb_left"].publish(bgra_image(carla_frame, 300.0, frame_id="ego_vehicle/rgb_left"))
        bridge.diagnostics_when(lambda v: v["rgb_left/frames_received"] == "1")
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        labels = bridge.out["rgb_left/labels"].wait(1)
    assert [stamp_ns(m.header.stamp) for m in labels] == [stamp_ns(stamp(300.0))]
    assert not bridge.out["rgb_front/labels"].messages


def test_each_camera_is_scored_against_its_own_semantic_camera(carla_frame):
    truth = np.zeros_like(carla_frame)
    truth[:300], truth[300:] = (70, 130, 180), (128, 64, 128)  # sky over road, as the bridge's palette colours
    with surround_node(ground_truth_format="carla-palette", carla_version="0.9.13") as (node, bridge):
        t = 400.0
        bridge.diagnostics_when(lambda v: bridge.ground_truth["rgb_front"].get_subscription_count() > 0)
        bridge.ground_truth["rgb_front"].publish(bgra_image(truth, t, frame_id="ego_vehicle/semantic_front"))
        for camera in CAMERAS:
            bridge.images[camera].publish(bgra_image(carla_frame, t, frame_id=f"ego_vehicle/{camera}"))
        front = bridge.out["rgb_front/score/frame_miou"].wait(1)
        bridge.diagnostics_when(lambda v: v["surround_frames_complete"] == "1")
    assert 0.0 < front[0].data <= 100.0
    assert not bridge.out["rgb_left/score/frame_miou"].messages  # rgb_left's semantic camera sent nothing


def test_a_camera_the_rig_does_not_have_stops_the_start_naming_it():
    overrides = [Parameter(k, value=v) for k, v in {**FAST_PARAMS, **SURROUND,
                                                     "cameras": ["rgb_front", "rgb_top"]}.items()]
    with own_context() as context:
        node = EmerDiffNode(context=context, parameter_overrides=overrides)
        try:
            assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
            assert node.pipeline is None
        finally:
            node.destroy_node()
