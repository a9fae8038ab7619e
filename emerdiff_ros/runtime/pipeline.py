"""Camera frames to stable labels (node and bag tool alike): segment, then track the label values."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from ..engine import Segmentation, Segmenter
from ..engine.imaging import label_dtype
from .settings import StreamSettings
from .tracker import LabelTracker


@dataclass
class SegmentedFrame:
    labels: np.ndarray  # stable label values when tracking, else the frame's cluster ids
    segmentation: Segmentation


class FramePipeline:
    """Segments frames and keeps their label values stable; safe to reconfigure from another thread."""

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
        return SegmentedFrame(labels, result)
