"""Segment single images or folders into <stem>_labels.png and <stem>_overlay.png."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .. import __version__
from ..engine import EmerDiffConfig, Segmentation, Segmenter
from ..engine.config import BASELINE_METHODS, CLASS_ID_METHODS, method_model
from ..engine.jobs import FeaturesJob, FrameFeatures, FrameRunner, LabelJob, SegmentJob, runner_for
from ..engine.masks import fit_centers
from ..runtime.palette import overlay
from ..scoring import folder_ids_consistent, write_segment_manifest
from .errors import SegmentError
from .images import read_rgb, write_labels, write_overlay

log = logging.getLogger(__name__)


@dataclass
class SegmentSummary:
    done: int = 0
    skipped: int = 0  # already segmented (--resume)
    failed: list[str] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    masks: list[int] = field(default_factory=list)
    names: list[str] = field(default_factory=list)  # the segmented frames' files, in the order of seconds
    peak_memory_mb: list[float] = field(default_factory=list)  # FrameStats.peak_memory_mb of each
    smoke_note: str | None = None
    fit_seconds: float | None = None  # fitting the shared centres (--consistent)
    wall_seconds: float = 0.0

    def lines(self) -> list[str]:
        out = [f"frames: {self.done} segmented, {self.skipped} already done, {len(self.failed)} failed"]
        if self.seconds:
            out.append(f"seconds per frame: {np.mean(self.seconds):.2f} (min {min(self.seconds):.2f}, "
                       f"max {max(self.seconds):.2f})")
            out.append(f"clusters used: mean {np.mean(self.masks):.1f} (min {min(self.masks)}, max {max(self.masks)})")
        if self.fit_seconds is not None:
            out.append(f"fitting the shared cluster centres (k-means): {self.fit_seconds:.2f} s")
        if self.wall_seconds:
            out.append(f"wall time: {self.wall_seconds:.1f} s")
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
            raise SegmentError(f"{seen[image.stem].name} and {image.name} would write the same outputs")
        seen[image.stem] = image


def save_segmentation(out_dir: Path, image_path: Path, rgb: np.ndarray, result: Segmentation, model: str) -> None:
    """Both PNGs, each written to a temporary name first so an interrupted run leaves no half file."""
    labels_path, overlay_path = output_paths(out_dir, image_path)
    ids = "Cityscapes train ids" if result.masks is None else f"clusters={result.masks.num_masks}"
    description = (f"emerdiff_ros {__version__} labels of {image_path.name}; model={model}; {ids}"
                   + (f"; {result.smoke_note}" if result.smoke_note else ""))
    for final, write in (
        (overlay_path, lambda p: write_overlay(p, overlay(rgb, result.labels), description, result.smoke_note)),
        (labels_path, lambda p: write_labels(p, result.labels, description)),  # last: it marks the frame done
    ):
        partial = final.with_name(f".{final.name}.partial")
        write(partial)
        os.replace(partial, final)


CENTERS_FILE = "emerdiff_centers.npz"
FEATURES_DIR = ".emerdiff_features"  # each frame's latent and features from the fitting pass, until labelled
MAX_FIT_CELLS = 50_000  # feature cells k-means sees when fitting shared centres


def _read(path: Path, summary: SegmentSummary) -> np.ndarray | None:
    try:
        return read_rgb(path)
    except (OSError, ValueError) as exc:
        log.error("skipping %s: %s", path, exc)
        if path.name not in summary.failed:
            summary.failed.append(path.name)
        return None


def _params(config: EmerDiffConfig) -> str:
    return json.dumps(config.as_params(), sort_keys=True)


def _cached(out_dir: Path, image: Path) -> Path:
    return out_dir / FEATURES_DIR / f"{image.stem}.npz"


def shared_centers(runner: FrameRunner, images: list[Path], out_dir: Path, summary: SegmentSummary,
                   progress: bool = True) -> np.ndarray:
    """Cluster centres fitted on the features of every frame (saved in out_dir, reused by --resume).

    Each frame's latent and features are kept on disk until the frame is labelled, so no frame's
    features are computed twice; the seconds they took count in the frame's seconds. Cells are
    drawn from the frames in their order, so any runner fits the same centres."""
    saved = out_dir / CENTERS_FILE
    params = _params(runner.config)
    if saved.exists():
        with np.load(saved) as data:
            if str(data["params"]) != params:
                raise SegmentError(f"{saved} was fitted with other parameters; remove it or use the same ones")
            return data["centers"]
    (out_dir / FEATURES_DIR).mkdir(exist_ok=True)
    budget = max(1, MAX_FIT_CELLS // len(images))
    rng = np.random.default_rng(runner.config.seed)

    def jobs():
        for path in images:
            found = _load_cached(runner.config, out_dir, path)
            if found is not None:
                yield (path, found), None
                continue
            rgb = _read(path, summary)
            if rgb is None:
                bar.update()
            else:
                yield (path, None), FeaturesJob(rgb)

    cells = []
    with tqdm(total=len(images), desc="features", unit="frame", disable=not progress) as bar:
        for (path, found), computed in runner.run(jobs()):
            if computed is not None:
                _save_cached(out_dir, path, computed, params)
                found = computed
            flat = found.features.reshape(-1, found.features.shape[-1])
            cells.append(flat[rng.choice(len(flat), min(budget, len(flat)), replace=False)])
            bar.update()
    if not cells:
        raise SegmentError("no readable frames to fit shared cluster centres on")
    cfg = runner.config
    start = time.perf_counter()
    centers = fit_centers(cells, cfg.num_masks, cfg.kmeans_restarts, cfg.seed)
    summary.fit_seconds = time.perf_counter() - start
    np.savez(saved, centers=centers, params=params)
    return centers


def _save_cached(out_dir: Path, image: Path, frame: FrameFeatures, params: str) -> None:
    final = _cached(out_dir, image)
    partial = final.with_name(f".{final.name}.partial")
    with open(partial, "wb") as f:
        np.savez(f, latent=frame.latent, image_size=frame.image_size, processing_size=frame.processing_size,
                 features=frame.features, seconds=frame.seconds, params=params)
    os.replace(partial, final)


def _load_cached(config: EmerDiffConfig, out_dir: Path, image: Path) -> FrameFeatures | None:
    """The fitting pass's latent, features and the seconds they took, if kept for these parameters."""
    path = _cached(out_dir, image)
    if not path.exists():
        return None
    with np.load(path) as data:
        if str(data["params"]) != _params(config):
            return None
        return FrameFeatures(tuple(int(v) for v in data["image_size"]),
                             tuple(int(v) for v in data["processing_size"]), data["latent"], data["features"],
                             float(data["seconds"]))


