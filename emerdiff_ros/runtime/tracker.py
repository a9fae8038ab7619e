"""Stable label values across frames: each frame's clusters are matched to the tracked ones."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..engine.labels import no_label, unlabelled


class LabelTracker:
    """Assigns every cluster of a frame a stable id.

    Clusters are matched to tracked clusters by a minimum-cost assignment on the distance between
    cluster centres in feature space; a tracked centre follows its cluster with an exponential
    moving average. Clusters beyond the tracked ones get new ids, so ids stay below the largest K
    seen and a label value keeps its meaning (and colour) over a drive.
    """

    def __init__(self, smoothing: float = 0.5):
        if not 0.0 < smoothing <= 1.0:
            raise ValueError(f"smoothing must be in (0, 1], got {smoothing}")
        self.smoothing = smoothing
        self._centers: np.ndarray | None = None

    @property
    def size(self) -> int:
        """How many stable ids exist."""
        return 0 if self._centers is None else len(self._centers)

    def reset(self) -> None:
        self._centers = None

    def state(self) -> np.ndarray:
        """The tracked centres, to continue later from exactly here (an empty array before any frame)."""
        return np.zeros((0, 0)) if self._centers is None else self._centers.copy()

    def restore(self, state: np.ndarray) -> None:
        self._centers = None if state.size == 0 else np.asarray(state, dtype=np.float64).copy()

    def assign(self, centers: np.ndarray) -> np.ndarray:
        """Stable id of each of this frame's clusters, (k,) int64."""
        centers = np.asarray(centers, dtype=np.float64)
        if self._centers is None or self._centers.shape[1] != centers.shape[1]:
            self._centers = centers.copy()
            return np.arange(len(centers))
        tracked = self._centers
        cost = np.sqrt(np.maximum(
            (centers**2).sum(1)[:, None] - 2 * centers @ tracked.T + (tracked**2).sum(1)[None], 0.0))
        rows, cols = linear_sum_assignment(cost)
        ids = np.empty(len(centers), dtype=np.int64)
        ids[rows] = cols
        fresh = np.setdiff1d(np.arange(len(centers)), rows)
        ids[fresh] = len(tracked) + np.arange(len(fresh))
        updated = np.concatenate([tracked, centers[fresh]])
        updated[cols] += self.smoothing * (centers[rows] - tracked[cols])
        self._centers = updated
        return ids

    @staticmethod
    def relabel(labels: np.ndarray, ids: np.ndarray, dtype: np.dtype) -> np.ndarray:
        """The label image with every cluster id replaced by its stable id; no-label pixels keep no label."""
        missing = unlabelled(labels)
        if not missing.any():
            return ids.astype(dtype)[labels]
        out = np.full(labels.shape, no_label(dtype), dtype=dtype)
        out[~missing] = ids.astype(dtype)[labels[~missing]]
        return out
