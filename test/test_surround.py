"""Surround perception without ROS: one label space over the cameras, devices, gathering, fused clouds."""

from pathlib import Path

import numpy as np
import pytest

from emerdiff_ros.engine import Segmenter
from emerdiff_ros.engine.jobs import FeaturesJob, LabelJob
from emerdiff_ros.engine.masks import assign_to_centers, fit_centers
from emerdiff_ros.engine.surround import SurroundJob, one_by_one, segment_surround
from emerdiff_ros.rig import RigError
from emerdiff_ros.runtime.clouds import NO_CAMERA, NO_LABEL
from emerdiff_ros.runtime.counters import Count
from emerdiff_ros.runtime.outputs import SensorCloud, output_table
from emerdiff_ros.runtime.pipeline import FramePipeline, load_on_devices
from emerdiff_ros.runtime.projection import CameraModel
from emerdiff_ros.runtime.rigging import surround_rig
from emerdiff_ros.runtime.settings import StreamSettings
from emerdiff_ros.runtime.step import FrameStep
from emerdiff_ros.runtime.surround import SurroundGatherer
from test_outputs import cloud_of
from tiny import config

SURROUND_RIG = str(Path(__file__).resolve().parents[1] / "config" / "carla_surround.json")
FRONT_LEFT = StreamSettings(cameras=("rgb_front", "rgb_left"), rig_file=SURROUND_RIG, fov_from_rig=True)


@pytest.fixture(scope="module")
def tiny(tiny_model):
    return Segmenter(tiny_model, config())


