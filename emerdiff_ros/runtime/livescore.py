"""Live scoring of a drive against the simulator's ground truth, with `emerdiff eval`'s code and conventions."""

from __future__ import annotations

import math
import threading

import numpy as np

from ..scoring import ClassMap, RunningScore, Scores


class LiveScore:
    """Each frame scored alone, and the drive so far: the whole-set matching over the confusion summed
    across frames when label values are stable (tracked), else the mean of the frames (eval's headline)."""

    def __init__(self, fmt: ClassMap, ids_consistent: bool):
        self._lock = threading.Lock()
        self.fmt, self.ids_consistent = fmt, ids_consistent
        self.drive = RunningScore(fmt)
        self.last: Scores | None = None

    def add(self, labels: np.ndarray, ground_truth: np.ndarray) -> dict[str, float]:
        """Score one frame: labels (H, W) cluster ids, ground_truth the semantic image's pixels as decoded from
        its message. Raises ScoringError (a ValueError) when the ground truth cannot be scored."""
        class_ids = self.fmt.decode(ground_truth)
        with self._lock:
            self.last = self.drive.add(labels, class_ids)
            return self._values()

    def values(self) -> dict[str, float]:
        """frame_miou, frame_pixel_accuracy, drive_miou, drive_pixel_accuracy in percent (nan before a frame)."""
        with self._lock:
            return self._values()

    @property
    def protocol(self) -> str:
        return "whole-set" if self.ids_consistent else "per-image"

    def _values(self) -> dict[str, float]:
        if self.last is None:
            return dict.fromkeys(("frame_miou", "frame_pixel_accuracy", "drive_miou", "drive_pixel_accuracy"),
                                 math.nan)
        drive = self.drive.headline(self.ids_consistent)
        return {"frame_miou": 100 * self.last.miou, "frame_pixel_accuracy": 100 * self.last.pixel_accuracy,
                "drive_miou": 100 * drive.miou, "drive_pixel_accuracy": 100 * drive.pixel_accuracy}
