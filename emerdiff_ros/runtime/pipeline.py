"""Camera frames to stable labels (node and bag tool alike): segment, then track the label values.

Tracking is its own step (stable_labels) so frames segmented elsewhere, on a pool of workers, are
tracked here in stamp order exactly as the node tracks them. A surround frame (several cameras of one
stamp) is segmented in one label space and tracked as one: its cameras share their cluster centres."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from ..engine import EmerDiffConfig, Segmentation, Segmenter, load_segmenter
from ..engine.config import DIFFUSION_METHODS
from ..engine.labels import label_dtype
from ..engine.surround import RunRound, one_by_one, segment_surround
from .settings import StreamSettings
from .tracker import LabelTracker


@dataclass
class SegmentedFrame:
    labels: np.ndarray  # stable label values when tracking, else the frame's cluster ids
    segmentation: Segmentation


def stable_labels(tracker: LabelTracker, result: Segmentation, track: bool) -> np.ndarray:
    """The frame's labels with stable values (its own cluster ids when not tracking); frames in stamp order."""
    return stable_surround_labels(tracker, [result], track)[0]


def stable_surround_labels(tracker: LabelTracker, results: Sequence[Segmentation], track: bool) -> list[np.ndarray]:
    """Stable labels of the cameras of one surround frame, whose masks share their centres: one assignment
    for all of them, so a value means the same in every camera. Class ids (segformer: no masks) are stable
    already."""
    masks = results[0].masks
    if not track or masks is None:
        return [result.labels for result in results]
    ids = tracker.assign(masks.centers)
    dtype = label_dtype(max(tracker.size, masks.num_masks))
    return [LabelTracker.relabel(result.labels, ids, dtype) for result in results]


def family(method: str) -> str:
    """Methods that run the same network share its loaded model: emerdiff and lowres both run SD."""
    return "diffusion" if method in DIFFUSION_METHODS else method


def load_on_devices(config: EmerDiffConfig, method: str, devices: Sequence[str],
                    load: Callable[[EmerDiffConfig, str], Segmenter] = load_segmenter) -> list[Segmenter]:
    """One model per device (devices empty: config.device's)."""
    return [load(config.replace(device=device), method) for device in devices or (config.device,)]


def _use_device(device: str) -> None:
    """A device thread's current CUDA device is its own: synchronisation and cache calls then mean it."""
    import torch

    chosen = torch.device(device)
    if chosen.type == "cuda" and chosen.index is not None:  # plain "cuda" is the current device already
        torch.cuda.set_device(chosen)


class FramePipeline:
    """Segments frames with the method the settings name and keeps their label values stable; safe to
    reconfigure from another thread. Each method's model is loaded once per device, by the thread that
    segments (the node's worker), the first time that method is asked for: never in a parameter callback.
    With several devices a surround frame's cameras are segmented on all of them at once (one thread each)."""

    def __init__(self, segmenters: list[Segmenter], config: EmerDiffConfig, settings: StreamSettings,
                 load: Callable[[EmerDiffConfig, str], Segmenter] = load_segmenter):
        self._lock = threading.Lock()
        self._load = load
        self.devices = tuple(str(segmenter.model.device) for segmenter in segmenters)
        self.tracker = LabelTracker(settings.track_smoothing)
        self._segmenters = {family(settings.method): segmenters}
        self.config, self.settings = config, settings  # config.device aside: each segmenter has its own
        self._threads = [] if len(segmenters) == 1 else [
            ThreadPoolExecutor(1, thread_name_prefix=f"emerdiff-{device}", initializer=_use_device, initargs=(device,))
            for device in self.devices]

    def configure(self, config: EmerDiffConfig, settings: StreamSettings) -> None:
        """Use new method parameters or settings from the next frame on. Raises ConfigError, changing nothing,
        for parameters a loaded model cannot take (a layer it does not have)."""
        with self._lock:
            segmenters = self._segmenters if config == self.config else {
                name: [type(s)(s.model, config.replace(device=s.config.device)) for s in on_devices]
                for name, on_devices in self._segmenters.items()}
            if settings.method != self.settings.method:
                self.tracker.reset()  # another method's cluster centres live in another feature space
            self._segmenters, self.config, self.settings = segmenters, config, settings
            self.tracker.smoothing = settings.track_smoothing
            if not settings.track_labels:
                self.tracker.reset()

    def segment(self, rgb: np.ndarray) -> SegmentedFrame:
        """Raises CheckpointError when the method's model cannot be loaded (the previous one stays loaded)."""
        settings, segmenters = self._current()
        result = segmenters[0].segment(rgb, method=settings.method)
        return SegmentedFrame(stable_labels(self.tracker, result, settings.track_labels), result)

    def segment_surround(self, rgbs: Sequence[np.ndarray]) -> list[SegmentedFrame]:
        """The cameras of one surround frame, in one label space, spread across the devices."""
        settings, segmenters = self._current()
        results = segment_surround(rgbs, settings.method, segmenters[0].config, self._round(segmenters))
        labels = stable_surround_labels(self.tracker, results, settings.track_labels)
        return [SegmentedFrame(frame_labels, result) for frame_labels, result in zip(labels, results)]

    def close(self) -> None:
        """End the device threads: the jobs running finish, those not started are dropped."""
        for thread in self._threads:
            thread.shutdown(wait=False, cancel_futures=True)

    def _current(self) -> tuple[StreamSettings, list[Segmenter]]:
        with self._lock:
            config, settings = self.config, self.settings
            segmenters = self._segmenters.get(family(settings.method))
        if segmenters is None:
            segmenters = load_on_devices(config, settings.method, self.devices, self._load)
            with self._lock:
                segmenters = self._segmenters.setdefault(family(settings.method), segmenters)
        return settings, segmenters

    def _round(self, segmenters: list[Segmenter]) -> RunRound:
        if not self._threads:
            return one_by_one(segmenters[0])

        def on_every_device(jobs):
            futures = [self._threads[i % len(segmenters)].submit(job.run, segmenters[i % len(segmenters)])
                       for i, job in enumerate(jobs)]
            return [future.result() for future in futures]

        return on_every_device
