"""`emerdiff compare`: the CARLA study's comparison with numbers, on the user's frames.

Each method segments the frames once, into OUT/<method>/ exactly as `emerdiff segment` would; eval's
scoring (every protocol) scores each folder; compare.json, compare.png and a table put them side by
side. The seconds and memory of each frame are kept in OUT/<method>/timing.json, so --resume
reports the frames an earlier run segmented too.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from ..scoring import ClassMap, ScoringError
from .evaluate import Evaluation, evaluate_folders
from .segment import SegmentSummary, output_paths, segment_images

TIMING_FILE = "timing.json"
SUPERVISED = {"segformer": "supervised on Cityscapes: a reference, not an unsupervised competitor"}


@dataclass
class MethodResult:
    method: str
    evaluation: Evaluation
    seconds: dict[str, float]  # frame file -> seconds it took
    peak_memory_mb: float  # CUDA: peak allocated in a frame; CPU: the process's peak RSS (earlier methods too)

    @property
    def seconds_per_frame(self) -> float:
        return float(np.mean(list(self.seconds.values()))) if self.seconds else math.nan

    def report(self) -> dict:
        full = self.evaluation.report()
        return {"headline": full["headline"], "miou": full["miou"], "pixel_accuracy": full["pixel_accuracy"],
                "protocols": full["protocols"], "label_ids": full["label_ids"],
                "supervised": SUPERVISED.get(self.method), "smoke_run": full["smoke_run"],
                "seconds_per_frame": _finite(self.seconds_per_frame), "peak_memory_mb": _finite(self.peak_memory_mb),
                "frames_segmented_with_timing": len(self.seconds),
                "per_image_miou": {name: s["miou"] for name, s in full["per_image"].items()}}


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else value


def _timing(folder: Path, summary: SegmentSummary, resume: bool) -> tuple[dict[str, float], float]:
    """Seconds of every frame and the peak memory, this run's merged with what earlier runs recorded."""
    path = folder / TIMING_FILE
    recorded = json.loads(path.read_text()) if resume and path.exists() else {"seconds": {}, "peak_memory_mb": 0.0}
    seconds = {**recorded["seconds"], **dict(zip(summary.names, summary.seconds))}
    peak = max([recorded["peak_memory_mb"], *summary.peak_memory_mb])
    path.write_text(json.dumps({"seconds": seconds, "peak_memory_mb": peak}, indent=2) + "\n")
    return seconds, peak


def check_ground_truth(images: list[Path], gt_dir: Path) -> None:
    """Before any segmenting: every frame has its ground truth <stem>.png."""
    if not gt_dir.is_dir():
        problem = "is not a folder" if gt_dir.exists() else "does not exist"
        raise ScoringError(f"the ground-truth folder {gt_dir} {problem}")
    missing = [image.name for image in images if not (gt_dir / f"{image.stem}.png").is_file()]
    if missing:
        raise ScoringError(f"{len(missing)} of {len(images)} frames have no ground truth <stem>.png in {gt_dir}: "
                           f"{', '.join(missing[:5])}")


def compare_methods(load: Callable[[str], object], methods: list[str], images: list[Path], gt_dir: Path,
                    fmt: ClassMap, out: Path, *, resume: bool = False, progress: bool = True) -> list[MethodResult]:
    """Segment the images with each method (load(method) gives its segmenter), then score each folder."""
    check_ground_truth(images, gt_dir)
    results = []
    for method in methods:
        folder = out / method
        done = resume and all(output_paths(folder, image)[0].exists() for image in images)
        summary = SegmentSummary()
        if not done:  # the model loads only when a frame is left to segment; freed before the next
            engine = load(method)
            summary = segment_images(engine, images, folder, resume=resume, progress=progress, method=method)
            del engine
        seconds, peak = _timing(folder, summary, resume)
        results.append(MethodResult(method, evaluate_folders(folder, gt_dir, fmt), seconds, peak))
    return results


def table(results: list[MethodResult]) -> list[str]:
    """One line per method: the headline mIoU (eval's choice of protocol), every protocol, speed, memory."""
    protocols = list(results[0].evaluation.drive.protocols())
    lines = [f"{'method':10s} {'mIoU %':>7s} {'(protocol)':11s} " + " ".join(f"{p:>9s}" for p in protocols)
             + f" {'pixel acc %':>11s} {'s/frame':>8s} {'peak MB':>8s}"]
    for r in results:
        drive = r.evaluation.drive
        best = drive.headline(r.evaluation.ids_consistent)
        scores = drive.protocols()
        lines.append(f"{r.method:10s} {100 * best.miou:7.2f} {'(' + best.protocol + ')':11s} "
                     + " ".join(f"{100 * scores[p].miou:9.2f}" for p in protocols)
                     + f" {100 * best.pixel_accuracy:11.2f} {r.seconds_per_frame:8.2f} {r.peak_memory_mb:8.0f}")
    lines += [f"{method}: {why}" for method, why in SUPERVISED.items() if method in {r.method for r in results}]
    notes = {r.evaluation.smoke_note for r in results if r.evaluation.smoke_note}
    return lines + sorted(notes)


def write_report(results: list[MethodResult], images: list[Path], gt_dir: Path, out: Path) -> list[Path]:
    report = {"frames": [image.name for image in images], "ground_truth": results[0].evaluation.fmt.as_dict(),
              "methods": {r.method: r.report() for r in results}}
    json_path = out / "compare.json"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    figure_path = out / "compare.png"
    figure(results, images, gt_dir, out, figure_path)
    return [json_path, figure_path]


def figure(results: list[MethodResult], images: list[Path], gt_dir: Path, out: Path, path: Path) -> None:
    """A row per frame: the image, its ground truth, then each method's overlay with its mIoU on that frame."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = 2 + len(results)
    fig, axes = plt.subplots(len(images), columns, figsize=(3 * columns, 2 * len(images)), squeeze=False)
    for row, image in zip(axes, images):
        gt = gt_dir / f"{image.stem}.png"
        panels = [(Image.open(image).convert("RGB"), image.stem), (Image.open(gt).convert("RGB"), "ground truth")]
        for r in results:
            score = r.evaluation.drive.frames[image.stem].miou
            kind = " (supervised)" if r.method in SUPERVISED else ""
            panels.append((Image.open(output_paths(out / r.method, image)[1]), f"{r.method}{kind} {100 * score:.1f}"))
        for ax, (picture, title) in zip(row, panels):
            ax.imshow(picture)
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    notes = sorted({r.evaluation.smoke_note for r in results if r.evaluation.smoke_note})
    if notes:
        fig.suptitle("\n".join(notes), color="red", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

