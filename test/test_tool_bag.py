"""`emerdiff bag`: CARLA-like bags in, a new rosbag2 with the node's outputs out, read back with rclpy."""

import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from bag_builder import (COMPRESSED_TOPIC, PIXELS, TOPICS, field, frame_stamp, read_back, write_bag,
                         write_surround_bag)
from emerdiff_ros.cli import main
from emerdiff_ros.runtime.clouds import NO_CAMERA, NO_LABEL
from emerdiff_ros.runtime.messages import stamp_ns
from emerdiff_ros.tools.bag import work_dir
from ros_harness import running
from tiny import flags

FAST = flags()


@pytest.mark.parametrize("kind, storage", [("mcap", "mcap"), ("sqlite3", "sqlite3"), ("ros1", "mcap")])
def test_a_segmented_bag_holds_every_input_and_the_nodes_outputs(tmp_path, carla_frame, kind, storage):
    source = write_bag(tmp_path / ("in.bag" if kind == "ros1" else "in"), carla_frame, frames=3, kind=kind)
    out = tmp_path / "out"
    assert main(["bag", str(source), str(out), "--storage", storage, *FAST]) == 0
    messages = read_back(out)
    for topic in TOPICS.values():
        assert len(messages[topic]) == 3, topic  # every input message, once
    stamps = [frame_stamp(i) for i in range(3)]
    for topic, encoding in (("/emerdiff/labels", "mono8"), ("/emerdiff/overlay", "rgb8"),
                            ("/emerdiff/projection", "rgb8")):
        assert [stamp_ns(m.header.stamp) for m in messages[topic]] == stamps
        assert all(m.encoding == encoding and (m.width, m.height) == (800, 600) for m in messages[topic])
        assert all(m.header.frame_id == "ego_vehicle/rgb_front" for m in messages[topic])
    for sensor, frame_id in (("lidar", "ego_vehicle/lidar"), ("radar", "ego_vehicle/radar_front")):
        for kind_ in ("points", "labeled"):
            clouds = messages[f"/emerdiff/{sensor}/{kind_}"]
            assert [stamp_ns(m.header.stamp) for m in clouds] == stamps
            assert all(m.header.frame_id == frame_id for m in clouds)
        original = messages[TOPICS[sensor]][0]
        assert bytes(messages[f"/emerdiff/{sensor}/points"][0].data) == bytes(original.data)
    # the labelled LiDAR agrees with the label image at the pixels its points were placed on
    labels = np.frombuffer(bytes(messages["/emerdiff/labels"][0].data), np.uint8).reshape(600, 800)
    lidar = field(messages["/emerdiff/lidar/labeled"][0], "label")
    np.testing.assert_array_equal(lidar, [labels[v, u] for u, v in PIXELS])
    assert NO_LABEL not in lidar
    assert not work_dir(out).exists()


def test_a_compressed_camera_stream_is_segmented_like_the_raw_one(tmp_path, carla_frame):
    raw = write_bag(tmp_path / "raw", carla_frame, frames=2)
    png = write_bag(tmp_path / "png", carla_frame, frames=2, compressed=True)
    assert main(["bag", str(raw), str(tmp_path / "raw_out"), *FAST]) == 0
    assert main(["bag", str(png), str(tmp_path / "png_out"), "--image-topic", COMPRESSED_TOPIC, *FAST]) == 0
    expected, got = read_back(tmp_path / "raw_out"), read_back(tmp_path / "png_out")
    assert len(got[COMPRESSED_TOPIC]) == 2  # the input, copied
    for topic in ("/emerdiff/labels", "/emerdiff/overlay", "/emerdiff/lidar/labeled", "/emerdiff/radar/labeled"):
        assert [m.header for m in got[topic]] == [m.header for m in expected[topic]], topic
        assert [bytes(m.data) for m in got[topic]] == [bytes(m.data) for m in expected[topic]], topic


