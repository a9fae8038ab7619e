"""A frame's work as a job, and the runner that does jobs in this process.

The offline tools hand their frames to a runner as (key, job) pairs and get (key, result) back in
the same order. LocalRunner does each job here, one after another, when the tool asks for its
result; a pool of workers (emerdiff_ros.distributed) does the same jobs, with the same code, in
other processes. A job holds only arrays and settings, so it can travel to another machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Protocol, TypeVar

import numpy as np
import torch

from .baselines import DinoSegmenter, SegformerSegmenter
from .config import EmerDiffConfig
from .segmenter import EncodedFrame, Segmentation, Segmenter
from .stats import FrameStats

K = TypeVar("K")
SEGMENTERS = (Segmenter, DinoSegmenter, SegformerSegmenter)  # what runs jobs in this process, one per method


@dataclass
class FrameFeatures:
    """A frame's latent and query features, kept between consistent mode's two passes."""

    image_size: tuple[int, int]
    processing_size: tuple[int, int]
    latent: np.ndarray  # (1, 4, h, w) float32
    features: np.ndarray  # (h', w', channels)
    seconds: float  # what encoding and features took

    def encoded(self, device: torch.device) -> EncodedFrame:
        # a copy: an array that came from another process may be read-only
        return EncodedFrame(self.image_size, self.processing_size, torch.from_numpy(self.latent.copy()).to(device))


class Job(Protocol):
    def run(self, segmenter: Segmenter): ...


@dataclass(frozen=True)
class SegmentJob:
    """The whole frame; with centers, its masks come from those cluster centres."""

    image: np.ndarray
    method: str = "emerdiff"
    centers: np.ndarray | None = None

    def run(self, segmenter: Segmenter) -> Segmentation:
        return segmenter.segment(self.image, centers=self.centers, method=self.method)


@dataclass(frozen=True)
class FeaturesJob:
    """Encoding and features only: consistent mode's first pass."""

    image: np.ndarray

    def run(self, segmenter: Segmenter) -> FrameFeatures:
        with FrameStats.frame(segmenter.model.device) as stats:
            frame = segmenter.encode(self.image, stats)
            features = segmenter.features(frame, stats)
        return FrameFeatures(frame.image_size, frame.processing_size, frame.latent.cpu().numpy(), features,
                             stats.seconds)


@dataclass(frozen=True)
class LabelJob:
    """Labels from shared centres and the first pass's latent and features: consistent mode's second pass."""

    frame: FrameFeatures
    centers: np.ndarray
    method: str = "emerdiff"

    def run(self, segmenter: Segmenter) -> Segmentation:
        with FrameStats.frame(segmenter.model.device) as stats:
            frame = self.frame.encoded(segmenter.model.device)
            masks = segmenter.cluster(self.frame.features, stats, self.centers)
            if self.method == "emerdiff":
                labels = segmenter.refine(frame, masks, stats)
            else:
                labels = segmenter.lowres(frame, masks, stats)
        stats.seconds += self.frame.seconds  # the frame's encoding and features, computed in the first pass
        return Segmentation(labels, masks, stats, segmenter.model.smoke_note)


@dataclass(frozen=True)
class PatchFeaturesJob:
    """method dino: the patch features a set of shared centres is fitted on."""

    image: np.ndarray

    def run(self, segmenter: DinoSegmenter) -> np.ndarray:
        return segmenter.image_features(self.image)


class FrameRunner(Protocol):
    """Does jobs for the tools: here (LocalRunner) or on a pool of workers."""

    config: EmerDiffConfig
    smoke_note: str | None

    def run(self, items: Iterable[tuple[K, Job | None]]) -> Iterator[tuple[K, object]]:
        """(key, result) for every (key, job), in the order given; a job of None gives None."""

    def lines(self) -> list[str]:
        """What the summary should add about the runner (workers, retries)."""


class LocalRunner:
    """Every job in this process, done when the tool asks for its result: the single-process tools."""

    def __init__(self, segmenter: Segmenter):
        self.segmenter = segmenter
        self.config = segmenter.config
        self.smoke_note = segmenter.model.smoke_note

    def run(self, items: Iterable[tuple[K, Job | None]]) -> Iterator[tuple[K, object]]:
        for key, job in items:
            yield key, None if job is None else job.run(self.segmenter)

    def lines(self) -> list[str]:
        return []


def runner_for(engine: Segmenter | DinoSegmenter | SegformerSegmenter | FrameRunner) -> FrameRunner:
    """A runner for a segmenter (this process), or the runner itself (a pool of workers)."""
    return LocalRunner(engine) if isinstance(engine, SEGMENTERS) else engine
