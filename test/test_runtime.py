"""ROS-free streaming parts: gate, stamp buffers, tracker, clouds, projection, palette."""

import threading
import time

import numpy as np
import pytest

from emerdiff_ros.runtime.clouds import FLOAT32, NO_LABEL, Cloud, CloudError, CloudField
from emerdiff_ros.runtime.gate import FrameWorker, LatestFrameGate
from emerdiff_ros.runtime.palette import colourise, overlay, palette
from emerdiff_ros.runtime.projection import CameraModel, pose_matrix, point_labels, sensor_to_optical
from emerdiff_ros.runtime.stamps import RateMeter, StampBuffer
from emerdiff_ros.runtime.sync import Arrival, CloudSync
from emerdiff_ros.runtime.throttle import KindThrottle
from emerdiff_ros.runtime.tracker import LabelTracker


SECOND = 1_000_000_000


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_gate_keeps_only_the_newest_and_counts_the_rest():
    gate = LatestFrameGate()
    for i in range(5):
        gate.offer(i)
    assert gate.take(timeout=0) == 4
    assert gate.replaced == 4 and gate.offered == 5
    assert gate.take(timeout=0.01) is None


def test_gate_caps_the_rate_and_hands_over_the_newest_when_the_time_comes():
    clock = FakeClock()
    gate = LatestFrameGate(max_rate_hz=2.0, clock=clock)
    gate.offer("a")
    assert gate.take(timeout=0) == "a" and gate.last_wait == 0.0
    gate.offer("b")
    clock.now = 0.2
    gate.offer("c")
    assert gate.take(timeout=0) is None  # 0.5 s have not passed
    clock.now = 0.6
    assert gate.take(timeout=0) == "c"
    assert gate.last_wait == pytest.approx(0.4)  # from c's arrival, what diagnostics report as wait_s


def test_worker_survives_errors_and_keeps_processing():
    gate, done, errors = LatestFrameGate(), [], []
    worker = FrameWorker(gate, lambda item: done.append(1 / item), lambda item, exc: errors.append(item))
    worker.start()
    gate.offer(0)  # ZeroDivisionError
    deadline = time.monotonic() + 5
    while not errors and time.monotonic() < deadline:
        time.sleep(0.01)
    gate.offer(4)
    while not done and time.monotonic() < deadline:
        time.sleep(0.01)
    worker.stop()
    assert errors == [0] and done == [0.25]


def test_gate_offer_never_waits_for_a_slow_taker():
    gate = LatestFrameGate()
    started = threading.Event()

    def slow():
        started.set()
        time.sleep(0.5)

    worker = FrameWorker(gate, lambda item: slow(), lambda item, exc: None)
    worker.start()
    gate.offer(1)
    started.wait(2)
    begin = time.monotonic()
    for i in range(1000):
        gate.offer(i)
    assert time.monotonic() - begin < 0.2
    worker.stop()


def test_stamp_buffer_finds_the_nearest_within_slop_and_stays_bounded():
    buffer = StampBuffer(capacity=3, horizon_ns=100)
    for stamp in (10, 40, 30, 20):  # out of order
        buffer.add(stamp, f"s{stamp}")
    assert len(buffer) == 3 and buffer.nearest(10, 5) is None  # the oldest went first
    assert buffer.nearest(24, 5) == (20, "s20")
    assert buffer.nearest(36, 5) == (40, "s40")
    assert buffer.nearest(100, 5) is None
    buffer.add(200, "s200")  # everything older than 200 - 100 leaves
    assert len(buffer) == 1


def matched(sync: CloudSync, stamp: int, slop: int = 0) -> dict:
    sync.hold(stamp, slop)
    return sync.release()


