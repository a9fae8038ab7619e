"""Unsupervised scoring: Hungarian matching of predicted clusters to classes, then IoU and accuracy.

Clusters carry no class names, so each is matched one-to-one to the class it overlaps most (a
minimum-cost assignment on the confusion matrix), per image and over the whole set. Unmatched
clusters count against every class their pixels belong to.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.optimize import linear_sum_assignment

from .groundtruth import GroundTruthFormat, decode, read_labels


@dataclass
class Scores:
    iou: dict[int, float]  # class id -> IoU, for every scored class present in the ground truth
    pixel_accuracy: float
    matching: dict[int, int]  # predicted cluster -> class id

    @property
    def miou(self) -> float:
        return float(np.mean(list(self.iou.values()))) if self.iou else float("nan")


def confusion(pred: np.ndarray, gt: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """(clusters, len(classes)) pixel counts over the pixels whose ground truth is a scored class."""
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in size")
    column = np.full(256, -1, dtype=np.int64)
    column[classes] = np.arange(len(classes))
    cols = column[gt.astype(np.int64).ravel()]
    keep = cols >= 0
    rows = pred.astype(np.int64).ravel()[keep]
    out = np.zeros((int(rows.max(initial=-1)) + 1, len(classes)), dtype=np.int64)
    np.add.at(out, (rows, cols[keep]), 1)
    return out


def score(counts: np.ndarray, classes: np.ndarray) -> Scores:
    """Match clusters to classes one-to-one on the confusion counts, then score the classes present."""
    present = counts.sum(0) > 0
    rows, cols = linear_sum_assignment(-counts)
    matched_cluster = np.full(len(classes), -1)
    matched_cluster[cols] = rows
    iou = {}
    for c in np.flatnonzero(present):
        p = matched_cluster[c]
        tp = counts[p, c] if p >= 0 else 0
        fp = counts[p].sum() - tp if p >= 0 else 0
        fn = counts[:, c].sum() - tp
        iou[int(classes[c])] = tp / (tp + fp + fn)
    total = counts.sum()
    hits = sum(counts[r, c] for r, c in zip(rows, cols))
    return Scores(iou, hits / total if total else float("nan"),
                  {int(r): int(classes[c]) for r, c in zip(rows, cols) if counts[r, c] > 0})


@dataclass
class Evaluation:
    whole_set: Scores
    per_image: dict[str, Scores]
    counts: np.ndarray  # whole-set confusion, clusters x classes
    classes: np.ndarray

    def lines(self, fmt: GroundTruthFormat) -> list[str]:
        out = [f"{'image':32s} {'mIoU %':>8s} {'pixel acc %':>12s}"]
        for name, s in self.per_image.items():
            out.append(f"{name:32s} {100 * s.miou:8.2f} {100 * s.pixel_accuracy:12.2f}")
        per_image = [s.miou for s in self.per_image.values()]
        out.append(f"{'mean per image':32s} {100 * np.nanmean(per_image):8.2f} "
                   f"{100 * np.mean([s.pixel_accuracy for s in self.per_image.values()]):12.2f}")
        out += ["", f"{'class (whole-set matching)':32s} {'IoU %':>8s} {'cluster':>8s}"]
        cluster_of = {c: p for p, c in self.whole_set.matching.items()}
        for class_id, value in self.whole_set.iou.items():
            cluster = cluster_of.get(class_id)
            out.append(f"{fmt.classes.get(class_id, str(class_id)):32s} {100 * value:8.2f} "
                       f"{'-' if cluster is None else cluster:>8}")
        out += [f"pixel accuracy: {100 * self.whole_set.pixel_accuracy:.2f}",
                f"mIoU: {100 * self.whole_set.miou:.2f}"]
        return out


def pair_files(pred_dir: Path, gt_dir: Path) -> list[tuple[str, Path, Path]]:
    """(stem, prediction, ground truth) for every ground-truth file; a prediction is <stem>_labels.png or <stem>.png."""
    gt_files = sorted(p for p in gt_dir.iterdir() if p.suffix.lower() == ".png")
    if not gt_files:
        raise FileNotFoundError(f"no ground-truth PNGs in {gt_dir}")
    pairs, missing = [], []
    for gt in gt_files:
        pred = next((p for p in (pred_dir / f"{gt.stem}_labels.png", pred_dir / gt.name) if p.is_file()), None)
        if pred is None:
            missing.append(gt.stem)
        else:
            pairs.append((gt.stem, pred, gt))
    if missing:
        raise FileNotFoundError(f"no prediction in {pred_dir} for {len(missing)} ground-truth images: "
                                f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    return pairs


def read_prediction(path: Path, size: tuple[int, int]) -> np.ndarray:
    """Cluster ids at the ground truth's (height, width); nearest resampling if the sizes differ."""
    pred = read_labels(path)
    if pred.ndim != 2:
        raise ValueError(f"{path} is not a single-channel label image")
    if pred.shape != size:
        pred = np.array(Image.fromarray(pred).resize(size[::-1], Image.NEAREST))
    return pred


def evaluate(pairs: list[tuple[str, Path, Path]], fmt: GroundTruthFormat, ignore: set[int] = frozenset()) -> Evaluation:
    classes = np.array(sorted(fmt.evaluated - set(ignore)))
    total = np.zeros((0, len(classes)), dtype=np.int64)
    per_image = {}
    for name, pred_path, gt_path in pairs:
        gt = decode(gt_path, fmt)
        counts = confusion(read_prediction(pred_path, gt.shape), gt, classes)
        per_image[name] = score(counts, classes)
        if counts.shape[0] > total.shape[0]:
            total = np.pad(total, ((0, counts.shape[0] - total.shape[0]), (0, 0)))
        total[: counts.shape[0]] += counts
    return Evaluation(score(total, classes), per_image, total, classes)


def confusion_figure(evaluation: Evaluation, fmt: GroundTruthFormat, path: Path) -> None:
    """Row-normalised confusion: ground-truth classes down, clusters across (matched ones first)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts, classes = evaluation.counts, evaluation.classes
    present = np.flatnonzero(counts.sum(0) > 0)
    matched = [p for c in present for p, cc in evaluation.whole_set.matching.items() if cc == classes[c]]
    order = matched + [p for p in range(counts.shape[0]) if p not in matched]
    matrix = counts[order][:, present].T.astype(float)
    matrix /= np.maximum(matrix.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(order) + 3), max(4, 0.35 * len(present) + 2)))
    image = ax.imshow(matrix, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax.set_yticks(range(len(present)), [fmt.classes.get(int(classes[c]), str(classes[c])) for c in present])
    ax.set_xticks(range(len(order)), [str(p) for p in order], rotation=90)
    ax.set_xlabel("predicted cluster (matched clusters first, in class order)")
    ax.set_ylabel("ground-truth class")
    ax.set_title(f"whole-set matching: mIoU {100 * evaluation.whole_set.miou:.2f} %")
    fig.colorbar(image, ax=ax, label="fraction of the class's pixels")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
