"""Parameter sweeps on one image: the CARLA study's ablations and the method's open choices, with figures.

Parameters are swept one at a time (the others at the preset's values) or, with grid=True, in every
combination. Work is reused wherever it stays valid: the encoded frame and the query features depend
on the processing (not on K, lambda, t_m, the modulation point, the blur or attention injection), the k-means
masks on those and K, and a setting that equals one already run (a swept value that is the preset's
own) reuses its labels.
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..engine.config import BASELINE_METHODS, BLUR_TARGETS, MODULATION_POINTS, PROCESSING_MODES, EmerDiffConfig
from ..runtime.palette import overlay
from ..scoring import ClassMap, ScoringError, confusion, match

if TYPE_CHECKING:  # the engine loads torch: the CLI reads SWEEPS to build its flags without it
    from ..engine import DinoSegmenter, SegformerSegmenter, Segmenter

# parameter -> (label, values tried when none are given): the CARLA study's values for K, lambda and
# t_m, every choice for the categorical ones.
SWEEPS = {
    "num_masks": ("K", [5, 10, 15, 20, 25, 30]),
    "modulation_lambda": ("lambda", [1.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1000.0]),
    "modulation_timestep": ("t_m", [1, 81, 281, 581, 881, 981]),
    "modulation_point": ("point", list(MODULATION_POINTS)),
    "blur_target": ("blur", list(BLUR_TARGETS)),
    "processing": ("processing", list(PROCESSING_MODES)),
    "attention_injection": ("injection", [True, False]),
}
# The swept parameters dino and segformer read (the others are EmerDiff's own).
BASELINE_SWEEPS = {"dino": ("num_masks", "processing"), "segformer": ("processing",)}
# The configuration fields each cached stage depends on.
ENCODING = ("processing", "resolution")
FEATURES = ENCODING + ("feature_timestep", "feature_draws", "feature_layer", "seed")
CLUSTERING = FEATURES + ("num_masks", "kmeans_restarts")


@dataclass
class SweepPoint:
    setting: dict[str, Any]  # the swept parameters of this point -> their values
    labels: np.ndarray
    seconds: float  # of the modulated denoising and decoding (or the lowres upsampling) for this setting
    miou: float | None  # percent, with ground truth


def shown(value: Any) -> str:
    """A swept value as tables and figures print it."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)


def settings(sweeps: dict[str, list], grid: bool = False) -> list[dict[str, Any]]:
    """The settings to run: each value of each parameter on its own, or every combination."""
    if grid:
        return [dict(zip(sweeps, values)) for values in itertools.product(*sweeps.values())]
    return [{parameter: value} for parameter, values in sweeps.items() for value in values]


def run_sweep(segmenter: Segmenter | DinoSegmenter | SegformerSegmenter, image: np.ndarray, sweeps: dict[str, list],
              *, grid: bool = False,
              method: str = "emerdiff", gt: np.ndarray | None = None,
              gt_format: ClassMap | None = None) -> list[SweepPoint]:
    """gt: the image's class indices as gt_format.decode() gives them."""
    if gt is not None and gt.shape != image.shape[:2]:
        raise ScoringError(f"ground truth {gt.shape} and image {image.shape[:2]} differ in size")
    frames, features, masks, results = {}, {}, {}, {}
    points = []
    for setting in settings(sweeps, grid):
        run = segmenter.with_config(**setting)
        cfg = run.config
        if method in BASELINE_METHODS:  # one network pass per frame: nothing worth keeping between settings
            if cfg not in results:
                start = time.perf_counter()
                results[cfg] = run.segment(image, method=method).labels, time.perf_counter() - start
            points.append(_point(setting, *results[cfg], gt, gt_format))
            continue
        encoding, feature_key, clustering = (_key(cfg, fields) for fields in (ENCODING, FEATURES, CLUSTERING))
        if encoding not in frames:
            frames[encoding] = run.encode(image)
        frame = frames[encoding]
        if feature_key not in features:
            features[feature_key] = run.features(frame)
        if clustering not in masks:
            masks[clustering] = run.cluster(features[feature_key])
        if cfg not in results:
            start = time.perf_counter()
            mask = masks[clustering]
            labels = run.refine(frame, mask) if method == "emerdiff" else run.lowres(frame, mask)
            results[cfg] = labels, time.perf_counter() - start
        points.append(_point(setting, *results[cfg], gt, gt_format))
    return points


def _point(setting: dict[str, Any], labels: np.ndarray, seconds: float, gt: np.ndarray | None,
           gt_format: ClassMap | None) -> SweepPoint:
    miou = None
    if gt is not None:
        miou = 100 * match(confusion(labels, gt, len(gt_format.classes)), gt_format.classes).scores.miou
    return SweepPoint(setting, labels, seconds, miou)


