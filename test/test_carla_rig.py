"""carla_rig against a stand-in for the `carla` client (no CARLA server can run here), its conversions
against hand-computed values, and the real client's no-server path.

What the stand-in cannot show: that a real server accepts these calls and sends these buffers. The
calls and buffer layouts follow the client's API and CARLA's sources; the stand-in's names are
checked against the installed real client below.
"""

import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from rosbags.highlevel import AnyReader
from rosbags.interfaces import QosReliability

import carla_standin
from bag_builder import LIDAR_POINTS, PIXELS, RADAR_POINTS, field, read_back
from emerdiff_ros.carla.command import tick_limit
from emerdiff_ros.carla.convert import (RADAR_POINT_STEP, RawDataError, bgra_pixels, camera_info_fields,
                                        image_fields, lidar_cloud, lidar_points, radar_cloud, radar_points, stamp_ns)
from emerdiff_ros.rig import Pose, RigError, load_rig, parse_rig
from emerdiff_ros.carla.session import matching_client
from emerdiff_ros.cli import main
from emerdiff_ros.runtime.clouds import NO_LABEL
from emerdiff_ros.runtime.messages import stamp_ns as msg_stamp_ns
from emerdiff_ros.scoring import (BAG_CARLA_VERSION_KEY, FRAMES_MANIFEST, bag_custom_data, ground_truth_format,
                                  read_label_image)
from tiny import flags

ROOT = Path(__file__).resolve().parents[1]
RIG_FILE = ROOT / "config" / "carla_sensors.json"
TOPICS = {"/clock", "/carla/ego_vehicle/rgb_front/image", "/carla/ego_vehicle/rgb_front/camera_info",
          "/carla/ego_vehicle/semantic_segmentation_front/image",
          "/carla/ego_vehicle/semantic_segmentation_front/camera_info", "/carla/ego_vehicle/lidar",
          "/carla/ego_vehicle/radar_front"}
FAST = flags()
START_ELAPSED, START_FRAME, DELTA = 2.0, 1000, 0.05


@pytest.fixture
def server(monkeypatch, carla_frame):
    """A stand-in server seeing the bundled CARLA frame, and points that project onto known pixels."""
    def make(**kwargs):
        standin = carla_standin.Server(carla_frame, LIDAR_POINTS, RADAR_POINTS, start_elapsed=START_ELAPSED,
                                       **kwargs)
        carla_standin.install(standin, monkeypatch)
        return standin
    yield make
    if carla_standin.SERVER is not None:
        carla_standin.SERVER.join()
    carla_standin.SERVER = None


def frame_of(stamp: int) -> int:
    """The stand-in's frame number at a stamp: it starts at frame 1000, 2.0 s, and steps 0.05 s."""
    return START_FRAME + round((stamp / 1e9 - START_ELAPSED) / DELTA)


def rig(*args: str) -> int:
    return main(["carla", "--port", "2999", *args])


def assert_world_restored(server) -> None:
    assert server.actors == {}, "every spawned actor is destroyed"
    assert (server.settings.synchronous_mode, server.settings.fixed_delta_seconds) == (False, None)
    assert server.tm_synchronous is False
    assert server.weather.name == "Default"
    for sensor in ("rgb_front", "semantic_segmentation_front", "lidar", "radar_front"):
        if (sensor,) in server.called("listen"):
            assert server.calls.index(("stop", sensor)) < server.calls.index(("destroy", sensor))


# --- the rig file -------------------------------------------------------------------------------

def test_spawn_points_in_ros_axes_become_carla_transforms():
    # CARLA is left-handed (y right): y, pitch and yaw change sign, roll does not
    assert Pose(1.0, 2.0, 3.0, 10.0, 20.0, 30.0).to_carla() == ((1.0, -2.0, 3.0), (-20.0, -30.0, 10.0))


