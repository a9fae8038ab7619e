"""Messages in (checks, compressed images, camera_info) and one frame's outputs, without ROS."""

import io
import math
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from emerdiff_ros.runtime.clouds import FLOAT32, NO_LABEL, Cloud, CloudField
from emerdiff_ros.runtime.messages import MessageError, camera_from_info, check_image, frame_rgb
from emerdiff_ros.runtime.outputs import OUTPUTS, PROJECTION, CameraView, SensorCloud, frame_outputs, output_topic
from emerdiff_ros.runtime.palette import palette
from emerdiff_ros.runtime.projection import CameraModel
from emerdiff_ros.runtime.rigging import Rigging
from emerdiff_ros.runtime.settings import StreamSettings

CAMERA = CameraModel(fx=100, fy=100, cx=80, cy=60, width=160, height=120)
RIG = StreamSettings(camera_pose=(0, 0, 0, 0, 0, 0), lidar_pose=(0, 0, 0, 0, 0, 0), radar_pose=(0, 0, 0, 0, 0, 0))


def compressed(rgb: np.ndarray, fmt: str) -> SimpleNamespace:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format=fmt)
    return SimpleNamespace(format=f"rgb8; {fmt.lower()} compressed bgr8", data=buffer.getvalue())


def raw_image(width: int, height: int) -> SimpleNamespace:
    return SimpleNamespace(encoding="rgb8", width=width, height=height, step=3 * width,
                           data=bytes(3 * width * height))


def test_compressed_frames_decode_like_image_transport_sends_them(carla_frame):
    np.testing.assert_array_equal(frame_rgb(compressed(carla_frame, "PNG")), carla_frame)
    jpeg = frame_rgb(compressed(carla_frame, "JPEG"))
    assert jpeg.shape == carla_frame.shape and np.abs(jpeg.astype(int) - carla_frame).mean() < 8
    with pytest.raises(MessageError, match="undecodable"):
        frame_rgb(SimpleNamespace(format="jpeg", data=b"\xff\xd8 not really a jpeg"))
    with pytest.raises(MessageError, match="empty"):
        check_image(SimpleNamespace(format="jpeg", data=b""))


def test_frames_larger_than_the_cap_are_refused_before_decoding(carla_frame):
    check_image(raw_image(800, 600), max_pixels=800 * 600)
    with pytest.raises(MessageError, match="801x600 image is larger than max_image_pixels 480000"):
        check_image(raw_image(801, 600), max_pixels=800 * 600)
    with pytest.raises(MessageError, match="max_image_pixels"):
        frame_rgb(compressed(carla_frame, "PNG"), max_pixels=1000)


def test_camera_info_with_non_finite_intrinsics_is_refused_in_plain_numbers():
    k = [400.0, 0.0, math.nan, 0.0, 400.0, 300.0, 0.0, 0.0, 1.0]
    with pytest.raises(MessageError) as caught:
        camera_from_info(SimpleNamespace(k=np.array(k), width=800, height=600))
    assert str(caught.value) == "camera_info k has non-finite values (k=[400, 0, nan, 0, 400, 300, 0, 0, 1])"
    with pytest.raises(MessageError, match="non-finite"):
        camera_from_info(SimpleNamespace(k=[math.inf, 0, 400, 0, 400, 300, 0, 0, 1], width=800, height=600))


def cloud_of(points) -> Cloud:
    data = np.asarray(points, np.float32).reshape(-1, 3)
    return Cloud(tuple(CloudField(n, 4 * i, FLOAT32) for i, n in enumerate("xyz")), 12, 12 * len(data), len(data), 1,
                 data.tobytes())


def one_camera(rgb, labels, clouds, camera, settings, wanted=tuple(OUTPUTS)):
    """frame_outputs of the single camera."""
    return frame_outputs({"": CameraView(rgb, labels, camera)}, clouds, Rigging.of(settings), settings, wanted)


def test_only_the_outputs_asked_for_are_made():
    rgb, labels = np.zeros((120, 160, 3), np.uint8), np.zeros((120, 160), np.uint8)
    clouds = {"lidar": SensorCloud(cloud_of([[10, 0, 0]]), "ego_vehicle/lidar")}
    made, _ = one_camera(rgb, labels, clouds, CAMERA, RIG, wanted={"labels"})
    assert [o.name for o in made] == ["labels"]
    made, _ = one_camera(rgb, labels, clouds, CAMERA, RIG)
    assert {o.name for o in made} == {"labels", "overlay", "projection", "lidar/points", "lidar/labeled"}
    assert {o.frame_id for o in made if o.name.startswith("lidar")} == {"ego_vehicle/lidar"}
    assert all(o.frame_id is None for o in made if not o.name.startswith("lidar"))


def test_one_sensors_bad_cloud_costs_only_its_own_outputs():
    labels = np.full((120, 160), 3, np.uint8)
    broken = Cloud((CloudField("x", 0, FLOAT32), CloudField("y", 4, FLOAT32), CloudField("z", 8, FLOAT32)), 12, 12, 2,
                   1, b"\0" * 12)  # declares 2 points, holds 1: reading it fails
    clouds = {"lidar": SensorCloud(broken, "lidar"), "radar": SensorCloud(cloud_of(np.zeros((0, 3))), "radar")}
    made, report = one_camera(None, labels, clouds, CAMERA, RIG, wanted=set(OUTPUTS))
    assert {o.name for o in made} == {"labels", "lidar/points", "radar/points", "radar/labeled"}
    assert "lidar" in report.failed and "radar" not in report.failed
    assert next(o for o in made if o.name == "radar/labeled").layout["width"] == 0  # an empty scan stays empty


def test_the_projection_paints_each_point_in_its_label_colour_where_it_lands():
    labels = np.zeros((120, 160), np.uint8)
    labels[:, 80:] = 7
    rgb = np.full((120, 160, 3), 200, np.uint8)
    # In the camera's body frame (x forward, y left): 10 m ahead, 2 m right -> u = 80 + 100 * 2 / 10 = 100.
    points = [[10.0, -2.0, 0.0], [10.0, 4.0, 0.0], [-5.0, 0.0, 0.0]]  # right half, left half, behind
    made, _ = one_camera(rgb, labels, {"lidar": SensorCloud(cloud_of(points), "l")}, CAMERA, RIG,
                            wanted={PROJECTION})
    image = made[0].layout
    pixels = np.frombuffer(image["data"], np.uint8).reshape(120, 160, 3)
    np.testing.assert_array_equal(pixels[60, 100], palette(256)[7])
    np.testing.assert_array_equal(pixels[60, 40], palette(256)[0])
    np.testing.assert_array_equal(pixels[10, 10], [80, 80, 80])  # the frame, dimmed, where no point lands


def test_output_topics_follow_the_namespace():
    assert output_topic("labels") == "/emerdiff/labels"
    assert output_topic("lidar/labeled", "car1") == "/car1/emerdiff/lidar/labeled"
    assert output_topic("overlay", "/fleet/car2/") == "/fleet/car2/emerdiff/overlay"


def test_points_outside_the_image_have_no_label():
    labels = np.full((120, 160), 5, np.uint8)
    made, _ = one_camera(None, labels, {"radar": SensorCloud(cloud_of([[10, 0, 0], [10, 50, 0]]), "r")}, CAMERA,
                            RIG, wanted={"radar/labeled"})
    layout = made[0].layout
    values = np.ndarray((2,), "<u2", layout["data"], offset=12, strides=(layout["point_step"],))
    assert list(values) == [5, NO_LABEL]
