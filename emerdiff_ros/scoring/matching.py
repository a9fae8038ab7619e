"""Confusion counts of predicted clusters against classes, and their one-to-one (Hungarian) matching.

Clusters carry no class names, so each is matched to at most one class and each class to at most one
cluster, maximising the pixels that agree. A class's IoU counts the pixels of its matched cluster; the
pixels of clusters left unmatched count against the classes they belong to. Only pairs that share pixels
are matches, so no score depends on how the clusters are numbered.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..engine.labels import unlabelled
from .classmaps import IGNORE, ScoringError

MAX_LABEL = 65535  # predictions are uint8 or uint16 label images


@dataclass(frozen=True)
class Confusion:
    """Pixel counts (clusters present x classes) over the scored pixels; rows only for ids that occur."""

    clusters: np.ndarray  # (n,) sorted cluster ids
    counts: np.ndarray  # (n, classes) int64

    @classmethod
    def empty(cls, n_classes: int) -> "Confusion":
        return cls(np.zeros(0, np.int64), np.zeros((0, n_classes), np.int64))

    def __add__(self, other: "Confusion") -> "Confusion":
        clusters = np.union1d(self.clusters, other.clusters)
        counts = np.zeros((len(clusters), self.counts.shape[1]), np.int64)
        counts[np.searchsorted(clusters, self.clusters)] += self.counts
        counts[np.searchsorted(clusters, other.clusters)] += other.counts
        return Confusion(clusters, counts)

    @property
    def pixels(self) -> int:
        return int(self.counts.sum())


def check_prediction(pred: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The predicted labels as int64, after checking they are an (H, W) label image of the given size."""
    pred = np.asarray(pred)
    if pred.ndim != 2 or not (np.issubdtype(pred.dtype, np.integer) or pred.dtype == bool):
        raise ScoringError(f"predictions must be single-channel integer label images, got shape {pred.shape}, "
                           f"{pred.dtype}")
    if pred.shape != tuple(shape):
        raise ScoringError(f"prediction is {pred.shape[1]}x{pred.shape[0]} but the ground truth is "
                           f"{shape[1]}x{shape[0]} (width x height)")
    pred = pred.astype(np.int64)
    if pred.size and (pred.min() < 0 or pred.max() > MAX_LABEL):
        raise ScoringError(f"prediction values must be 0-{MAX_LABEL}, got {pred.min()}-{pred.max()}")
    return pred


def confusion(pred: np.ndarray, class_ids: np.ndarray, n_classes: int) -> Confusion:
    """Counts over the pixels whose class index is not IGNORE and that have a label (not the engine's
    no-label value, e.g. outside a center_crop); cluster ids compacted to those present."""
    class_ids = np.asarray(class_ids)
    missing = unlabelled(pred)
    pred = check_prediction(pred, class_ids.shape)
    scored = (class_ids != IGNORE) & ~missing
    rows, cols = pred[scored], class_ids[scored].astype(np.int64)
    if rows.size == 0:
        return Confusion.empty(n_classes)
    present = np.bincount(rows) > 0
    clusters = np.flatnonzero(present)
    row_of = np.cumsum(present) - 1
    counts = np.bincount(row_of[rows] * n_classes + cols, minlength=len(clusters) * n_classes)
    return Confusion(clusters, counts.reshape(len(clusters), n_classes).astype(np.int64))


@dataclass(frozen=True)
class Scores:
    iou: dict[str, float]  # class -> IoU, for every class present in the ground truth scored
    pixel_accuracy: float  # pixels of matched cluster and class that agree / scored pixels (nan if none)
    matching: dict[int, str]  # cluster id -> class it was matched to (pairs that share pixels)
    pixels: int  # scored pixels

    @property
    def miou(self) -> float:
        return float(np.mean(list(self.iou.values()))) if self.iou else float("nan")


@dataclass(frozen=True)
class Match:
    """One matching's per-class counts, which the set-level protocols sum."""

    tp: np.ndarray  # (classes,) pixels of the class in its matched cluster
    fp: np.ndarray  # pixels of other classes in the class's matched cluster
    fn: np.ndarray  # pixels of the class elsewhere
    scores: Scores


def match(table: Confusion, classes: tuple[str, ...]) -> Match:
    """Hungarian matching of clusters to the classes present, and the scores it gives."""
    counts = table.counts
    n = len(classes)
    tp, fp = np.zeros(n, np.int64), np.zeros(n, np.int64)
    totals = counts.sum(0)
    present = np.flatnonzero(totals > 0)
    matching = {}
    if len(present):
        # Equal totals (ties) are broken by the solver's row order: rows in the order of their counts, not
        # of their ids, so the same clustering numbered otherwise gets the same matching.
        order = np.lexsort(counts.T[::-1])
        sub = counts[order][:, present]
        rows, cols = linear_sum_assignment(sub, maximize=True)
        rows, sub = order[rows], counts[:, present]
        # A class left with no overlapping cluster is paired with an arbitrary one (the solver's tie
        # break, so the cluster numbering): such a pair is no match, and its pixels are no false positives.
        shared = sub[rows, cols] > 0
        rows, cols = rows[shared], cols[shared]
        tp[present[cols]] = sub[rows, cols]
        fp[present[cols]] = counts[rows].sum(1) - sub[rows, cols]
        matching = {int(table.clusters[r]): classes[present[c]] for r, c in zip(rows, cols)}
    fn = totals - tp
    iou = {classes[c]: float(tp[c] / (tp[c] + fp[c] + fn[c])) for c in present}
    pixels = int(totals.sum())
    return Match(tp, fp, fn, Scores(iou, float(tp.sum() / pixels) if pixels else float("nan"), matching, pixels))