def test_the_shipped_rig_file_reads_as_the_bridge_reads_it():
    rig_ = load_rig(RIG_FILE)
    assert (rig_.vehicle_type, rig_.role_name, rig_.vehicle_pose) == ("vehicle.tesla.model3", "ego_vehicle", None)
    assert [(s.id, s.kind) for s in rig_.sensors] == [("rgb_front", "camera"),
                                                      ("semantic_segmentation_front", "semantic"),
                                                      ("lidar", "lidar"), ("radar_front", "radar")]
    assert set(rig_.skipped) == {"objects", "actor_list", "tf", "odometry", "control"}
    camera, _, lidar, _ = rig_.sensors
    assert camera.pose == Pose(2.0, 0.0, 2.0) and lidar.pose == Pose(0.0, 0.0, 2.4)
    # attribute values as the bridge passes them: str(value)
    assert camera.attributes == {"image_size_x": "800", "image_size_y": "600", "fov": "90.0"}
    assert lidar.attributes["range"] == "50" and lidar.attributes["upper_fov"] == "2.0"


@pytest.mark.parametrize("objects, reason", [
    ({"objects": []}, "exactly one vehicle"),
    ({"objects": [{"type": "vehicle.a", "id": "a", "sensors": []}, {"type": "vehicle.b", "id": "b"}]},
     "exactly one vehicle"),
    ({"objects": [{"type": "vehicle.a", "id": "a", "sensors": [{"type": "sensor.other.gnss", "id": "g"}]}]},
     "not supported"),
    ({"objects": [{"type": "vehicle.a", "id": "a", "sensors": [
        {"type": "sensor.lidar.ray_cast", "id": "l"}, {"type": "sensor.other.radar", "id": "l"}]}]}, "used twice"),
    ({"objects": [{"type": "vehicle.a", "id": "a", "sensors": [
        {"type": "sensor.lidar.ray_cast", "id": "l", "spawn_point": {"x": "ahead"}}]}]}, "must be numbers"),
    ({"objects": [{"type": "vehicle.a", "id": "a", "spawn_point": {"x": 1, "y": 2, "z": 0.3, "pitch": 0},
                   "sensors": [{"type": "sensor.lidar.ray_cast", "id": "l"}]}]}, "lacks roll, yaw: give all of"),
    ({"objects": [{"type": "sensor.camera.rgb", "id": "cam", "spawn_point": {"x": 0, "y": 0, "z": 9}},
                  {"type": "vehicle.a", "id": "a", "sensors": [{"type": "sensor.lidar.ray_cast", "id": "l"}]}]},
     "not: cam"),
])
def test_a_rig_file_the_rig_cannot_use_says_why(objects, reason):
    with pytest.raises(RigError, match=reason):
        parse_rig(objects)


# --- conversions, against hand-computed values -----------------------------------------------------

def test_lidar_points_flip_y_into_ros_axes_in_the_bridge_layout():
    raw = np.array([[1.0, 2.0, 3.0, 0.5], [4.0, -5.0, 6.0, 1.0]], dtype=np.float32).tobytes()
    points = lidar_points(raw)
    np.testing.assert_array_equal(points, [[1, -2, 3, 0.5], [4, 5, 6, 1]])
    cloud = lidar_cloud(points)
    assert [(f.name, f.offset, f.datatype) for f in cloud.fields] == [("x", 0, 7), ("y", 4, 7), ("z", 8, 7),
                                                                      ("intensity", 12, 7)]
    assert (cloud.point_step, cloud.row_step, cloud.width, cloud.height) == (16, 32, 2, 1)
    np.testing.assert_array_equal(cloud.field("y"), [-2, 5])
    with pytest.raises(RawDataError):
        lidar_points(raw[:-4])


def test_radar_detections_become_bridge_points_with_elevation_at_offset_28():
    # velocity, azimuth (to the right), altitude, depth: 30 degrees right, 10 up, 10 m away
    raw = np.array([[-2.0, math.radians(30), math.radians(10), 10.0], [3.0, 0.0, 0.0, 5.0]], np.float32).tobytes()
    rows = radar_points(raw)
    # x = 10 cos 30 cos 10 = 8.52869, y = -10 sin 30 cos 10 = -4.92404 (ROS: left), z = 10 sin 10 = 1.73648
    np.testing.assert_allclose(rows[0, :3], [8.52869, -4.92404, 1.73648], atol=1e-5)
    np.testing.assert_allclose(rows[1, :3], [5.0, 0.0, 0.0], atol=1e-6)
    cloud = radar_cloud(rows)
    assert cloud.point_step == RADAR_POINT_STEP == 32
    assert [(f.name, f.offset) for f in cloud.fields] == [("x", 0), ("y", 4), ("z", 8), ("Range", 12), ("Velocity", 16),
                                                          ("AzimuthAngle", 20), ("ElevationAngle", 28)]
    np.testing.assert_allclose(cloud.field("Range"), [10, 5])
    np.testing.assert_allclose(cloud.field("Velocity"), [-2, 3])
    np.testing.assert_allclose(cloud.field("AzimuthAngle"), [math.radians(30), 0], atol=1e-7)
    np.testing.assert_allclose(cloud.field("ElevationAngle"), [math.radians(10), 0], atol=1e-7)
    padding = np.frombuffer(cloud.data, np.uint8).reshape(2, 32)[:, 24:28]
    assert not padding.any()


