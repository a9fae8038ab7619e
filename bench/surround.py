"""Surround frames per second with one and two workers, and the UNet work of a surround frame of N cameras.

    python bench/surround.py [--model tiny-random] [--resolution 256] [--frames 6] [--cameras 2 4]

Each camera sees a part of the shipped CARLA frame. Workers are the node's `devices`: one model each, the
cameras of a surround frame spread across them (runtime.pipeline.FramePipeline.segment_surround, as the
node runs it). Every worker runs torch on one thread, so two workers use two cores; one worker is also
measured with two threads, the other way to use the second core. The UNet work (sample evaluations, the
unit of GPU cost) is counted by the engine and grows with the cameras, one frame's worth each: the joint
k-means is the only work the cameras share.
"""

import argparse
import time

import numpy as np
import torch

from emerdiff_ros.engine.config import EmerDiffConfig
from emerdiff_ros.runtime.pipeline import FramePipeline, load_on_devices
from emerdiff_ros.runtime.settings import StreamSettings
from emerdiff_ros.tools.images import read_rgb
from emerdiff_ros.tools.samples import sample_dir


def views(frame: np.ndarray, cameras: int) -> list[np.ndarray]:
    """cameras overlapping parts of one frame, each half its width."""
    width = frame.shape[1]
    starts = np.linspace(0, width // 2, cameras).astype(int)
    return [frame[:, start : start + width // 2] for start in starts]


def frames_per_second(config: EmerDiffConfig, devices: tuple[str, ...], images: list[np.ndarray], frames: int,
                      threads: int) -> tuple[float, int]:
    """(surround frames per second, UNet sample evaluations per surround frame)."""
    torch.set_num_threads(threads)
    pipeline = FramePipeline(load_on_devices(config, "emerdiff", devices), config, StreamSettings())
    try:
        pipeline.segment_surround(images)  # warm-up
        start = time.perf_counter()
        for _ in range(frames):
            done = pipeline.segment_surround(images)
        seconds = time.perf_counter() - start
    finally:
        pipeline.close()
    return frames / seconds, sum(frame.segmentation.stats.unet_sample_evals for frame in done)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-random")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--cameras", type=int, nargs="+", default=[2, 4])
    args = parser.parse_args()
    config = EmerDiffConfig(model=args.model, device="cpu", resolution=args.resolution, num_masks=8,
                            feature_draws=8, num_inference_steps=10, kmeans_restarts=1)
    frame = read_rgb(sample_dir() / "carla_800x600_000043.png")
    print(f"model {args.model}, resolution {args.resolution}, K={config.num_masks}, "
          f"{config.feature_draws} feature draws, {config.num_inference_steps} steps; {args.frames} surround frames")
    print("| cameras | workers x threads | surround frames/s | UNet sample evaluations per surround frame |")
    print("|---|---|---|---|")
    for cameras in args.cameras:
        images = views(frame, cameras)
        for devices, threads in ((("cpu",), 1), (("cpu",), 2), (("cpu", "cpu"), 1)):
            rate, evals = frames_per_second(config, devices, images, args.frames, threads)
            print(f"| {cameras} | {len(devices)} x {threads} | {rate:.2f} | {evals} |")


if __name__ == "__main__":
    main()
