"""Camera frames to stable labels (node and bag tool alike): segment, then track the label values.

Tracking is its own step (stable_labels) so frames segmented elsewhere, on a pool of workers, are
tracked here in stamp order exactly as the node tracks them."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from ..engine import Segmentation, Segmenter
from ..engine.labels import label_dtype
from .settings import StreamSettings
from .tracker import LabelTracker


@dataclass
class SegmentedFrame:
    labels: np.ndarray  # stable label values when tracking, else the frame's cluster ids
    segmentation: Segmentation


def stable_labels(tracker: LabelTracker, result: Segmentation, track: bool) -> np.ndarray:
    """The frame's labels with stable values (its own cluster ids when not tracking); frames in stamp order.
    Class ids (segformer: no masks) are stable already."""
    if not track or result.masks is None:
        return result.labels
    ids = tracker.assign(result.masks.centers)
    size = max(tracker.size, result.masks.num_masks)
    return LabelTracker.relabel(result.labels, ids, label_dtype(size))


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
        return SegmentedFrame(stable_labels(self.tracker, result, settings.track_labels), result)
