"""Segment single images or folders into <stem>_labels.png and <stem>_overlay.png."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .. import __version__
from ..engine import Segmentation, Segmenter
from ..engine.masks import kmeans_masks
from ..runtime.palette import overlay
from .images import read_rgb, write_labels, write_overlay

log = logging.getLogger(__name__)


@dataclass
class SegmentSummary:
    done: int = 0
    skipped: int = 0  # already segmented (--resume)
    failed: list[str] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    masks: list[int] = field(default_factory=list)
    smoke_note: str | None = None

    def lines(self) -> list[str]:
        out = [f"frames: {self.done} segmented, {self.skipped} already done, {len(self.failed)} failed"]
        if self.seconds:
            out.append(f"seconds per frame: {np.mean(self.seconds):.2f} (min {min(self.seconds):.2f}, "
                       f"max {max(self.seconds):.2f})")
            out.append(f"clusters used: mean {np.mean(self.masks):.1f} (min {min(self.masks)}, max {max(self.masks)})")
        out += [f"failed: {name}" for name in self.failed]
        if self.smoke_note:
            out.append(self.smoke_note)
        return out


def output_paths(out_dir: Path, image: Path) -> tuple[Path, Path]:
    return out_dir / f"{image.stem}_labels.png", out_dir / f"{image.stem}_overlay.png"


def check_unique_stems(images: list[Path]) -> None:
    seen: dict[str, Path] = {}
    for image in images:
        if image.stem in seen:
            raise ValueError(f"{seen[image.stem].name} and {image.name} would write the same outputs")
        seen[image.stem] = image


def save_segmentation(out_dir: Path, image_path: Path, rgb: np.ndarray, result: Segmentation, model: str) -> None:
    """Both PNGs, each written to a temporary name first so an interrupted run leaves no half file."""
    labels_path, overlay_path = output_paths(out_dir, image_path)
    description = (f"emerdiff_ros {__version__} labels of {image_path.name}; model={model}; "
                   f"clusters={result.masks.num_masks}" + (f"; {result.smoke_note}" if result.smoke_note else ""))
    for final, write in (
        (overlay_path, lambda p: write_overlay(p, overlay(rgb, result.labels), description, result.smoke_note)),
        (labels_path, lambda p: write_labels(p, result.labels, description)),  # last: it marks the frame done
    ):
        partial = final.with_name(f".{final.name}.partial")
        write(partial)
        os.replace(partial, final)


CENTERS_FILE = "emerdiff_centers.npz"
MAX_FIT_CELLS = 50_000  # feature cells k-means sees when fitting shared centres


def _read(path: Path, summary: SegmentSummary) -> np.ndarray | None:
    try:
        return read_rgb(path)
    except (OSError, ValueError) as exc:
        log.error("skipping %s: %s", path, exc)
        if path.name not in summary.failed:
            summary.failed.append(path.name)
        return None


def shared_centers(segmenter: Segmenter, images: list[Path], out_dir: Path, summary: SegmentSummary,
                   progress: bool = True) -> np.ndarray:
    """Cluster centres fitted on the features of every frame (saved in out_dir, reused by --resume)."""
    saved = out_dir / CENTERS_FILE
    params = json.dumps(segmenter.config.as_params(), sort_keys=True)
    if saved.exists():
        with np.load(saved) as data:
            if str(data["params"]) != params:
                raise ValueError(f"{saved} was fitted with other parameters; remove it or use the same ones")
            return data["centers"]
    budget = max(1, MAX_FIT_CELLS // len(images))
    rng = np.random.default_rng(segmenter.config.seed)
    cells = []
    for path in tqdm(images, desc="features", unit="frame", disable=not progress):
        rgb = _read(path, summary)
        if rgb is None:
            continue
        features = segmenter.features(segmenter.encode(rgb))
        flat = features.reshape(-1, features.shape[-1])
        cells.append(flat[rng.choice(len(flat), min(budget, len(flat)), replace=False)])
    if not cells:
        raise ValueError("no readable frames to fit shared cluster centres on")
    cfg = segmenter.config
    centers = kmeans_masks(np.concatenate(cells)[None], cfg.num_masks, cfg.kmeans_restarts, cfg.seed).centers
    np.savez(saved, centers=centers, params=params)
    return centers


def segment_images(segmenter: Segmenter, images: list[Path], out_dir: Path, *, resume: bool = False,
                   progress: bool = True, consistent: bool = False, method: str = "emerdiff") -> SegmentSummary:
    """Segment every image; with consistent, one set of cluster centres serves every frame."""
    check_unique_stems(images)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = SegmentSummary(smoke_note=segmenter.model.smoke_note)
    if not resume:
        (out_dir / CENTERS_FILE).unlink(missing_ok=True)
    centers = shared_centers(segmenter, images, out_dir, summary, progress) if consistent else None
    for path in tqdm(images, desc="segment", unit="frame", disable=not progress):
        if resume and all(p.exists() for p in output_paths(out_dir, path)):
            summary.skipped += 1
            continue
        rgb = _read(path, summary)
        if rgb is None:
            continue
        result = segmenter.segment(rgb, centers=centers, method=method)
        save_segmentation(out_dir, path, rgb, result, segmenter.config.model)
        summary.done += 1
        summary.seconds.append(result.stats.seconds)
        summary.masks.append(result.stats.masks)
    return summary