def test_camera_buffers_stay_bgra8_and_camera_info_is_the_bridges_pinhole():
    raw = bytes(range(24))  # 3 x 2 pixels, BGRA
    pixels = bgra_pixels(raw, 3, 2)
    assert pixels.shape == (2, 3, 4) and pixels[1, 0].tolist() == [12, 13, 14, 15]
    fields = image_fields(pixels)
    assert (fields["encoding"], fields["step"], fields["height"], fields["width"]) == ("bgra8", 12, 2, 3)
    assert bytes(fields["data"]) == raw
    with pytest.raises(RawDataError):
        bgra_pixels(raw, 4, 2)
    info = camera_info_fields(800, 600, 90.0)  # fx = 800 / (2 tan 45) = 400
    np.testing.assert_allclose(info["k"], [400, 0, 400, 0, 400, 300, 0, 0, 1])
    np.testing.assert_allclose(info["p"], [400, 0, 400, 0, 0, 400, 300, 0, 0, 0, 1, 0])
    assert info["distortion_model"] == "plumb_bob" and not info["d"].any()


def test_stamps_are_whole_nanoseconds_of_simulation_time():
    assert stamp_ns(0.05 + 0.05 + 0.05) == 150_000_000  # 0.15000000000000002 s
    assert stamp_ns(12.35) == 12_350_000_000


def test_seconds_become_ticks_of_the_fixed_step():
    class Args:
        frames, seconds, fixed_delta = None, 0.12, 0.05
    assert tick_limit(Args) == 3
    Args.seconds = 0.1
    assert tick_limit(Args) == 2
    Args.frames = 7
    assert tick_limit(Args) == 7


# --- the rig against the stand-in ----------------------------------------------------------------

