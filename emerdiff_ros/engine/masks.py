"""Low-resolution masks: k-means on the query features (scikit-learn)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.cluster import KMeans


@dataclass
class LowResMasks:
    """Cluster id of every feature-grid cell, and the cluster centres in feature space."""

    grid: np.ndarray  # (h, w) int64, values in [0, len(centers))
    centers: np.ndarray  # (k, channels) float32

    @property
    def num_masks(self) -> int:
        return len(self.centers)

    def present(self) -> np.ndarray:
        """Ids of the clusters that cover at least one cell (all of them after k-means)."""
        return np.unique(self.grid)


def kmeans_masks(features: np.ndarray, num_masks: int, restarts: int, seed: int) -> LowResMasks:
    """k-means on an (h, w, channels) feature grid.

    K is lowered to the number of distinct feature vectors when the image has fewer. Clusters are
    numbered in the raster order of their first cell, so the numbering does not depend on
    k-means' internal order.
    """
    h, w, channels = features.shape
    flat = features.reshape(-1, channels).astype(np.float32, copy=False)
    k = min(num_masks, len(np.unique(flat, axis=0)))
    km = KMeans(n_clusters=k, n_init=restarts, random_state=seed).fit(flat)
    _, first = np.unique(km.labels_, return_index=True)
    order = np.argsort(first)  # old ids sorted by first appearance
    remap = np.empty(k, dtype=np.int64)
    remap[order] = np.arange(k)
    return LowResMasks(grid=remap[km.labels_].reshape(h, w), centers=km.cluster_centers_[order].astype(np.float32))


def fit_centers(cells: list[np.ndarray], num_masks: int, restarts: int, seed: int) -> np.ndarray:
    """Cluster centres fitted on the (n_i, channels) feature cells of several frames together: one set of
    clusters, so one label space, for all of them (numbered by first appearance, frames in the order given)."""
    return kmeans_masks(np.concatenate(cells)[None], num_masks, restarts, seed).centers


def assign_to_centers(features: np.ndarray, centers: np.ndarray) -> LowResMasks:
    """Masks from given centres (nearest centre per cell), e.g. centres shared by a whole folder."""
    h, w, channels = features.shape
    if centers.ndim != 2 or centers.shape[1] != channels:
        raise ValueError(f"centres have shape {centers.shape}, features have {channels} channels")
    flat = features.reshape(-1, channels).astype(np.float32, copy=False)
    distances = (flat**2).sum(1)[:, None] - 2.0 * flat @ centers.T + (centers**2).sum(1)[None, :]
    return LowResMasks(grid=distances.argmin(1).reshape(h, w), centers=centers.astype(np.float32))