def test_the_frame_in_progress_holds_its_clouds_however_far_the_drive_goes_on():
    sync = CloudSync(["lidar", "radar"], horizon_ns=SECOND // 5)
    sync.frame(30 * SECOND)
    sync.add("radar", 30 * SECOND - 3_000_000, "radar before")
    sync.hold(30 * SECOND, slop_ns=25_000_000)  # the worker takes the 30 s frame
    sync.add("lidar", 30 * SECOND + 10_000_000, "lidar after")  # its tick's LiDAR arrives late
    sync.add("radar", 30 * SECOND + 1_000_000, "radar nearer")
    for i in range(1, 61):  # three seconds of drive while the frame is segmented: the buffers move on
        sync.frame(30 * SECOND + i * SECOND // 20)
        sync.add("lidar", 30 * SECOND + i * SECOND // 20, f"lidar {i}")
    assert sync.release() == {"lidar": "lidar after", "radar": "radar nearer"}
    assert sync.release() == {}  # holding stopped


def test_cloud_sync_buffers_hold_the_whole_horizon_whatever_the_rate():
    sync = CloudSync(["lidar"], horizon_ns=10 * SECOND)
    for i in range(300):  # 10 s of a 30 Hz sensor: a fixed 200-cloud buffer would lose the first third
        sync.add("lidar", 1000 * SECOND + i * SECOND // 30, i)
    assert matched(sync, 1000 * SECOND, SECOND // 100) == {"lidar": 0}


def test_a_cloud_from_the_future_is_rejected_and_evicts_nothing():
    sync = CloudSync(["lidar", "radar"], horizon_ns=10 * SECOND)
    assert sync.frame(100 * SECOND) is Arrival.KEPT
    assert sync.add("lidar", 100 * SECOND, "now") is Arrival.KEPT
    assert sync.add("lidar", (100 + 365 * 86400) * SECOND, "next year") is Arrival.FUTURE
    assert sync.add("radar", 0, "unstamped") is Arrival.UNSTAMPED
    assert sync.add("lidar", 101 * SECOND, "later") is Arrival.KEPT
    assert matched(sync, 100 * SECOND) == {"lidar": "now"}


def test_time_going_back_empties_the_buffers_and_matching_goes_on():
    sync = CloudSync(["lidar"], horizon_ns=10 * SECOND)
    for t in (500, 501, 502):
        sync.frame(t * SECOND)
        sync.add("lidar", t * SECOND, f"first run {t}")
    # A bag loop (or a simulator restart): the same sensors, 60 s earlier. One cloud alone does not move time:
    assert sync.add("lidar", 442 * SECOND, "loop 442") is Arrival.OUTLIER
    assert sync.frame(442 * SECOND) is Arrival.TIME_JUMP  # the camera confirms it
    # the first run's last messages, still in flight, neither jump time forward again nor count a second jump
    assert sync.frame(502 * SECOND) is Arrival.STALE
    assert sync.add("lidar", 502 * SECOND + 50_000_000, "first run, late") is Arrival.STALE
    assert sync.frame(442 * SECOND) is Arrival.KEPT  # one jump, seen once
    assert matched(sync, 442 * SECOND) == {"lidar": "loop 442"}
    assert matched(sync, 500 * SECOND) == {} and len(sync) == 1
    assert sync.add("lidar", 443 * SECOND, "loop 443") is Arrival.KEPT
    # A jump smaller than the horizon is a late message, not a jump.
    assert sync.add("lidar", 436 * SECOND, "late") is Arrival.KEPT


def test_one_cloud_stamped_in_the_past_moves_nothing_but_a_run_of_them_is_a_jump():
    sync = CloudSync(["lidar", "radar"], horizon_ns=10 * SECOND)
    for t in range(100, 104):
        sync.frame(t * SECOND)
        assert sync.add("lidar", t * SECOND, f"lidar {t}") is Arrival.KEPT
        if t == 101:  # a LiDAR driver's glitch: stamped 1 s after the epoch
            assert sync.add("lidar", SECOND, "glitch") is Arrival.OUTLIER
    assert matched(sync, 103 * SECOND) == {"lidar": "lidar 103"}  # nothing was emptied or dropped
    # A simulator restart seen by the clouds before the camera: three clouds agree, time went back.
    assert sync.add("lidar", 30 * SECOND, "restart 30") is Arrival.OUTLIER
    assert sync.add("radar", 30 * SECOND, "radar 30") is Arrival.OUTLIER
    assert sync.add("lidar", 30 * SECOND + SECOND // 20, "restart 30.05") is Arrival.TIME_JUMP
    assert matched(sync, 30 * SECOND) == {"lidar": "restart 30", "radar": "radar 30"}
    assert matched(sync, 103 * SECOND) == {}


def test_clouds_of_a_drive_whose_camera_went_silent_match_its_return():
    sync = CloudSync(["lidar"], horizon_ns=10 * SECOND)
    sync.frame(100 * SECOND)
    for i in range(1, 13 * 20 + 1):  # the camera is silent for 13 s, longer than the horizon; the LiDAR goes on
        assert sync.add("lidar", 100 * SECOND + i * SECOND // 20, i) is Arrival.KEPT
    assert sync.frame(113 * SECOND) is Arrival.KEPT
    assert matched(sync, 113 * SECOND) == {"lidar": 260}


def test_warnings_are_throttled_per_kind():
    clock = FakeClock()
    throttle = KindThrottle(5.0, clock=clock)
    assert throttle("image", "bad image") == "bad image"
    assert throttle("image", "bad image") is None
    assert throttle("lidar", "bad cloud") == "bad cloud"  # not hidden by the image's
    clock.now = 5.0
    assert throttle("image", "bad image") == "bad image (1 more like it since the last report)"


def test_rate_meter_counts_a_sliding_window():
    clock = FakeClock()
    meter = RateMeter(window_s=2.0, clock=clock)
    for i in range(10):
        clock.now = i * 0.1
        meter.tick()
    assert meter.rate() == 5.0
    clock.now = 5.0
    assert meter.rate() == 0.0


def test_tracker_recovers_permuted_clusters_and_gives_new_ones_new_ids():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(5, 16)) * 10
    tracker = LabelTracker()
    np.testing.assert_array_equal(tracker.assign(centers), np.arange(5))
    order = np.array([3, 0, 4, 1, 2])
    moved = centers[order] + rng.normal(size=(5, 16)) * 0.5
    np.testing.assert_array_equal(tracker.assign(moved), order)
    grown = np.concatenate([moved, rng.normal(size=(2, 16)) * 10])
    ids = tracker.assign(grown)
    np.testing.assert_array_equal(ids[:5], order)
    assert sorted(ids[5:]) == [5, 6] and tracker.size == 7
    fewer = tracker.assign(centers[[2, 4]])
    np.testing.assert_array_equal(fewer, [2, 4])
    labels = np.array([[0, 1], [1, 0]])
    np.testing.assert_array_equal(LabelTracker.relabel(labels, fewer, np.uint8), [[2, 4], [4, 2]])


def test_relabelling_keeps_pixels_without_a_label_unlabelled():
    # uint8 frame labels with 255 (no label, outside a center_crop), stable ids that need uint16.
    labels = np.array([[0, 1, 255], [255, 1, 0]], np.uint8)
    relabelled = LabelTracker.relabel(labels, np.array([300, 7]), np.uint16)
    np.testing.assert_array_equal(relabelled, [[300, 7, 65535], [65535, 7, 300]])
    assert relabelled.dtype == np.uint16


def packed_cloud(values: np.ndarray, names: str = "xyz") -> Cloud:
    fields = tuple(CloudField(n, 4 * i, FLOAT32) for i, n in enumerate(names))
    data = values.astype(np.float32).tobytes()
    return Cloud(fields, 4 * len(names), 4 * len(names) * len(values), len(values), 1, data)


def test_cloud_reads_fields_by_offset_with_padding_and_row_padding():
    # 2 x 2 organised cloud, point_step 12 with x at 0, z at 8 (4 bytes padding), rows padded by 8 bytes.
    rows = np.zeros((2, 32), np.uint8)
    for r in range(2):
        points = np.array([[r * 10 + 1, 0, r * 10 + 2], [r * 10 + 3, 0, r * 10 + 4]], np.float32)
        rows[r, :24] = points.view(np.uint8).reshape(-1)
    fields = (CloudField("x", 0, FLOAT32), CloudField("y", 4, FLOAT32), CloudField("z", 8, FLOAT32))
    cloud = Cloud(fields, 12, 32, 2, 2, rows.tobytes())
    cloud.check()
    np.testing.assert_array_equal(cloud.field("x"), [1, 3, 11, 13])
    np.testing.assert_array_equal(cloud.field("z"), [2, 4, 12, 14])
    labeled = cloud.with_labels(np.array([5, 6, 7, NO_LABEL]))
    labeled.check()
    assert labeled.row_step == labeled.point_step * 2 and labeled.point_step % 4 == 0
    np.testing.assert_array_equal(labeled.field("label"), [5, 6, 7, NO_LABEL])
    np.testing.assert_array_equal(labeled.field("z"), [2, 4, 12, 14])
    relabeled = labeled.with_labels(np.zeros(4))
    assert [f.name for f in relabeled.fields].count("label") == 1


@pytest.mark.parametrize("change, message", [
    (dict(point_step=8), "does not fit"),
    (dict(data=b"\0" * 10), "bytes of data"),
    (dict(row_step=4), "row_step"),
    (dict(fields=(CloudField("x", 0, 99),)), "unknown datatype"),
    (dict(fields=(CloudField("x", 0, FLOAT32), CloudField("y", 4, FLOAT32))), "no z field"),
    # Zero-size fields let a 4-byte message declare millions of points (point_step 0, row_step 0).
    (dict(fields=tuple(CloudField(n, 0, FLOAT32, count=0) for n in "xyz"), point_step=0, row_step=0,
          width=10_000_000, data=b"\0" * 4), "count 0"),
    (dict(point_step=0, row_step=0, width=10_000_000, data=b"\0" * 4), "does not fit point_step 0"),
])
def test_bad_cloud_layouts_are_refused(change, message):
    cloud = packed_cloud(np.zeros((3, 3)))
    from dataclasses import replace

    with pytest.raises(CloudError, match=message):
        replace(cloud, **change).check()


def test_a_cloud_larger_than_the_cap_is_refused():
    cloud = packed_cloud(np.zeros((100, 3)))
    cloud.check(max_points=100)
    with pytest.raises(CloudError, match="more than max_cloud_points 99"):
        cloud.check(max_points=99)


def test_an_empty_scan_reads_and_labels_as_an_empty_cloud():
    empty = Cloud(tuple(CloudField(n, 4 * i, FLOAT32) for i, n in enumerate("xyz")), 16, 0, 0, 1, b"")
    empty.check()
    assert empty.xyz().shape == (0, 3)
    labeled = empty.with_labels(np.zeros(0, np.uint16))
    labeled.check()
    assert labeled.size == 0 and labeled.field("label").shape == (0,)


def test_projection_follows_the_bridge_conventions():
    camera = CameraModel(fx=400, fy=400, cx=400, cy=300, width=800, height=600)
    labels = np.arange(600 * 800, dtype=np.int64).reshape(600, 800) % 60000
    # camera at (2, 0, 2), lidar at (0, 0, 2.4): a point 10 m ahead of the camera, 1 m left and 0.5 m up
    to_optical = sensor_to_optical((2, 0, 2, 0, 0, 0), (0, 0, 2.4, 0, 0, 0))
    point = np.array([[12.0, 1.0, 0.1]])  # in the lidar frame
    u, v = 400 + 400 * -1.0 / 10, 300 + 400 * -0.5 / 10
    assert point_labels(point, to_optical, camera, labels)[0] == labels[int(v), int(u)]
    behind = np.array([[-5.0, 0, 0], [2.0, 0.0, 0.4], [np.nan, 0, 0], [12.0, 100.0, 0.0]])
    assert list(point_labels(behind, to_optical, camera, labels)) == [NO_LABEL] * 4
    # a point on a pixel without a label (outside a center_crop) has none either, in uint8 and uint16 labels
    for dtype in (np.uint8, np.uint16):
        unlabelled = np.zeros((600, 800), dtype)
        unlabelled[int(v), int(u)] = np.iinfo(dtype).max
        assert point_labels(point, to_optical, camera, unlabelled)[0] == NO_LABEL == 65535
    # a label image at half size: intrinsics scale with it
    small = labels[::2, ::2]
    assert point_labels(point, to_optical, camera, small)[0] == small[int(v / 2), int(u / 2)]


def test_pose_rotation_matches_ros_rpy():
    yawed = pose_matrix((0, 0, 0, 0, 0, 90))
    np.testing.assert_allclose(yawed[:3, :3] @ [1, 0, 0], [0, 1, 0], atol=1e-12)  # x turns to y (left)
    pitched = pose_matrix((0, 0, 0, 0, 90, 0))
    np.testing.assert_allclose(pitched[:3, :3] @ [1, 0, 0], [0, 0, -1], atol=1e-12)  # nose down


def test_palette_and_overlay():
    colours = palette(256)
    assert len(np.unique(colours, axis=0)) == 256
    labels = np.array([[0, 1], [2, 3]], np.uint8)
    np.testing.assert_array_equal(colourise(labels)[1, 1], colours[3])
    image = np.zeros((2, 2, 3), np.uint8)
    np.testing.assert_array_equal(overlay(image, labels, alpha=1.0), colourise(labels))
    np.testing.assert_array_equal(overlay(image, labels, alpha=0.0), image)
    with pytest.raises(ValueError):
        overlay(image, labels[:1])
    # Pixels without a label (255 in uint8 labels) stay uncoloured: black, and the image itself in the overlay.
    grey = np.full((2, 2, 3), 90, np.uint8)
    partly = np.array([[0, 255], [255, 3]], np.uint8)
    np.testing.assert_array_equal(colourise(partly)[0, 1], [0, 0, 0])
    blended = overlay(grey, partly)
    np.testing.assert_array_equal(blended[0, 1], grey[0, 1])
    np.testing.assert_array_equal(blended[1, 1], overlay(grey, labels)[1, 1])