def test_record_spawns_the_rig_drives_synchronously_and_writes_the_bridges_messages(server, tmp_path, capsys):
    standin = server()
    out = tmp_path / "drive"
    assert rig("--record", str(out), "--frames", "4", "--weather", "WetCloudySunset", "--seed", "3") == 0
    printed = capsys.readouterr().out
    assert "CARLA client 0.9.16, server 0.9.16" in printed and f"wrote {out}: 4 ticks" in printed

    spawned = standin.called("spawn_actor")
    vehicle = spawned[0]
    assert vehicle[0] == "vehicle.tesla.model3" and vehicle[3] is None
    assert vehicle[1]["role_name"] == vehicle[1]["ros_name"] == "ego_vehicle"
    assert vehicle[2] != carla_standin.pose(carla_standin.Map("").get_spawn_points()[0])  # the occupied one
    sensors = {s[1]["role_name"]: s for s in spawned[1:]}
    assert list(sensors) == ["rgb_front", "semantic_segmentation_front", "lidar", "radar_front"]
    for name, (type_id, attributes, transform, parent) in sensors.items():
        assert parent == "ego_vehicle" and attributes["ros_name"] == name
    assert sensors["rgb_front"][2] == (2.0, -0.0, 2.0, -0.0, -0.0, 0.0)  # (x, y, z, pitch, yaw, roll)
    assert sensors["lidar"][2] == (0.0, -0.0, 2.4, -0.0, -0.0, 0.0)
    assert sensors["rgb_front"][1]["image_size_x"] == "800" and sensors["rgb_front"][1]["fov"] == "90.0"
    assert sensors["lidar"][1]["channels"] == "32" and sensors["lidar"][1]["points_per_second"] == "320000"
    assert sensors["radar_front"][1]["horizontal_fov"] == "30.0"

    assert standin.called("apply_settings")[0] == (True, 0.05)
    assert standin.called("tm_synchronous_mode") == [(True,), (False,)]
    assert standin.called("tm_seed") == [(3,)]
    assert standin.called("set_autopilot") == [(True, 8000)]
    assert standin.called("set_weather")[0] == ("WetCloudySunset",)
    assert standin.ticks == 4
    assert_world_restored(standin)

    messages = read_back(out)
    assert set(messages) == TOPICS
    assert all(len(m) == 4 for m in messages.values())
    clock = [msg_stamp_ns(m.clock) for m in messages["/clock"]]
    assert [frame_of(s) for s in clock] == [1001, 1002, 1003, 1004]
    for topic in TOPICS - {"/clock"}:  # one stamp per tick: the tick's simulation time
        assert [msg_stamp_ns(m.header.stamp) for m in messages[topic]] == clock, topic
        sensor = topic.split("/")[3]
        assert {m.header.frame_id for m in messages[topic]} == {f"ego_vehicle/{sensor}"}

    with AnyReader([out]) as reader:  # published as the bridge publishes: reliable, depth 10
        for conn in reader.connections:
            qos = conn.ext.offered_qos_profiles[0]
            assert (qos.reliability, qos.depth) == (QosReliability.RELIABLE, 10), conn.topic

    for i, stamp in enumerate(clock):
        frame = frame_of(stamp)
        image = messages["/carla/ego_vehicle/rgb_front/image"][i]
        assert (image.encoding, image.width, image.height, image.step) == ("bgra8", 800, 600, 3200)
        bgra = np.frombuffer(bytes(image.data), np.uint8).reshape(600, 800, 4)
        np.testing.assert_array_equal(bgra[:, :, 2::-1], np.roll(standin.camera_rgb, 8 * (frame % 100), axis=1))
        lidar = messages["/carla/ego_vehicle/lidar"][i]
        assert lidar.point_step == 16 and not lidar.is_dense
        np.testing.assert_allclose(np.stack([field(lidar, a) for a in "xyz"], 1), LIDAR_POINTS, atol=1e-5)
        assert set(field(lidar, "intensity")) == {frame}  # this tick's scan, not another's
        radar = messages["/carla/ego_vehicle/radar_front"][i]
        assert radar.point_step == 32 and [f.offset for f in radar.fields if f.name == "ElevationAngle"] == [28]
        np.testing.assert_allclose(np.stack([field(radar, a) for a in "xyz"], 1), RADAR_POINTS, atol=1e-4)
        np.testing.assert_allclose(field(radar, "Range"), np.linalg.norm(RADAR_POINTS, axis=1), rtol=1e-6)
        assert set(field(radar, "Velocity")) == {-frame}
    info = messages["/carla/ego_vehicle/rgb_front/camera_info"][0]
    np.testing.assert_allclose(info.k, [400, 0, 400, 0, 400, 300, 0, 0, 1])
    semantic = messages["/carla/ego_vehicle/semantic_segmentation_front/image"][0]
    bgra = np.frombuffer(bytes(semantic.data), np.uint8).reshape(600, 800, 4)
    assert bgra[10, 10].tolist() == [180, 130, 70, 255]  # sky in CityScapes palette colours, as the bridge
    assert bgra[500, 400].tolist() == [128, 64, 128, 255]  # road


