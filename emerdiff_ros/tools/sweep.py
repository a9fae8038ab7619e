"""Parameter sweeps on one image: the ablations of the CARLA EmerDiff study, with figures.

The query features depend on none of K, lambda and t_m, so they are computed once; the k-means
masks depend only on K, so each K is clustered once and reused for every lambda and t_m.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..engine import Segmenter
from ..runtime.palette import overlay
from ..scoring import ClassMap, confusion, match

# parameter -> (label, values of the study)
STUDY = {
    "num_masks": ("K", [5, 10, 15, 20, 25, 30]),
    "modulation_lambda": ("lambda", [1.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1000.0]),
    "modulation_timestep": ("t_m", [1, 81, 281, 581, 881, 981]),
}


@dataclass
class SweepPoint:
    parameter: str
    value: float
    labels: np.ndarray
    seconds: float
    miou: float | None  # percent, with ground truth


def run_sweep(segmenter: Segmenter, image: np.ndarray, sweeps: dict[str, list], *, method: str = "emerdiff",
              gt: np.ndarray | None = None, gt_format: ClassMap | None = None) -> list[SweepPoint]:
    """gt: the image's class indices as gt_format.decode() gives them."""
    if gt is not None and gt.shape != image.shape[:2]:
        raise ValueError(f"ground truth {gt.shape} and image {image.shape[:2]} differ in size")
    frame = segmenter.encode(image)
    features = segmenter.features(frame)
    masks_by_k = {}
    points = []
    for parameter, values in sweeps.items():
        for value in values:
            setting = segmenter.with_config(**{parameter: value})
            k = setting.config.num_masks
            if k not in masks_by_k:
                masks_by_k[k] = setting.cluster(features)
            start = time.perf_counter()
            labels = setting.refine(frame, masks_by_k[k]) if method == "emerdiff" else setting.lowres(frame, masks_by_k[k])
            miou = None
            if gt is not None:
                miou = 100 * match(confusion(labels, gt, len(gt_format.classes)), gt_format.classes).scores.miou
            points.append(SweepPoint(parameter, value, labels, time.perf_counter() - start, miou))
    return points


def table(points: list[SweepPoint]) -> list[str]:
    lines = [f"{'parameter':10s} {'value':>8s} {'seconds':>8s} {'mIoU %':>8s}"]
    for p in points:
        miou = "" if p.miou is None else f"{p.miou:8.2f}"
        lines.append(f"{STUDY[p.parameter][0]:10s} {p.value:8g} {p.seconds:8.2f} {miou:>8s}")
    return lines


def save(points: list[SweepPoint], image: np.ndarray, out: Path, smoke_note: str | None) -> list[Path]:
    """sweep_overlays.png (a row per parameter), sweep_miou.png (with ground truth) and sweep.json."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    parameters = list(dict.fromkeys(p.parameter for p in points))
    rows = {name: [p for p in points if p.parameter == name] for name in parameters}
    columns = max(len(r) for r in rows.values())
    aspect = image.shape[0] / image.shape[1]
    fig, axes = plt.subplots(len(rows), columns, figsize=(2.6 * columns, len(rows) * (2.6 * aspect + 0.6)),
                             squeeze=False)
    for r, (name, row) in enumerate(rows.items()):
        for c in range(columns):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(row):
                p = row[c]
                ax.imshow(overlay(image, p.labels))
                ax.set_title(f"{STUDY[name][0]} = {p.value:g}" + ("" if p.miou is None else f"\nmIoU {p.miou:.1f}%"),
                             fontsize=9)
    if smoke_note:
        fig.suptitle(smoke_note, color="red")
    fig.tight_layout()
    written = [out / "sweep_overlays.png"]
    fig.savefig(written[0], dpi=110)
    plt.close(fig)

    if any(p.miou is not None for p in points):
        fig, axes = plt.subplots(1, len(rows), figsize=(4 * len(rows), 3.2), squeeze=False)
        for ax, (name, row) in zip(axes[0], rows.items()):
            ax.plot([p.value for p in row], [p.miou for p in row], marker="o")
            if name == "modulation_lambda":
                ax.set_xscale("log")
            ax.set_xlabel(STUDY[name][0])
            ax.set_ylabel("mIoU %")
            ax.grid(alpha=0.3)
        if smoke_note:
            fig.suptitle(smoke_note, color="red")
        fig.tight_layout()
        written.append(out / "sweep_miou.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)

    report = [{"parameter": STUDY[p.parameter][0], "value": p.value, "seconds": p.seconds, "miou": p.miou}
              for p in points]
    written.append(out / "sweep.json")
    written[-1].write_text(json.dumps({"smoke_run": smoke_note, "points": report}, indent=2))
    return written
