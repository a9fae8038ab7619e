"""Scores accumulated over frames under the three protocols of the unsupervised segmentation literature.

DiffSeg's evaluation code matches every class, also those absent from an image, so leftover clusters
can land on absent classes and count as their false positives, depending on how the solver breaks
ties; here, as in the other two protocols, only the classes present in an image are matched.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..engine.labels import unlabelled
from .classmaps import IGNORE, ClassMap, ScoringError
from .matching import Confusion, Scores, confusion, match

PROTOCOLS = {
    "per-image": "clusters matched to classes in each image; the mean over images of each image's mIoU",
    "whole-set": "one matching over the confusion summed over every frame; needs cluster ids that mean the "
                 "same in every frame",
    "diffseg": "clusters matched in each image, TP/FP/FN summed per class over the set, then IoU "
               "(DiffSeg's protocol)",
}


@dataclass(frozen=True)
class ProtocolScore:
    protocol: str  # a key of PROTOCOLS
    miou: float  # nan when nothing was scored
    pixel_accuracy: float
    iou: dict[str, float]  # per class (per-image: the mean over the images where the class occurs)

    @property
    def description(self) -> str:
        return PROTOCOLS[self.protocol]


class RunningScore:
    """Scores frames one at a time and keeps what the set-level protocols need.

    add() scores a frame alone (Hungarian matching within the frame) and accumulates the frame's
    confusion (for the whole-set matching, total()), its matched TP/FP/FN (for DiffSeg's protocol) and
    its pixels by the class their cluster was matched to in the frame (`matched`, what the per-image
    protocol sees). Frames added with a name are kept in `frames`.
    """

    def __init__(self, fmt: ClassMap, ignore_mask: np.ndarray | None = None):
        self.fmt = fmt
        self.ignore_mask = None if ignore_mask is None else np.asarray(ignore_mask, dtype=bool)
        n = len(fmt.classes)
        self.confusion = Confusion.empty(n)
        self.frames: dict[str, Scores] = {}
        self.frame_count = 0  # frames added
        self.scored_frames = 0  # frames with at least one scored pixel
        self.unlabelled_pixels = 0  # pixels the ground truth scores that carry no label (left out)
        self._tp, self._fp, self._fn = (np.zeros(n, np.int64) for _ in range(3))
        self._miou_sum = self._accuracy_sum = 0.0
        self._class_iou_sum, self._class_frames = np.zeros(n), np.zeros(n, np.int64)
        # (classes + 1, classes): pixels by the class their cluster was matched to in its frame (the last
        # row: clusters left unmatched) and by their ground-truth class
        self.matched = np.zeros((n + 1, n), np.int64)

    def add(self, pred_labels: np.ndarray, class_ids: np.ndarray, name: str | None = None) -> Scores:
        """Score one frame: pred_labels (H, W) cluster ids, class_ids (H, W) from fmt.decode()."""
        class_ids = np.asarray(class_ids)
        if self.ignore_mask is not None:
            if self.ignore_mask.shape != class_ids.shape:
                raise ScoringError(f"the ignore mask is {self.ignore_mask.shape[1]}x{self.ignore_mask.shape[0]}, "
                                   f"the ground truth {class_ids.shape[1]}x{class_ids.shape[0]}")
            class_ids = np.where(self.ignore_mask, IGNORE, class_ids)
        if name is not None and name in self.frames:
            raise ScoringError(f"frame {name!r} was scored already")
        table = confusion(pred_labels, class_ids, len(self.fmt.classes))
        self.unlabelled_pixels += int((unlabelled(pred_labels) & (class_ids != IGNORE)).sum())
        result = match(table, self.fmt.classes)
        scores = result.scores
        self.confusion = self.confusion + table
        self._tp += result.tp
        self._fp += result.fp
        self._fn += result.fn
        matched_class = {self.fmt.classes.index(name): cluster for cluster, name in scores.matching.items()}
        rows = np.full(len(table.clusters), len(self.fmt.classes))
        for c, cluster in matched_class.items():
            rows[np.searchsorted(table.clusters, cluster)] = c
        np.add.at(self.matched, rows, table.counts)
        self.frame_count += 1
        if scores.pixels:
            self.scored_frames += 1
            self._miou_sum += scores.miou
            self._accuracy_sum += scores.pixel_accuracy
            for cls, value in scores.iou.items():
                c = self.fmt.classes.index(cls)
                self._class_iou_sum[c] += value
                self._class_frames[c] += 1
        if name is not None:
            self.frames[name] = scores
        return scores

    @property
    def pixels(self) -> int:
        return self.confusion.pixels

    def total(self) -> Scores:
        """The whole-set (drive-level) matching over the accumulated confusion."""
        return match(self.confusion, self.fmt.classes).scores

    def protocols(self) -> dict[str, ProtocolScore]:
        classes = self.fmt.classes
        nan = float("nan")
        frames = self.scored_frames
        per_class = {classes[c]: float(self._class_iou_sum[c] / self._class_frames[c])
                     for c in np.flatnonzero(self._class_frames)}
        per_image = ProtocolScore("per-image", self._miou_sum / frames if frames else nan,
                                  self._accuracy_sum / frames if frames else nan, per_class)
        whole = self.total()
        union = self._tp + self._fp + self._fn
        diffseg_iou = {classes[c]: float(self._tp[c] / union[c]) for c in np.flatnonzero(self._tp + self._fn)}
        diffseg = ProtocolScore("diffseg", float(np.mean(list(diffseg_iou.values()))) if diffseg_iou else nan,
                                float(self._tp.sum() / self.pixels) if self.pixels else nan, diffseg_iou)
        return {"per-image": per_image,
                "whole-set": ProtocolScore("whole-set", whole.miou, whole.pixel_accuracy, whole.iou),
                "diffseg": diffseg}

    def headline(self, ids_consistent: bool) -> ProtocolScore:
        """The whole-set matching when cluster ids mean the same in every frame, else the per-image mean."""
        return self.protocols()["whole-set" if ids_consistent else "per-image"]