def test_the_recording_feeds_emerdiff_bag_and_its_ground_truth_feeds_emerdiff_eval(server, tmp_path, capsys):
    server()
    drive, frames = tmp_path / "drive", tmp_path / "frames"
    assert rig("--record", str(drive), "--save-frames", str(frames), "--frames", "2") == 0
    out = tmp_path / "segmented"
    assert main(["bag", str(drive), str(out), *FAST]) == 0
    # the server's release (the stand-in's 0.9.16) travels with the drive into the segmented bag
    assert bag_custom_data(drive)[BAG_CARLA_VERSION_KEY] == bag_custom_data(out)[BAG_CARLA_VERSION_KEY] == "0.9.16"
    messages = read_back(out)
    labels = messages["/emerdiff/labels"]
    assert len(labels) == 2
    # the labelled LiDAR agrees with the label image at the pixels its points project to
    image = np.frombuffer(bytes(labels[0].data), np.uint8).reshape(600, 800)
    lidar = field(messages["/emerdiff/lidar/labeled"][0], "label")
    np.testing.assert_array_equal(lidar, [image[v, u] for u, v in PIXELS])
    assert NO_LABEL not in lidar and len(messages["/emerdiff/radar/labeled"]) == 2

    rgb, gt = sorted((frames / "rgb").iterdir()), sorted((frames / "gt").glob("*.png"))
    assert (frames / "gt" / FRAMES_MANIFEST).is_file()  # beside the ground truth: the release that made it
    assert [p.name for p in rgb] == [p.name for p in gt] == ["00001001.png", "00001002.png"]
    palette = ground_truth_format("carla-palette", "0.9.16")  # the 0.9.14+ colours of the 0.9.15/0.9.16 rig
    names = np.array(palette.classes)[palette.decode(read_label_image(gt[0], palette.encoding))]
    tags = carla_standin.semantic_tags(800, 600)
    expected = {1: "road", 3: "building", 11: "sky", 14: "car"}
    np.testing.assert_array_equal(names, np.vectorize(expected.get)(tags))
    predictions = tmp_path / "pred"
    predictions.mkdir()
    for path in gt:  # a perfect segmentation: any cluster ids, one per class
        PILImage.fromarray(tags + 5).save(predictions / f"{path.stem}_labels.png")
    capsys.readouterr()
    # no --carla-version: the frames record the release that made them
    assert main(["eval", "--pred", str(predictions), "--gt", str(frames / "gt"), "--gt-format", "carla-palette"]) == 0
    out = capsys.readouterr().out
    assert "ground truth: carla-palette-0.9.14" in out and "CARLA version 0.9.16 (recorded in" in out
    assert out.strip().splitlines()[-1].startswith("mIoU: 100.00 ")


@pytest.mark.parametrize("failure, status", [("fail_at", 1), ("interrupt_at", 130)])
def test_an_error_or_ctrl_c_mid_drive_leaves_the_world_as_it_was_and_a_valid_bag(server, tmp_path, capsys,
                                                                                 failure, status):
    standin = server(**{failure: 3})
    out = tmp_path / "drive"
    assert rig("--record", str(out), "--weather", "ClearNoon") == status
    err = capsys.readouterr().err
    if failure == "fail_at":
        assert "error: CARLA: time-out of 10000ms" in err and "Traceback" not in err
    assert_world_restored(standin)
    messages = read_back(out)  # the two ticks before it, whole
    assert set(messages) == TOPICS and all(len(m) == 2 for m in messages.values())


def test_a_failure_half_way_through_the_set_up_destroys_what_was_spawned(server, tmp_path, capsys):
    standin = server()
    objects = json.loads(RIG_FILE.read_text())
    ego = next(o for o in objects["objects"] if o["id"] == "ego_vehicle")
    ego["sensors"][2]["warp_drive"] = 9  # the LiDAR's blueprint has no such attribute
    rig_file = tmp_path / "rig.json"
    rig_file.write_text(json.dumps(objects))
    assert rig("--sensors", str(rig_file), "--record", str(tmp_path / "drive"), "--frames", "2") == 2
    assert "sensor lidar: sensor.lidar.ray_cast has no attribute 'warp_drive'" in capsys.readouterr().err
    assert len(standin.called("spawn_actor")) == 3 and standin.ticks == 0
    assert_world_restored(standin)


def test_the_surround_rig_records_every_cameras_topics(server, tmp_path):
    standin = server()
    surround, out = ROOT / "config" / "carla_surround.json", tmp_path / "drive"
    assert rig("--sensors", str(surround), "--record", str(out), "--frames", "2") == 0
    transforms = {s[1]["role_name"]: s[2] for s in standin.called("spawn_actor")}
    assert transforms["rgb_left"][4] == -90.0  # ROS yaw +90 (left) is CARLA's -90: its y points right
    messages = read_back(out)
    cameras = [s.id for s in load_rig(surround).sensors if s.kind in ("camera", "semantic")]
    assert len(cameras) == 8
    assert {f"/carla/ego_vehicle/{c}/{topic}" for c in cameras for topic in ("image", "camera_info")} <= set(messages)
    assert all(len(m) == 2 for m in messages.values())
    assert_world_restored(standin)