def test_a_native_carla_bag_is_labelled_with_camera_fov_byte_for_byte_as_the_node_labels_it(tmp_path, carla_frame):
    one_frame = write_bag(tmp_path / "one", carla_frame, frames=1, native_info=True)
    assert main(["bag", str(one_frame), str(tmp_path / "no_fov"), *FAST]) == 0
    assert not read_back(tmp_path / "no_fov")["/emerdiff/lidar/labeled"]  # CARLA's camera_info has no intrinsics
    source = write_bag(tmp_path / "in", carla_frame, frames=2, native_info=True)
    assert main(["bag", str(source), str(tmp_path / "out"), "--camera-fov", "90", *FAST]) == 0
    offline = read_back(tmp_path / "out")
    labels = np.frombuffer(bytes(offline["/emerdiff/labels"][0].data), np.uint8).reshape(600, 800)
    np.testing.assert_array_equal(field(offline["/emerdiff/lidar/labeled"][0], "label"),
                                  [labels[v, u] for u, v in PIXELS])
    # The same messages through the live node, over DDS: the same outputs, byte for byte.
    recorded = read_back(source)
    with running(camera_fov=90.0) as (node, bridge):
        for i in range(2):
            bridge.info.publish(recorded[TOPICS["info"]][i])
            bridge.lidar.publish(recorded[TOPICS["lidar"]][i])
            bridge.radar.publish(recorded[TOPICS["radar"]][i])
            bridge.image.publish(recorded[TOPICS["image"]][i])
            for name in ("labels", "overlay", "projection", "lidar/labeled", "radar/labeled"):
                assert len(bridge.out[name].wait(i + 1)) == i + 1, name
    for name in ("labels", "overlay", "projection", "lidar/labeled", "radar/labeled"):
        live, bag = bridge.out[name].messages, offline[f"/emerdiff/{name}"]
        assert [m.header for m in live] == [m.header for m in bag], name
        assert [bytes(m.data) for m in live] == [bytes(m.data) for m in bag], name


def test_every_nth_frame_and_inputs_never_overwritten(tmp_path, carla_frame, capsys):
    source = write_bag(tmp_path / "in", carla_frame, frames=3)
    out = tmp_path / "out"
    assert main(["bag", str(source), str(out), "--every", "2", *FAST]) == 0
    assert "frames: 3 in the bag, 2 selected, 2 segmented now" in capsys.readouterr().out
    messages = read_back(out)
    assert [stamp_ns(m.header.stamp) for m in messages["/emerdiff/labels"]] == [frame_stamp(0), frame_stamp(2)]
    before = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in source.iterdir())
    for target in (out, source, source / "sub"):
        with pytest.raises(SystemExit):
            main(["bag", str(source), str(target), *FAST])
    assert sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in source.iterdir()) == before
    with pytest.raises(SystemExit):  # a segmented bag is not segmented again into the same topics
        main(["bag", str(out), str(tmp_path / "again"), *FAST])


def test_a_missing_image_topic_lists_the_bags_image_topics(tmp_path, carla_frame, capsys):
    source = write_bag(tmp_path / "in", carla_frame, frames=1)
    with pytest.raises(SystemExit):
        main(["bag", str(source), str(tmp_path / "out"), "--image-topic", "/camera", *FAST])
    assert TOPICS["image"] in capsys.readouterr().err


def run_bag(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "emerdiff_ros.cli", "bag", *args, *FAST],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGINT], ids=["crash", "ctrl-c"])
def test_an_interrupted_run_resumes_without_duplicating_or_dropping_frames(tmp_path, carla_frame, stop):
    source = write_bag(tmp_path / "in", carla_frame, frames=4)
    whole = tmp_path / "whole"
    assert main(["bag", str(source), str(whole), *FAST]) == 0  # the uninterrupted run, here: no process start

    out = tmp_path / "out"
    process = run_bag(str(source), str(out))
    frames = work_dir(out) / "frames"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(list(frames.glob("0*.npz")) if frames.exists() else []) < 2:
        time.sleep(0.05)
    process.send_signal(stop)
    printed, _ = process.communicate(timeout=60)
    if stop == signal.SIGINT:
        assert process.returncode == 130
        assert "emerdiff bag: interrupted (run it again with --resume to finish)" in printed.splitlines()
        assert "Traceback" not in printed
    assert not out.exists() and work_dir(out).exists()
    cached = len(list(frames.glob("0*.npz")))
    assert 2 <= cached < 4
    resumed = run_bag(str(source), str(out), "--resume")
    output, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, output
    assert f"{4 - cached} segmented now, {cached} from the interrupted run" in output

    expected, got = read_back(whole), read_back(out)
    assert Counter({t: len(m) for t, m in got.items()}) == Counter({t: len(m) for t, m in expected.items()})
    for topic in ("/emerdiff/labels", "/emerdiff/lidar/labeled"):
        assert [bytes(m.data) for m in got[topic]] == [bytes(m.data) for m in expected[topic]], topic
    assert not work_dir(out).exists()