def _labelled(out_dir: Path, image: Path) -> bool:
    return all(p.exists() for p in output_paths(out_dir, image))


def _check_manifest(out_dir: Path, consistent: bool, resume: bool) -> None:
    if not resume:
        return
    recorded = folder_ids_consistent(out_dir)
    if recorded is not None and recorded != consistent:
        raise SegmentError(f"{out_dir} was segmented {'with' if recorded else 'without'} --consistent; resume it "
                         f"the same way (mixing would leave label ids that mean different things)")


def segment_images(engine: Segmenter | FrameRunner, images: list[Path], out_dir: Path, *, resume: bool = False,
                   progress: bool = True, consistent: bool = False, method: str = "emerdiff") -> SegmentSummary:
    """Segment every image, here (a Segmenter) or on a pool of workers (a runner); the outputs are the
    same. With consistent, one set of cluster centres serves every frame."""
    start = time.perf_counter()
    runner = runner_for(engine)
    config = runner.config
    check_unique_stems(images)
    if consistent and method in BASELINE_METHODS:
        raise SegmentError(f"--consistent fits shared centres on EmerDiff's features; {method} cannot take it yet"
                           + (" (its ids are classes, the same in every frame already)" if method in CLASS_ID_METHODS
                              else ""))
    ids_consistent = consistent or method in CLASS_ID_METHODS
    out_dir.mkdir(parents=True, exist_ok=True)
    _check_manifest(out_dir, ids_consistent, resume)
    summary = SegmentSummary(smoke_note=runner.smoke_note)
    if not resume:
        (out_dir / CENTERS_FILE).unlink(missing_ok=True)
        shutil.rmtree(out_dir / FEATURES_DIR, ignore_errors=True)
    write_segment_manifest(out_dir, ids_consistent, centers=CENTERS_FILE if consistent else None, method=method,
                           model=method_model(config, method), smoke_run=runner.smoke_note, params=config.as_params())
    centers = shared_centers(runner, images, out_dir, summary, progress) if consistent else None

    def jobs():
        for path in images:
            if resume and _labelled(out_dir, path):
                summary.skipped += 1
                _cached(out_dir, path).unlink(missing_ok=True)
                bar.update()
                continue
            rgb = _read(path, summary)
            if rgb is None:
                bar.update()
                continue
            found = _load_cached(config, out_dir, path) if consistent else None
            # with shared centres, the fitting pass's latent and features when kept
            yield (path, rgb), SegmentJob(rgb, method, centers) if found is None else LabelJob(found, centers, method)

    with tqdm(total=len(images), desc="segment", unit="frame", disable=not progress) as bar:
        for (path, rgb), result in runner.run(jobs()):
            save_segmentation(out_dir, path, rgb, result, method_model(config, method))
            _cached(out_dir, path).unlink(missing_ok=True)
            summary.done += 1
            summary.seconds.append(result.stats.seconds)
            summary.masks.append(result.stats.masks)
            summary.names.append(path.name)
            summary.peak_memory_mb.append(result.stats.peak_memory_mb)
            bar.update()
    shutil.rmtree(out_dir / FEATURES_DIR, ignore_errors=True)
    summary.wall_seconds = time.perf_counter() - start
    return summary
