"""CARLA's raw sensor buffers to the messages the ROS bridge publishes, as plain values (numpy only).

Raw layouts (carla.SensorData.raw_data): cameras BGRA uint8 rows; LiDAR float32 (x, y, z, intensity)
per point; radar float32 (velocity, azimuth, altitude, depth) per detection. CARLA's axes are
left-handed (x forward, y right, z up); ROS's are right-handed (y left), so y changes sign.
"""

from __future__ import annotations

import numpy as np

from ..runtime.clouds import FLOAT32, Cloud, CloudField
from ..runtime.projection import CameraModel

LIDAR_FIELDS = (("x", 0), ("y", 4), ("z", 8), ("intensity", 12))
LIDAR_POINT_STEP = 16
# The bridge packs 7 float32 fields with struct and leaves 4 bytes of padding before ElevationAngle.
RADAR_FIELDS = (("x", 0), ("y", 4), ("z", 8), ("Range", 12), ("Velocity", 16), ("AzimuthAngle", 20),
                ("ElevationAngle", 28))
RADAR_POINT_STEP = 32


class RawDataError(ValueError):
    """A raw buffer whose size does not fit its layout."""


def stamp_ns(elapsed_seconds: float) -> int:
    """Simulation seconds to integer nanoseconds (rounded: 0.15 s is 150000000 ns, not 149999999)."""
    return int(round(elapsed_seconds * 1e9))


def bgra_pixels(raw, width: int, height: int) -> np.ndarray:
    """(height, width, 4) uint8 BGRA, a copy of the camera's raw buffer."""
    pixels = np.frombuffer(raw, dtype=np.uint8)
    if pixels.size != width * height * 4:
        raise RawDataError(f"camera buffer of {pixels.size} bytes, {width}x{height} BGRA needs {width * height * 4}")
    return pixels.reshape(height, width, 4).copy()


def image_fields(pixels: np.ndarray) -> dict:
    """sensor_msgs/Image fields but the header, as the bridge publishes camera frames: bgra8."""
    height, width = pixels.shape[:2]
    return dict(height=height, width=width, encoding="bgra8", is_bigendian=0, step=width * 4,
                data=np.ascontiguousarray(pixels, dtype=np.uint8).reshape(-1))


def camera_info_fields(width: int, height: int, fov_degrees: float) -> dict:
    """sensor_msgs/CameraInfo fields but the header and roi, as the bridge builds them."""
    camera = CameraModel.from_fov(width, height, fov_degrees)
    f, cx, cy = camera.fx, camera.cx, camera.cy
    return dict(height=height, width=width, distortion_model="plumb_bob", d=np.zeros(5),
                k=np.array([f, 0, cx, 0, f, cy, 0, 0, 1], dtype=np.float64),
                r=np.eye(3).reshape(-1),
                p=np.array([f, 0, cx, 0, 0, f, cy, 0, 0, 0, 1, 0], dtype=np.float64),
                binning_x=0, binning_y=0)


def _rows(raw, columns: int, what: str) -> np.ndarray:
    values = np.frombuffer(raw, dtype="<f4")
    if values.size % columns:
        raise RawDataError(f"{what} buffer of {values.size} floats is not a whole number of {columns}-float rows")
    return values.reshape(-1, columns)


def lidar_points(raw) -> np.ndarray:
    """(N, 4) float32 x, y, z, intensity in ROS axes: CARLA's y negated."""
    points = _rows(raw, 4, "LiDAR").copy()
    points[:, 1] *= -1.0
    return points


def radar_points(raw) -> np.ndarray:
    """(N, 8) float32 rows in the bridge's radar layout (padding column 6 zero) from CARLA detections.

    A detection at depth d, azimuth a (to the right, CARLA) and altitude e (up) lies at
    x = d cos(a) cos(e), y = -d sin(a) cos(e) (ROS: left), z = d sin(e); Range, Velocity and the
    two angles are kept as CARLA reports them.
    """
    detections = _rows(raw, 4, "radar").astype(np.float64)
    velocity, azimuth, altitude, depth = detections.T
    rows = np.zeros((len(detections), 8), dtype=np.float64)
    rows[:, 0] = depth * np.cos(azimuth) * np.cos(altitude)
    rows[:, 1] = -depth * np.sin(azimuth) * np.cos(altitude)
    rows[:, 2] = depth * np.sin(altitude)
    rows[:, 3], rows[:, 4], rows[:, 5], rows[:, 7] = depth, velocity, azimuth, altitude
    return rows.astype(np.float32)


def _cloud(rows: np.ndarray, fields, point_step: int) -> Cloud:
    rows = np.ascontiguousarray(rows, dtype="<f4")
    assert rows.shape[1] * 4 == point_step
    return Cloud(fields=tuple(CloudField(name, offset, FLOAT32) for name, offset in fields), point_step=point_step,
                 row_step=point_step * len(rows), width=len(rows), height=1, data=rows.tobytes())


def lidar_cloud(points: np.ndarray) -> Cloud:
    """The bridge's LiDAR PointCloud2: x, y, z, intensity float32, point_step 16."""
    return _cloud(points, LIDAR_FIELDS, LIDAR_POINT_STEP)


def radar_cloud(rows: np.ndarray) -> Cloud:
    """The bridge's radar PointCloud2: ElevationAngle at offset 28, point_step 32."""
    return _cloud(rows, RADAR_FIELDS, RADAR_POINT_STEP)
