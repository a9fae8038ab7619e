"""Camera frames to stable labels (node and bag tool alike): segment, then track the label values.

Tracking is its own step (stable_labels) so frames segmented elsewhere, on a pool of workers, are
tracked here in stamp order exactly as the node tracks them."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..engine import EmerDiffConfig, Segmentation, Segmenter, load_segmenter
from ..engine.config import DIFFUSION_METHODS
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


def family(method: str) -> str:
    """Methods that run the same network share its loaded model: emerdiff and lowres both run SD."""
    return "diffusion" if method in DIFFUSION_METHODS else method


class FramePipeline:
    """Segments frames with the method the settings name and keeps their label values stable; safe to
    reconfigure from another thread. Each method's model is loaded once, by the thread that segments (the
    node's worker), the first time that method is asked for: never in a parameter callback."""

    def __init__(self, segmenter: Segmenter, settings: StreamSettings,
                 load: Callable[[EmerDiffConfig, str], Segmenter] = load_segmenter):
        self._lock = threading.Lock()
        self._load = load
        self.tracker = LabelTracker(settings.track_smoothing)
        self._segmenters = {family(settings.method): segmenter}
        self.config, self.settings = segmenter.config, settings

    def configure(self, config: EmerDiffConfig, settings: StreamSettings) -> None:
        """Use new method parameters or settings from the next frame on. Raises ConfigError, changing nothing,
        for parameters a loaded model cannot take (a layer it does not have)."""
        with self._lock:
            segmenters = self._segmenters if config == self.config else {
                name: type(s)(s.model, config) for name, s in self._segmenters.items()}
            if settings.method != self.settings.method:
                self.tracker.reset()  # another method's cluster centres live in another feature space
            self._segmenters, self.config, self.settings = segmenters, config, settings
            self.tracker.smoothing = settings.track_smoothing
            if not settings.track_labels:
                self.tracker.reset()

    def segment(self, rgb: np.ndarray) -> SegmentedFrame:
        """Raises CheckpointError when the method's model cannot be loaded (the previous one stays loaded)."""
        with self._lock:
            config, settings = self.config, self.settings
            segmenter = self._segmenters.get(family(settings.method))
        if segmenter is None:
            segmenter = self._load(config, settings.method)
            with self._lock:
                self._segmenters.setdefault(family(settings.method), segmenter)
        result = segmenter.segment(rgb, method=settings.method)
        return SegmentedFrame(stable_labels(self.tracker, result, settings.track_labels), result)
