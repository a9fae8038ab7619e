"""Frames per second of `emerdiff segment` alone and on a local Ray cluster with 1..N workers, same run.

    python bench/ray_scaling.py [--frames DIR] [--workers 2] [--threads 1] [--consistent] [config flags]

Every run uses the same torch threads (--threads, applied here and taken by every worker), so the
label images must be byte-identical to the single-process run's; the script checks that. Model
loading is timed apart: a worker loads once, whatever the number of frames. The driver's CPU seconds
per frame (reading, sending, tracking, writing, Ray's own threads) bound what any number of workers
can reach. Prints markdown rows.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import ray
import threadpoolctl
import torch

from emerdiff_ros.cli.errors import UsageError
from emerdiff_ros.cli.flags import add_config_flags, config_from_args
from emerdiff_ros.distributed import RayRunner
from emerdiff_ros.engine import Segmenter
from emerdiff_ros.tools.images import list_images
from emerdiff_ros.tools.segment import segment_images

SHARED_FRAMES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cshenron"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=Path, default=SHARED_FRAMES, help="folder of images (default: the "
                        "12 C-Shenron frames in ../shared)")
    parser.add_argument("--workers", type=int, default=2, help="largest pool measured (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of every process (default 1)")
    parser.add_argument("--consistent", action="store_true", help="one set of centres for all frames")
    add_config_flags(parser)
    args = parser.parse_args()
    try:
        config = config_from_args(args)
    except UsageError as exc:
        parser.error(str(exc))
    threadpoolctl.threadpool_limits(args.threads)
    torch.set_num_threads(args.threads)
    images = list_images(args.frames)
    work = Path(tempfile.mkdtemp(prefix="ray_scaling_"))
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"ray {ray.__version__}, {config.model} {config.resolution}px K={config.num_masks}, {len(images)} frames, "
          f"{args.threads} torch thread(s) per process{', consistent' if args.consistent else ''}")
    print("| run | load s | segment s | frames/s | vs alone | driver CPU s/frame | labels identical |")
    print("|---|---|---|---|---|---|---|")
    try:
        start = time.perf_counter()
        alone = Segmenter.load(config)
        loaded = time.perf_counter() - start
        baseline, _ = timed(alone, images, work / "alone", args.consistent)
        row("alone (one process)", loaded, baseline, None, len(images), baseline, True)
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="WARNING")
        for workers in range(1, args.workers + 1):
            start = time.perf_counter()
            with RayRunner(config, workers, cpus_per_worker=args.threads) as pool:
                loaded = time.perf_counter() - start
                seconds, driver = timed(pool, images, work / f"ray{workers}", args.consistent)
            row(f"Ray, {workers} worker{'s' * (workers > 1)}", loaded, seconds, driver, len(images), baseline,
                same_files(work / "alone", work / f"ray{workers}"))
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    return 0


def timed(engine, images: list[Path], out: Path, consistent: bool) -> tuple[float, float]:
    """Wall seconds, and this process's CPU seconds per frame."""
    start, cpu = time.perf_counter(), time.process_time()
    summary = segment_images(engine, images, out, consistent=consistent, progress=False)
    if summary.done != len(images):
        sys.exit(f"only {summary.done} of {len(images)} frames were segmented")
    return time.perf_counter() - start, (time.process_time() - cpu) / len(images)


def same_files(expected: Path, got: Path) -> bool:
    names = sorted(p.name for p in expected.iterdir())
    return names == sorted(p.name for p in got.iterdir()) and all(
        (expected / name).read_bytes() == (got / name).read_bytes() for name in names)


def row(name: str, loaded: float, seconds: float, driver: float | None, frames: int, baseline: float,
        identical: bool) -> None:
    driver_cpu = "-" if driver is None else f"{driver:.3f}"
    print(f"| {name} | {loaded:.1f} | {seconds:.1f} | {frames / seconds:.3f} | {baseline / seconds:.2f}x | "
          f"{driver_cpu} | {'yes' if identical else 'NO'} |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
