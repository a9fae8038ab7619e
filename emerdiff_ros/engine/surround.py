"""A surround frame (the cameras' images of one stamp) segmented in one label space.

The masks come from k-means over every camera's features together, so a cluster is the same region
class in every camera; each camera's labels then come from those shared centres (its modulated
denoising uses the shared clusters present in its own feature grid). The work is two rounds of
per-camera jobs, features and then labels, with the fit between them: a caller that has several
devices runs the jobs of a round on all of them at once; one that has one device runs them in turn.
Either way the labels are the same: every job seeds its own noise.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from .config import CLASS_ID_METHODS, DIFFUSION_METHODS, EmerDiffConfig
from .jobs import FeaturesJob, Job, LabelJob, PatchFeaturesJob, SegmentJob
from .masks import fit_centers
from .segmenter import Segmentation

RunRound = Callable[[list[Job]], list]  # does a round's jobs, in parallel where it can; results in job order


def one_by_one(segmenter) -> RunRound:
    """A round's jobs one after another on one segmenter."""
    return lambda jobs: [job.run(segmenter) for job in jobs]


def segment_surround(images: Sequence[np.ndarray], method: str, config: EmerDiffConfig,
                     run_round: RunRound) -> list[Segmentation]:
    """Every camera's segmentation, in the order of images, with one set of cluster centres for all."""
    if method in CLASS_ID_METHODS:  # its values are classes: one label space already
        return run_round([SegmentJob(image, method) for image in images])
    diffusion = method in DIFFUSION_METHODS
    found = run_round([FeaturesJob(image) if diffusion else PatchFeaturesJob(image) for image in images])
    grids = [frame.features for frame in found] if diffusion else found
    start = time.perf_counter()
    centers = fit_centers([grid.reshape(-1, grid.shape[-1]) for grid in grids], config.num_masks,
                          config.kmeans_restarts, config.seed)
    fit_seconds = time.perf_counter() - start
    # dino's patch features are cheap: its second round computes them again rather than carrying them.
    results = run_round([LabelJob(frame, centers, method) for frame in found] if diffusion
                        else [SegmentJob(image, method, centers) for image in images])
    for result in results:  # each camera's k-means stage shows the fit its labels needed (done once for all)
        result.stats.stage_seconds["kmeans"] += fit_seconds
    return results


@dataclass(frozen=True)
class SurroundJob:
    """A whole surround frame as one job, for a pool of workers: one worker does its rounds in turn."""

    images: tuple[np.ndarray, ...]
    method: str = "emerdiff"

    def run(self, segmenter) -> list[Segmentation]:
        return segment_surround(self.images, self.method, segmenter.config, one_by_one(segmenter))
