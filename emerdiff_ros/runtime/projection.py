"""Camera model and the projection of sensor points into the label image.

Poses follow the CARLA bridge's objects file: [x, y, z, roll, pitch, yaw] of a sensor in the
vehicle frame, metres and degrees, ROS axes (x forward, y left, z up). The bridge publishes LiDAR
and radar points in those sensor axes and the camera image in the camera's optical frame
(x right, y down, z forward).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..engine.labels import unlabelled
from .clouds import NO_CAMERA, NO_LABEL

# optical = BODY_TO_OPTICAL @ body: x_o = -y_b, y_o = -z_b, z_o = x_b
BODY_TO_OPTICAL = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
MIN_DEPTH = 0.1  # metres in front of the camera


def pose_matrix(pose) -> np.ndarray:
    """4x4 transform of a [x, y, z, roll, pitch, yaw (degrees)] pose (rotation Rz(yaw) Ry(pitch) Rx(roll))."""
    x, y, z, roll, pitch, yaw = (float(v) for v in pose)
    r, p, w = np.radians([roll, pitch, yaw])
    rx = np.array([[1, 0, 0], [0, np.cos(r), -np.sin(r)], [0, np.sin(r), np.cos(r)]])
    ry = np.array([[np.cos(p), 0, np.sin(p)], [0, 1, 0], [-np.sin(p), 0, np.cos(p)]])
    rz = np.array([[np.cos(w), -np.sin(w), 0], [np.sin(w), np.cos(w), 0], [0, 0, 1]])
    matrix = np.eye(4)
    matrix[:3, :3] = rz @ ry @ rx
    matrix[:3, 3] = (x, y, z)
    return matrix


def sensor_to_optical(camera_pose, sensor_pose) -> np.ndarray:
    """4x4 transform from a sensor's frame to the camera's optical frame."""
    body = np.linalg.inv(pose_matrix(camera_pose)) @ pose_matrix(sensor_pose)
    optical = np.eye(4)
    optical[:3, :3] = BODY_TO_OPTICAL
    return optical @ body


@dataclass(frozen=True)
class CameraModel:
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    @classmethod
    def from_fov(cls, width: int, height: int, fov_deg: float) -> "CameraModel":
        """A pinhole camera of horizontal field of view fov_deg, square pixels, centred: CARLA's cameras."""
        focal = width / (2.0 * np.tan(np.radians(fov_deg) / 2.0))
        return cls(float(focal), float(focal), width / 2.0, height / 2.0, width, height)

    def resized(self, width: int, height: int) -> "CameraModel":
        """The same camera for an image of another size (intrinsics scale with it)."""
        if (width, height) == (self.width, self.height):
            return self
        sx, sy = width / self.width, height / self.height
        return CameraModel(self.fx * sx, self.fy * sy, self.cx * sx, self.cy * sy, width, height)


def project(points: np.ndarray, to_optical: np.ndarray, camera: CameraModel) -> tuple[np.ndarray, np.ndarray]:
    """(N, 2) int64 pixel (u, v) of each (N, 3) point and (N,) whether it lands in the image in front of it."""
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):  # NaN and Inf points land nowhere
        optical = points @ to_optical[:3, :3].T + to_optical[:3, 3]
        x, y, z = optical.T
        u = np.floor(camera.fx * x / z + camera.cx)
        v = np.floor(camera.fy * y / z + camera.cy)
        inside = (z > MIN_DEPTH) & (u >= 0) & (u < camera.width) & (v >= 0) & (v < camera.height)
    inside &= np.isfinite(optical).all(axis=1)
    pixels = np.zeros((len(points), 2), dtype=np.int64)
    pixels[inside] = np.stack([u[inside], v[inside]], axis=1).astype(np.int64)
    return pixels, inside


def point_labels(points: np.ndarray, to_optical: np.ndarray, camera: CameraModel, labels: np.ndarray) -> np.ndarray:
    """uint16 label of each (N, 3) point from the label image it projects into; NO_LABEL where none, also
    on the label image's no-label pixels (outside a center_crop)."""
    return labels_and_offsets(points, to_optical, camera, labels)[0]


def labels_and_offsets(points: np.ndarray, to_optical: np.ndarray, camera: CameraModel,
                       labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """point_labels, and how far from the image centre each labelled point lands (a fraction of the image's
    half-diagonal: cameras of different sizes compare; inf where the point has no label)."""
    height, width = labels.shape
    camera = camera.resized(width, height)
    pixels, inside = project(points, to_optical, camera)
    out = np.full(len(points), NO_LABEL, dtype=np.uint16)
    hit = labels[pixels[inside, 1], pixels[inside, 0]]
    values = hit.astype(np.uint16)
    values[unlabelled(hit)] = NO_LABEL  # a uint8 image's 255 is no label too, not cluster 255
    out[inside] = values
    offsets = np.full(len(points), np.inf)
    du, dv = (pixels[inside, 0] + 0.5 - width / 2) / (width / 2), (pixels[inside, 1] + 0.5 - height / 2) / (height / 2)
    offsets[inside] = np.sqrt((du**2 + dv**2) / 2)
    offsets[out == NO_LABEL] = np.inf
    return out, offsets


def fused_labels(per_camera: dict[int, tuple[np.ndarray, np.ndarray]], points: int) -> tuple[np.ndarray, np.ndarray]:
    """(labels, cameras) of each point over several cameras, from each camera's (labels, offsets) by its index:
    the label of the camera where the point lands nearest the image centre (the least distorted view, away
    from the seams) and that camera's index; NO_LABEL and NO_CAMERA where no camera labels it."""
    labels = np.full(points, NO_LABEL, dtype=np.uint16)
    cameras = np.full(points, NO_CAMERA, dtype=np.uint8)
    best = np.full(points, np.inf)
    for index, (values, offsets) in per_camera.items():
        nearer = offsets < best
        labels[nearer], cameras[nearer], best[nearer] = values[nearer], index, offsets[nearer]
    return labels, cameras