def _key(config: EmerDiffConfig, fields: tuple[str, ...]) -> tuple:
    return tuple(getattr(config, name) for name in fields)


def _is_grid(points: list[SweepPoint]) -> bool:
    return len(points[0].setting) > 1


def table(points: list[SweepPoint]) -> list[str]:
    """One line per point: parameter and value (one at a time), or a column per parameter (grid)."""
    if _is_grid(points):
        names = [SWEEPS[parameter][0] for parameter in points[0].setting]
        width = max(len(name) for name in names)
        lines = [" ".join(f"{name:>{width}s}" for name in names) + f" {'seconds':>8s} {'mIoU %':>8s}"]
        for p in points:
            values = " ".join(f"{shown(v):>{width}s}" for v in p.setting.values())
            lines.append(f"{values} {p.seconds:8.2f} {_miou(p):>8s}")
        return lines
    lines = [f"{'parameter':10s} {'value':>17s} {'seconds':>8s} {'mIoU %':>8s}"]
    for p in points:
        (parameter, value), = p.setting.items()
        lines.append(f"{SWEEPS[parameter][0]:10s} {shown(value):>17s} {p.seconds:8.2f} {_miou(p):>8s}")
    return lines


def _miou(point: SweepPoint) -> str:
    return "" if point.miou is None else f"{point.miou:8.2f}"


def _title(setting: dict[str, Any]) -> str:
    return ", ".join(f"{SWEEPS[parameter][0]} = {shown(value)}" for parameter, value in setting.items())


def _rows(points: list[SweepPoint]) -> tuple[str, dict[str, list[SweepPoint]]]:
    """(the parameter along each row, rows by title): a row per parameter (one at a time), or (grid) a row
    per combination of the other parameters, along the one with the most values (the last of a tie)."""
    if not _is_grid(points):
        rows: dict[str, list[SweepPoint]] = {}
        for p in points:
            rows.setdefault(next(iter(p.setting)), []).append(p)
        return "", rows
    names = list(points[0].setting)
    counts = {name: len({repr(p.setting[name]) for p in points}) for name in names}
    along = max(reversed(names), key=counts.get)
    rows = {}
    for p in points:
        rows.setdefault(_title({name: p.setting[name] for name in names if name != along}), []).append(p)
    return along, rows


def save(points: list[SweepPoint], image: np.ndarray, out: Path, smoke_note: str | None) -> list[Path]:
    """sweep_overlays.png, sweep_miou.png (with ground truth) and sweep.json."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    along, rows = _rows(points)
    columns = max(len(r) for r in rows.values())
    aspect = image.shape[0] / image.shape[1]
    fig, axes = plt.subplots(len(rows), columns, figsize=(2.6 * columns, len(rows) * (2.6 * aspect + 0.8)),
                             squeeze=False)
    for r, row in enumerate(rows.values()):
        for c in range(columns):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(row):
                p = row[c]
                ax.imshow(overlay(image, p.labels))
                score = "" if p.miou is None else f"\nmIoU {p.miou:.1f}%"
                ax.set_title(_title(p.setting).replace(", ", "\n") + score, fontsize=8)
    if smoke_note:
        fig.suptitle(smoke_note, color="red")
    fig.tight_layout()
    written = [out / "sweep_overlays.png"]
    fig.savefig(written[0], dpi=110)
    plt.close(fig)

    if any(p.miou is not None for p in points):
        # One panel per parameter (one at a time), or one panel with a line per row (grid).
        panels = [(parameter, {"": row}) for parameter, row in rows.items()] if not along else [(along, rows)]
        fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels) + (3 if along else 0), 3.2), squeeze=False)
        for ax, (parameter, lines) in zip(axes[0], panels):
            for name, row in lines.items():
                values = [p.setting[parameter] for p in row]
                categorical = any(isinstance(v, (bool, str)) for v in values)
                ax.plot([shown(v) for v in values] if categorical else values, [p.miou for p in row], marker="o",
                        label=name or None)
            if parameter == "modulation_lambda":
                ax.set_xscale("log")
            ax.set_xlabel(SWEEPS[parameter][0])
            ax.set_ylabel("mIoU %")
            ax.grid(alpha=0.3)
            if along:
                ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
        if smoke_note:
            fig.suptitle(smoke_note, color="red")
        fig.tight_layout()
        written.append(out / "sweep_miou.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)

    report = [{"setting": {SWEEPS[k][0]: v for k, v in p.setting.items()}, "seconds": p.seconds, "miou": p.miou}
              for p in points]
    written.append(out / "sweep.json")
    written[-1].write_text(json.dumps({"smoke_run": smoke_note, "grid": _is_grid(points), "points": report}, indent=2))
    return written