SURROUND_RIG = Path(__file__).resolve().parents[1] / "config" / "carla_surround.json"
CAMERAS = ("rgb_front", "rgb_left")
SURROUND_FLAGS = ["--cameras", *CAMERAS, "--rig-file", str(SURROUND_RIG), "--fov-from-rig"]
# In the LiDAR's frame at the cameras' height (the LiDAR sits 0.4 m above them): ahead of the front camera,
# left of the left camera, behind the car where neither looks.
AROUND = np.array([[12.0, 0.0, -0.4], [0.0, 11.0, -0.4], [-12.0, 0.0, -0.4]])


def camera_stamp(i: int, camera: str) -> int:
    return frame_stamp(i) + 1_000_000 * CAMERAS.index(camera)  # as write_surround_bag stamps them


def test_a_surround_bag_labels_every_camera_and_fuses_the_lidar_in_one_label_space(tmp_path, carla_frame, capsys):
    source = write_surround_bag(tmp_path / "in", carla_frame, CAMERAS, AROUND, frames=2)
    assert main(["bag", str(source), str(tmp_path / "out"), *SURROUND_FLAGS, *FAST]) == 0
    assert "surround frames: 2 complete, 0 partial" in capsys.readouterr().out
    messages = read_back(tmp_path / "out")
    for camera in CAMERAS:
        for name in ("labels", "overlay", "projection"):
            images = messages[f"/emerdiff/{camera}/{name}"]
            assert [stamp_ns(m.header.stamp) for m in images] == [camera_stamp(i, camera) for i in range(2)], name
            assert all(m.header.frame_id == f"ego_vehicle/{camera}" for m in images)
    fused = messages["/emerdiff/lidar/labeled"]
    assert [stamp_ns(m.header.stamp) for m in fused] == [frame_stamp(i) for i in range(2)]  # the first camera's
    assert all(m.header.frame_id == "ego_vehicle/lidar" for m in fused)
    front = np.frombuffer(bytes(messages["/emerdiff/rgb_front/labels"][0].data), np.uint8).reshape(600, 800)
    left = np.frombuffer(bytes(messages["/emerdiff/rgb_left/labels"][0].data), np.uint8).reshape(600, 800)
    np.testing.assert_array_equal(front, left)  # one view in both cameras, one label space: the same labels
    assert list(field(fused[0], "camera")) == [0, 1, NO_CAMERA]
    assert list(field(fused[0], "label")) == [front[300, 400], front[300, 400], NO_LABEL]
    assert "/emerdiff/labels" not in messages and not messages["/emerdiff/radar/labeled"]


def test_an_unreadable_image_logged_after_its_frames_outputs_is_counted_once(tmp_path, carla_frame, capsys):
    source = write_surround_bag(tmp_path / "in", carla_frame, CAMERAS, AROUND, frames=2,
                                unreadable=frozenset({(0, "rgb_left")}))
    assert main(["bag", str(source), str(tmp_path / "out"), *SURROUND_FLAGS, *FAST]) == 0
    printed = capsys.readouterr().out
    assert ", 1 bad" in printed and "surround frames: 1 complete, 1 partial" in printed
    messages = read_back(tmp_path / "out")
    assert len(messages["/emerdiff/rgb_front/labels"]) == 2 and len(messages["/emerdiff/rgb_left/labels"]) == 1


