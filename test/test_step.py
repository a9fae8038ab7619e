"""The frame step the node and `emerdiff bag` share, without ROS: camera choice, labelled clouds, counts."""

import math

import numpy as np

from emerdiff_ros.runtime.clouds import NO_LABEL
from emerdiff_ros.runtime.counters import FRAME_COUNTS, Count
from emerdiff_ros.runtime.outputs import SensorCloud
from emerdiff_ros.runtime.projection import CameraModel
from emerdiff_ros.runtime.settings import StreamSettings
from emerdiff_ros.runtime.step import FrameStep
from test_outputs import cloud_of

ORIGIN = (0.0,) * 6
RIG = StreamSettings(camera_pose=ORIGIN, lidar_pose=ORIGIN, radar_pose=ORIGIN)
LABELS = np.tile(np.arange(160, dtype=np.uint8) // 40, (120, 1))  # four vertical bands, 0..3
INFO = CameraModel(fx=80, fy=80, cx=80, cy=60, width=160, height=120)  # a 90-degree camera


def labelled(result, sensor: str = "lidar") -> np.ndarray:
    layout = next(o.layout for o in result.outputs if o.name == f"{sensor}/labeled")
    return np.frombuffer(layout["data"], "<u2").reshape(-1, layout["point_step"] // 2)[:, -2]


def test_camera_fov_replaces_camera_info_and_matches_the_bridges_intrinsics():
    # 10 m ahead, 4 m left: u = 80 - 80 * 4 / 10 = 48 (band 1); 4 m right: u = 112 (band 2)
    clouds = {"lidar": SensorCloud(cloud_of([[10, 4, 0], [10, -4, 0]]), "lidar")}
    with_info = FrameStep(RIG)(None, LABELS, clouds, INFO)
    without = FrameStep(RIG)(None, LABELS, clouds, None)
    from_fov = FrameStep(RIG.replace(camera_fov=90.0))(None, LABELS, clouds, None)
    assert list(labelled(with_info)) == [1, 2] and list(labelled(from_fov)) == [1, 2]
    assert not [o for o in without.outputs if o.name == "lidar/labeled"]
    assert without.counts[Count.CLOUDS_WITHOUT_CAMERA_INFO] == 1 and len(without.problems) == 1


def test_what_happened_is_counted_in_the_one_table():
    points = [[10, 0, 0], [math.nan, 0, 0], [math.inf, 0, 0], [10, -math.inf, 0]]
    result = FrameStep(RIG)(None, LABELS, {"lidar": SensorCloud(cloud_of(points), "lidar")}, INFO)
    assert list(labelled(result)) == [2, NO_LABEL, NO_LABEL, NO_LABEL]
    assert set(result.counts) <= set(FRAME_COUNTS)
    assert result.counts[Count.INF_POINTS_LIDAR] == 2 and result.counts[Count.NAN_POINTS_LIDAR] == 1
    assert result.counts[Count.UNMATCHED_RADAR] == 1 and result.counts[Count.UNMATCHED_LIDAR] == 0


def test_a_camera_info_of_another_aspect_ratio_is_reported_not_silently_stretched():
    wide = CameraModel(fx=800, fy=800, cx=640, cy=360, width=1280, height=720)  # 16:9 info, 4:3 frames
    clouds = {"lidar": SensorCloud(cloud_of([[10, 0, 0]]), "lidar")}
    result = FrameStep(RIG)(None, LABELS, clouds, wide)
    assert result.counts[Count.MISMATCHED_CAMERA_INFO] == 1
    assert "camera_info is 1280x720 but frames are 160x120" in result.problems[0].message
    scaled = CameraModel(fx=160, fy=160, cx=160, cy=120, width=320, height=240)  # the same camera, twice the size
    assert not FrameStep(RIG)(None, LABELS, clouds, scaled).problems


def test_labelled_clouds_keep_the_inputs_is_dense_flag():
    for dense in (True, False):
        cloud = SensorCloud(cloud_of([[10, 0, 0]]), "lidar", is_dense=dense)
        result = FrameStep(RIG)(None, LABELS, {"lidar": cloud}, INFO)
        layout = next(o.layout for o in result.outputs if o.name == "lidar/labeled")
        assert layout["is_dense"] is dense  # points are never dropped, so the input's promise holds