def test_a_sensor_silent_for_a_tick_is_counted_and_the_others_are_recorded(server, tmp_path, capsys):
    server(silent={2: ["lidar"]})
    out = tmp_path / "drive"
    assert rig("--record", str(out), "--frames", "3", "--timeout", "0.5") == 0
    assert "sensor data missing: lidar 1" in capsys.readouterr().out
    messages = read_back(out)
    assert len(messages["/carla/ego_vehicle/lidar"]) == 2
    assert all(len(messages[t]) == 3 for t in TOPICS - {"/carla/ego_vehicle/lidar"})
    stamps = {msg_stamp_ns(m.header.stamp) for m in messages["/carla/ego_vehicle/lidar"]}
    assert {frame_of(s) for s in stamps} == {1001, 1003}


def test_ros2_mode_enables_native_publishing_on_every_sensor(server, tmp_path, capsys):
    standin = server()
    objects = json.loads(RIG_FILE.read_text())  # a camera 0.5 m to the left, nose 10 degrees up, 5 to the right
    camera = next(o for o in objects["objects"] if o["id"] == "ego_vehicle")["sensors"][0]
    camera["spawn_point"] = {"x": 1.5, "y": 0.5, "z": 1.8, "roll": 0.0, "pitch": -10.0, "yaw": -5.0}
    rig_file = tmp_path / "rig.json"
    rig_file.write_text(json.dumps(objects))
    assert rig("--sensors", str(rig_file), "--ros2", "--frames", "2", "--no-autopilot", "--town", "Town03") == 0
    assert standin.called("load_world") == [("Town03",)] and standin.calls.index(("load_world", "Town03")) == 0
    transforms = {s[1]["role_name"]: s[2] for s in standin.called("spawn_actor")}
    assert transforms["rgb_front"] == (1.5, -0.5, 1.8, 10.0, 5.0, 0.0)  # CARLA: y right, pitch nose up, yaw right
    assert [c[0] for c in standin.called("enable_for_ros")] == ["rgb_front", "semantic_segmentation_front",
                                                                "lidar", "radar_front"]
    assert standin.called("listen") == [] and standin.called("set_autopilot") == []
    printed = capsys.readouterr().out
    assert "/carla/ego_vehicle/rgb_front/image" in printed and "/clock" in printed
    assert_world_restored(standin)


def test_a_sensor_with_a_slower_sensor_tick_is_waited_for_only_on_the_ticks_it_measures(server, tmp_path, capsys):
    server(silent={3: ["lidar"]})  # its data of the third tick are lost
    objects = json.loads(RIG_FILE.read_text())
    lidar = next(o for o in objects["objects"] if o["id"] == "ego_vehicle")["sensors"][2]
    lidar["sensor_tick"] = 0.1  # every other tick of the 0.05 s step
    rig_file, out = tmp_path / "rig.json", tmp_path / "drive"
    rig_file.write_text(json.dumps(objects))
    assert rig("--sensors", str(rig_file), "--record", str(out), "--frames", "6", "--timeout", "2") == 0
    assert "sensor data missing: lidar 1;" in capsys.readouterr().out  # the lost one; not the ticks it skips
    messages = read_back(out)
    assert [frame_of(msg_stamp_ns(m.header.stamp)) for m in messages["/carla/ego_vehicle/lidar"]] == [1001, 1005]
    assert all(len(messages[t]) == 6 for t in TOPICS - {"/carla/ego_vehicle/lidar"})


def test_a_server_of_another_release_is_a_warning_and_strict_version_refuses_it(server, tmp_path, capsys):
    standin = server(version="0.9.15")
    assert rig("--frames", "1", "--strict-version") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the carla client is 0.9.16 but the server at localhost:2999 is 0.9.15" in err[0]
    assert err[0].endswith(matching_client("0.9.15")) and standin.calls == []
    assert rig("--frames", "1") == 0  # as CARLA's own client: it warns and goes on
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "warning: the carla client is 0.9.16 but the server" in err[0]
    assert matching_client("0.9.15") in err[0] and "--strict-version" in err[0]
    assert standin.ticks == 1
    assert_world_restored(standin)