def test_a_surround_frame_is_segmented_alike_whichever_camera_the_bag_logged_first(tmp_path, carla_frame):
    views = {"rgb_front": carla_frame, "rgb_left": np.ascontiguousarray(carla_frame[::-1])}
    labels = []
    for order in (CAMERAS, CAMERAS[::-1]):
        source = write_surround_bag(tmp_path / f"in_{order[0]}", views, order, AROUND, frames=1)
        assert main(["bag", str(source), str(tmp_path / f"out_{order[0]}"), *SURROUND_FLAGS, *FAST]) == 0
        messages = read_back(tmp_path / f"out_{order[0]}")
        labels.append([bytes(messages[f"/emerdiff/{camera}/labels"][0].data) for camera in CAMERAS])
    assert labels[0] == labels[1]  # k-means sees the cameras in the order of --cameras, as the node does


def test_a_surround_frame_without_a_cameras_image_is_segmented_with_the_others_and_counted(tmp_path, carla_frame,
                                                                                           capsys):
    source = write_surround_bag(tmp_path / "in", carla_frame, CAMERAS, AROUND, frames=3,
                                missing=frozenset({(1, "rgb_left")}))
    assert main(["bag", str(source), str(tmp_path / "out"), *SURROUND_FLAGS, *FAST]) == 0
    printed = capsys.readouterr().out
    assert "frames: 3 in the bag, 3 selected, 3 segmented now" in printed
    assert "surround frames: 2 complete, 1 partial" in printed
    messages = read_back(tmp_path / "out")
    assert [stamp_ns(m.header.stamp) for m in messages["/emerdiff/rgb_front/labels"]] == [
        camera_stamp(i, "rgb_front") for i in range(3)]
    assert [stamp_ns(m.header.stamp) for m in messages["/emerdiff/rgb_left/labels"]] == [
        camera_stamp(i, "rgb_left") for i in (0, 2)]
    fused = messages["/emerdiff/lidar/labeled"]
    assert [list(field(cloud, "camera")) for cloud in fused] == [[0, 1, NO_CAMERA], [0, NO_CAMERA, NO_CAMERA],
                                                                 [0, 1, NO_CAMERA]]


def test_surround_inputs_come_from_the_rig(tmp_path, carla_frame, capsys):
    source = write_surround_bag(tmp_path / "in", carla_frame, CAMERAS, AROUND, frames=1)
    with pytest.raises(SystemExit):  # the camera topics are the rig's: a single camera's flag says nothing
        main(["bag", str(source), str(tmp_path / "out"), *SURROUND_FLAGS, "--image-topic", "/camera", *FAST])
    assert "--image-topic" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bag", str(source), str(tmp_path / "out"), *SURROUND_FLAGS, "--cameras", "rgb_front", "rgb_top",
              *FAST])
    assert "rgb_top" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # the rig's rgb_rear has no images in the bag
        main(["bag", str(source), str(tmp_path / "out"), *SURROUND_FLAGS, "--cameras", "rgb_front", "rgb_rear",
              *FAST])
    assert "/carla/ego_vehicle/rgb_rear/image" in capsys.readouterr().err


def test_a_surround_bag_holds_byte_for_byte_what_the_node_publishes_for_it(tmp_path, carla_frame):
    from test_node_surround import surround_node

    source = write_surround_bag(tmp_path / "in", carla_frame, CAMERAS, AROUND, frames=2)
    assert main(["bag", str(source), str(tmp_path / "out"), *SURROUND_FLAGS, *FAST]) == 0
    offline, recorded = read_back(tmp_path / "out"), read_back(source)
    names = [f"{camera}/{name}" for camera in CAMERAS for name in ("labels", "overlay", "projection")] + [
        "lidar/points", "lidar/labeled"]
    with surround_node() as (node, bridge):
        for i in range(2):
            bridge.lidar.publish(recorded[TOPICS["lidar"]][i])
            for camera in CAMERAS:
                bridge.images[camera].publish(recorded[f"/carla/ego_vehicle/{camera}/image"][i])
            for name in names:
                assert len(bridge.out[name].wait(i + 1)) == i + 1, name
    for name in names:
        live, bag = bridge.out[name].messages, offline[f"/emerdiff/{name}"]
        assert [m.header for m in live] == [m.header for m in bag], name
        assert [bytes(m.data) for m in live] == [bytes(m.data) for m in bag], name
