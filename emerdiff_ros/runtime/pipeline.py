"""One camera frame to every output: labels, overlay and labelled clouds (node and bag tool alike)."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from ..engine import Segmentation, Segmenter
from ..engine.imaging import label_dtype
from .clouds import Cloud
from .palette import overlay
from .projection import CameraModel, point_labels, sensor_to_optical
from .settings import StreamSettings
from .tracker import LabelTracker

SENSORS = ("lidar", "radar")


@dataclass
class SegmentedFrame:
    labels: np.ndarray  # stable label values when tracking, else the frame's cluster ids
    overlay: np.ndarray  # RGB
    segmentation: Segmentation


@dataclass
class LabeledClouds:
    clouds: dict[str, Cloud]  # sensor -> its cloud with a `label` field
    nan_points: dict[str, int]  # sensor -> points with a NaN coordinate (labelled NO_LABEL)


class FramePipeline:
    """Segments frames and labels their clouds; safe to reconfigure from another thread."""

    def __init__(self, segmenter: Segmenter, settings: StreamSettings):
        self._lock = threading.Lock()
        self.tracker = LabelTracker(settings.track_smoothing)
        self.configure(segmenter, settings)

    def configure(self, segmenter: Segmenter, settings: StreamSettings) -> None:
        """Use new method parameters or settings from the next frame on."""
        with self._lock:
            self.segmenter, self.settings = segmenter, settings
            self.tracker.smoothing = settings.track_smoothing
            if not settings.track_labels:
                self.tracker.reset()

    def segment(self, rgb: np.ndarray, method: str = "emerdiff") -> SegmentedFrame:
        with self._lock:
            segmenter, settings = self.segmenter, self.settings
        result = segmenter.segment(rgb, method=method)
        labels = result.labels
        if settings.track_labels:
            ids = self.tracker.assign(result.masks.centers)
            size = max(self.tracker.size, result.masks.num_masks)
            labels = LabelTracker.relabel(labels, ids, label_dtype(size))
        return SegmentedFrame(labels, overlay(rgb, labels, settings.overlay_alpha), result)

    def label_clouds(self, labels: np.ndarray, clouds: dict[str, Cloud], camera: CameraModel) -> LabeledClouds:
        with self._lock:
            settings = self.settings
        return label_clouds(labels, clouds, camera, settings)


def label_clouds(labels: np.ndarray, clouds: dict[str, Cloud], camera: CameraModel,
                 settings: StreamSettings) -> LabeledClouds:
    """Each cloud with the label of the pixel each of its points projects into."""
    out = LabeledClouds({}, {})
    for name, cloud in clouds.items():
        to_optical = sensor_to_optical(settings.camera_pose, getattr(settings, f"{name}_pose"))
        xyz = cloud.xyz()
        out.nan_points[name] = int(np.isnan(xyz).any(axis=1).sum())
        out.clouds[name] = cloud.with_labels(point_labels(xyz, to_optical, camera, labels))
    return out