def test_the_client_to_install_depends_on_the_wheels_pypi_has_for_this_python():
    assert matching_client("0.9.15", (3, 10)) == "pip install carla==0.9.15"
    assert matching_client("0.9.15-dirty", (3, 12)).startswith("PyPI has carla==0.9.15 for Python 3.7-3.10 only, "
                                                               "not 3.12")
    assert matching_client("0.9.14", (3, 12)).startswith("PyPI has carla==0.9.14 for Python 3.7-3.8 only")
    assert matching_client("0.9.16", (3, 12)) == "pip install carla==0.9.16"
    assert "no carla==0.9.10 client" in matching_client("0.9.10", (3, 12))


def test_user_errors_stop_before_touching_the_world(server, tmp_path, capsys):
    standin = server()
    (tmp_path / "taken").mkdir()
    assert rig("--record", str(tmp_path / "taken")) == 2
    assert rig("--weather", "Sunny") == 2
    assert rig("--sensors", str(tmp_path / "missing.json")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and "never overwrites" in err[0] and "ClearNoon" in err[1] and "no such rig file" in err[2]
    assert standin.calls == []


def test_without_the_carla_client_the_rig_says_what_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "carla", None)  # `import carla` fails as when it is not installed
    assert rig("--frames", "1") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install carla==" in err[0]


def test_a_stand_in_without_a_server_fails_like_the_real_client(monkeypatch, capsys):
    carla_standin.install(None, monkeypatch)
    assert rig("--timeout", "0.5") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "CarlaUE4.sh -RenderOffScreen" in err[0]


class Output:
    """A process's output (stdout and stderr), read as it comes, so a test can wait for a line."""

    def __init__(self, process: subprocess.Popen):
        self.process, self.text = process, ""
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while chunk := os.read(self.process.stdout.fileno(), 4096):
            with self._changed:
                self.text += chunk.decode(errors="replace")
                self._changed.notify_all()

    def wait_for(self, text: str, timeout: float = 120) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: text in self.text, timeout):
                raise AssertionError(f"no {text!r} within {timeout} s; the output: {self.text}")

    def finish(self, timeout: float) -> str:
        """The whole output, once the process has ended (within `timeout` seconds)."""
        self.process.wait(timeout)
        self._reader.join(timeout)
        return self.text


@pytest.fixture
def processes():
    """Starts processes whose output a test reads; kills whichever still runs when the test ends."""
    started: list[Output] = []

    def start(command: list[str]) -> tuple[subprocess.Popen, Output]:
        process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   env={**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'test'}"})
        started.append(Output(process))
        return process, started[-1]
    yield start
    for output in started:
        if output.process.poll() is None:
            output.process.kill()
        output.finish(60)
        output.process.stdout.close()


def _rig_process(processes, args: list[str], state: Path, **server) -> tuple[subprocess.Popen, Output]:
    """carla_rig in its own process against the stand-in (a tick takes 20 ms, as a small server),
    which writes the number of the tick it is in to state.ticking and its final state to `state`."""
    code = (
        "import atexit, json, sys; sys.path.insert(0, 'test')\n"
        "import numpy as np, carla_standin\n"
        "from bag_builder import LIDAR_POINTS, RADAR_POINTS\n"
        "server = carla_standin.install(carla_standin.Server(np.zeros((600, 800, 3), np.uint8), LIDAR_POINTS,\n"
        f"    RADAR_POINTS, delay=0.02, progress_file={str(state) + '.ticking'!r}, **{server!r})).SERVER\n"
        f"atexit.register(lambda: open({str(state)!r}, 'w').write(json.dumps(dict(actors=len(server.actors),\n"
        "    sync=server.settings.synchronous_mode, tm=server.tm_synchronous, ticks=server.ticks))))\n"
        "from emerdiff_ros.carla.command import main\n"
        f"sys.exit(main({args!r}))\n")
    return processes([sys.executable, "-c", code])