def crops(frame: np.ndarray) -> list[np.ndarray]:
    """Three views of one scene: its left, middle and right parts, overlapping."""
    width = frame.shape[1]
    return [frame[:, : width // 2], frame[:, width // 4 : 3 * width // 4], frame[:, width // 2 :]]


def test_a_surround_frame_is_clustered_once_over_every_camera(tiny, carla_frame):
    images = crops(carla_frame)
    results = segment_surround(images, "emerdiff", tiny.config, one_by_one(tiny))
    # The oracle: k-means over every camera's features together, each camera's masks from those centres.
    found = [FeaturesJob(image).run(tiny) for image in images]
    cfg = tiny.config
    centers = fit_centers([f.features.reshape(-1, f.features.shape[-1]) for f in found], cfg.num_masks,
                          cfg.kmeans_restarts, cfg.seed)
    for result, features in zip(results, found):
        np.testing.assert_array_equal(result.masks.centers, centers)
        np.testing.assert_array_equal(result.masks.grid, assign_to_centers(features.features, centers).grid)
        np.testing.assert_array_equal(result.labels, LabelJob(features, centers).run(tiny).labels)
    # Clustered alone, a camera gets centres of its own: the label spaces would differ.
    assert not np.allclose(tiny.segment(images[1]).masks.centers, centers)


def test_a_whole_surround_frame_is_one_job_for_a_pool_of_workers(tiny, carla_frame):
    images = crops(carla_frame)[:2]
    in_rounds = segment_surround(images, "lowres", tiny.config, one_by_one(tiny))
    as_job = SurroundJob(tuple(images), "lowres").run(tiny)
    for a, b in zip(in_rounds, as_job):
        np.testing.assert_array_equal(a.labels, b.labels)


def test_tracking_gives_a_cluster_one_value_in_every_camera_and_keeps_it(tiny, carla_frame):
    images = crops(carla_frame)
    pipeline = FramePipeline([tiny], tiny.config, StreamSettings())
    first = pipeline.segment_surround(images)
    assert pipeline.tracker.size == tiny.config.num_masks  # one set of tracked clusters for all cameras
    second = pipeline.segment_surround(images)
    assert pipeline.tracker.size == tiny.config.num_masks
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a.labels, b.labels)


def test_two_devices_give_the_labels_one_device_gives(carla_frame):
    images = crops(carla_frame)
    cfg = config()
    one = FramePipeline(load_on_devices(cfg, "emerdiff", ()), cfg, StreamSettings())
    two = FramePipeline(load_on_devices(cfg, "emerdiff", ("cpu", "cpu")), cfg, StreamSettings())
    try:
        assert len(two.devices) == 2
        for a, b in zip(one.segment_surround(images), two.segment_surround(images)):
            np.testing.assert_array_equal(a.labels, b.labels)
    finally:
        two.close()


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def gatherer(clock: Clock, cameras=("front", "left")) -> SurroundGatherer:
    return SurroundGatherer(cameras, slop_ns=10, timeout_s=0.5, clock=clock)


def test_a_surround_frame_goes_out_when_every_camera_sent_its_frame():
    clock = Clock()
    gather = gatherer(clock)
    assert gather.add("left", 1000, "L").ready is None
    ready = gather.add("front", 1005, "F").ready  # within sync_slop of the first frame
    assert ready.stamp == 1000 and ready.frames == {"front": "F", "left": "L"} and ready.complete
    assert gather.add("left", 1003, "late").late  # its surround frame went out already


def test_a_silent_camera_costs_one_timeout_then_is_not_waited_for():
    clock = Clock()
    gather = gatherer(clock)
    assert gather.add("front", 1000, "F1").ready is None
    clock.now = 0.4
    assert gather.poll().ready is None
    clock.now = 0.5
    timed_out = gather.poll()
    assert timed_out.ready.frames == {"front": "F1"} and timed_out.ready.missing == ("left",)
    assert timed_out.silenced == ("left",)
    assert gather.add("front", 2000, "F2").ready.missing == ("left",)  # at once: left is silent
    back = gather.add("left", 3000, "L3")
    assert back.returned and back.ready is None  # left is back: waited for again
    assert gather.add("front", 3000, "F3").ready.complete


def test_a_newer_surround_frame_gives_up_the_older_ones_still_gathering():
    clock = Clock()
    gather = gatherer(clock)
    gather.add("front", 1000, "F1")
    gather.add("front", 2000, "F2")
    out = gather.add("left", 2000, "L2")
    assert out.ready.stamp == 2000 and out.dropped == {"front": 1}


def test_a_bag_that_loops_goes_on_giving_surround_frames():
    clock = Clock()
    gather = gatherer(clock)
    sent = []
    for loop in range(3):  # a 5-tick bag played three times: its stamps go back twice
        for tick in range(5):
            stamp = 1000 + 100 * tick
            gather.add("front", stamp, (loop, tick))
            out = gather.add("left", stamp + 5, (loop, tick))
            assert not out.late and not out.dropped
            sent.append(out.ready.frames["front"])
    assert sent == [(loop, tick) for loop in range(3) for tick in range(5)]


def test_a_camera_that_is_behind_is_not_called_silent():
    clock = Clock()
    gather = gatherer(clock)
    gather.add("front", 1000, "F1")
    clock.now = 0.3
    gather.add("left", 2000, "L2")  # left lost tick 1000 but is sending
    clock.now = 0.5
    out = gather.poll()
    assert out.ready.frames == {"front": "F1"} and out.ready.missing == ("left",)
    assert out.silenced == ()
    assert gather.add("front", 2000, "F2").ready.complete  # left is still waited for


def test_a_stop_sends_the_surround_frame_still_gathering_with_the_cameras_it_has():
    clock = Clock()
    gather = gatherer(clock)
    gather.add("front", 1000, "F1")
    gather.add("left", 2000, "L2")
    out = gather.flush()
    assert out.ready.frames == {"left": "L2"} and out.ready.missing == ("front",) and out.dropped == {"front": 1}
    assert gather.flush().ready is None


def test_points_are_labelled_by_the_camera_they_land_nearest_the_centre_of():
    rig = surround_rig(FRONT_LEFT)
    front, left = np.zeros((60, 80), np.uint8), np.zeros((60, 80), np.uint8)
    front[:, :40], front[:, 40:], left[:] = 1, 2, 3
    lidar_z = 2.4 - 2.0  # the LiDAR sits 0.4 m above the cameras
    # Ahead (front's centre), left (left's centre), behind (no camera), ahead-left (front's left half only).
    points = [[10, 0, -lidar_z], [0, 10, -lidar_z], [-10, 0, -lidar_z], [20, 8, -lidar_z]]
    step = FrameStep(FRONT_LEFT, rig)
    result = step.surround({"rgb_front": (None, front), "rgb_left": (None, left)},
                           {"lidar": SensorCloud(cloud_of(points), "ego_vehicle/lidar")}, {}, {"lidar/labeled"})
    layout = result.outputs[0].layout
    offsets = {name: offset for name, offset, _, _ in layout["fields"]}
    rows = np.frombuffer(layout["data"], np.uint8).reshape(-1, layout["point_step"])
    labels = rows[:, offsets["label"] : offsets["label"] + 2].copy().view("<u2").ravel()
    cameras = rows[:, offsets["camera"]]
    assert list(cameras) == [0, 1, NO_CAMERA, 0]
    assert list(labels) == [2, 3, NO_LABEL, 1]
    assert result.counts[Count.UNMATCHED_RADAR] == 1


def test_without_intrinsics_a_camera_labels_nothing_and_says_so():
    settings = FRONT_LEFT.replace(fov_from_rig=False)
    step = FrameStep(settings, surround_rig(settings))
    labels = np.zeros((60, 80), np.uint8)
    front_info = CameraModel.from_fov(80, 60, 90.0)
    result = step.surround({"rgb_front": (None, labels), "rgb_left": (None, labels)},
                           {"lidar": SensorCloud(cloud_of([[0, 10, 0]]), "lidar")}, {"rgb_front": front_info},
                           {"lidar/labeled"})
    assert [p.kind for p in result.problems] == ["without_camera:rgb_left"]
    assert "rgb_left's camera_info" in result.problems[0].message


def test_each_camera_has_its_own_image_outputs_and_the_clouds_are_fused_once():
    table = output_table(("rgb_front", "rgb_left"))
    assert {"rgb_front/labels", "rgb_left/overlay", "rgb_left/projection", "lidar/labeled"} <= set(table)
    assert "labels" not in table and output_table(()) is not table


@pytest.mark.parametrize("changes, named", [
    ({"cameras": ("rgb_front", "rgb_top")}, "rgb_top"),
    ({"lidar_id": "rgb_rear"}, "rgb_rear"),
    ({"cameras": ("rgb_front", "rgb_front")}, "twice"),
    ({"rig_file": "/no/such/rig.json"}, "/no/such/rig.json"),
])
def test_a_rig_that_lacks_what_the_settings_name_is_refused_by_name(changes, named):
    with pytest.raises(RigError, match=named):
        surround_rig(FRONT_LEFT.replace(**changes))