def _wait_for_tick(state: Path, tick: int, output: Output) -> None:
    ticking, deadline = Path(str(state) + ".ticking"), time.monotonic() + 120
    while time.monotonic() < deadline and output.process.poll() is None:
        if ticking.exists() and ticking.read_text() and int(ticking.read_text()) >= tick:
            return
        time.sleep(0.02)
    raise AssertionError(f"the rig never reached tick {tick}: {output.text}")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_stops_after_the_tick_cleans_up_and_leaves_a_valid_bag(processes, tmp_path, signum):
    out, state = tmp_path / "drive", tmp_path / "state.json"
    process, output = _rig_process(processes, ["--record", str(out)], state)
    _wait_for_tick(state, 3, output)  # two ticks done, the third under way
    process.send_signal(signum)
    printed = output.finish(60)
    assert process.returncode == 0, printed
    assert "stopping after this tick" in printed and "Traceback" not in printed
    final = json.loads(state.read_text())
    assert final["actors"] == 0 and final["sync"] is False and final["tm"] is False
    messages = read_back(out)
    assert set(messages) == TOPICS
    assert {len(m) for m in messages.values()} == {final["ticks"]} and final["ticks"] >= 3  # whole ticks only


def test_a_second_ctrl_c_interrupts_a_hung_tick_at_once_and_still_cleans_up(processes, tmp_path):
    out, state = tmp_path / "drive", tmp_path / "state.json"
    process, output = _rig_process(processes, ["--record", str(out)], state, hang_at=3)
    _wait_for_tick(state, 3, output)  # two ticks, then the server hangs for a minute, signals held off
    process.send_signal(signal.SIGINT)
    output.wait_for("stopping after this tick", timeout=20)  # said during the hung tick, not after it
    process.send_signal(signal.SIGINT)
    printed = output.finish(30)
    assert process.returncode == 130, printed
    assert "carla_rig: interrupted" in printed and "Traceback" not in printed
    final = json.loads(state.read_text())
    assert final["actors"] == 0 and final["sync"] is False and final["tm"] is False
    assert {len(m) for m in read_back(out).values()} == {2}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _real_carla():
    """The installed carla client, or a skip: its wheels exist for some Pythons and platforms only."""
    found = subprocess.run([sys.executable, "-c", "import carla, sys; sys.exit(0 if hasattr(carla, 'Client') else 1)"],
                           cwd="/", capture_output=True)
    if found.returncode:
        pytest.skip("the carla client is not installed here")


def test_the_real_client_without_a_server_gives_one_line_and_a_non_zero_status():
    _real_carla()
    result = subprocess.run([sys.executable, "-m", "emerdiff_ros.carla.command", "--host", "127.0.0.1",
                             "--port", str(_free_port()), "--timeout", "0.5"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "time-out" in lines[0] and "CarlaUE4.sh -RenderOffScreen" in lines[0], result.stderr


def test_ctrl_c_while_the_real_client_waits_for_the_server_ends_the_rig_at_once(processes):
    _real_carla()
    with socket.socket() as listener:  # accepts the client's connection and never answers it
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(120)
        process, output = processes([sys.executable, "-m", "emerdiff_ros.cli", "carla", "--host", "127.0.0.1",
                                     "--port", str(listener.getsockname()[1]), "--timeout", "30"])
        connection, _ = listener.accept()
        with connection:
            assert b"version" in connection.recv(64)  # its request: the rig now waits in get_server_version()
            sent = time.monotonic()
            process.send_signal(signal.SIGINT)
            printed = output.finish(60)
            took = time.monotonic() - sent
    assert process.returncode == 130, printed
    assert printed.strip().splitlines() == ["emerdiff carla: interrupted"]
    assert took < 10, f"{took:.1f} s from Ctrl-C to the end: the 30 s connection timeout was waited out"


def test_the_stand_in_only_uses_names_the_real_client_has():
    _real_carla()
    code = ("import json, carla, sys; sys.path.insert(0, 'test'); import carla_standin\n"
            "missing = [f'{name}.{attr}' for name, cls in carla_standin.SURFACE.items()\n"
            "           for attr in dir(cls) if not attr.startswith('_') and not hasattr(getattr(carla, name), attr)]\n"
            "print(json.dumps(missing))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_carla_rig_is_installed_as_a_console_script():
    setup = (ROOT / "setup.py").read_text()
    assert '"carla_rig = emerdiff_ros.carla.command:main"' in setup
    assert "script_dir=$base/lib/emerdiff_ros" in (ROOT / "setup.cfg").read_text()  # where `ros2 run` looks
