"""Engine speed on this machine, as a markdown row for RESULTS.md.

    python bench/bench_engine.py --model tiny-random --size 512x512 --num-masks 25
    python bench/bench_engine.py --model sd21-random --size 512x512 --num-masks 25 --dtype float16   # on a GPU
    python bench/bench_engine.py ... --baseline    # also time the plain one-mask-at-a-time path
    python bench/bench_engine.py ... --prefix      # also time the step-t_m UNet call with and without the shared prefix

Random weights cost the same as real ones, so sd21-random measures SD 2.1-base speed without weights.
"""

import argparse
import platform
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test"))  # the tests' oracle
from plain_emerdiff import plain_emerdiff  # noqa: E402

from emerdiff_ros.engine import EmerDiffConfig, Segmenter  # noqa: E402
from emerdiff_ros.engine.prefix import shared_prefix  # noqa: E402
from emerdiff_ros.tools.bench import bench_image, benchmark  # noqa: E402


def machine() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} (torch {torch.__version__}, CUDA {torch.version.cuda})"
    cpu = platform.processor() or platform.machine()
    return f"CPU {cpu}, {torch.get_num_threads()} threads (torch {torch.__version__})"


def time_step_tm_call(segmenter: Segmenter, frame, batch: int, repeats: int = 3) -> dict[str, float]:
    """Median seconds of one UNet call on `batch` equal samples (step t_m's input), unsplit and shared.

    The two alternate after a warm-up call, so a change in the machine's load hits both alike.
    """
    model = segmenter.model
    x = frame.latent.to(model.dtype).expand(batch, -1, -1, -1)
    context = model.prompt_embedding.expand(batch, -1, -1)
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)

    def seconds(shared: bool) -> float:
        split = shared_prefix(model.unet, segmenter.config.modulation_layer, batch) if shared else nullcontext()
        sync()
        start = time.perf_counter()
        with torch.inference_mode(), split:
            model.unet(x, segmenter.config.modulation_timestep, encoder_hidden_states=context, return_dict=False)
        sync()
        return time.perf_counter() - start

    seconds(False)
    runs = {"unsplit": [], "shared": []}
    for _ in range(repeats):
        runs["unsplit"].append(seconds(False))
        runs["shared"].append(seconds(True))
    return {name: statistics.median(values) for name, values in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-random")
    parser.add_argument("--size", default="512x512")
    parser.add_argument("--num-masks", type=int, default=25)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--frames", type=int, default=2)
    parser.add_argument("--baseline", action="store_true", help="also time the plain path (denoise + decode)")
    parser.add_argument("--prefix", action="store_true",
                        help="also time the step-t_m UNet call (2K + 1 samples) with and without the shared prefix")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    config = EmerDiffConfig(model=args.model, num_masks=args.num_masks, dtype=args.dtype,
                            resolution=int((width * height) ** 0.5))
    segmenter = Segmenter.load(config)
    report = benchmark(segmenter, (width, height), frames=args.frames)
    stages = report["stage_seconds"]
    print(f"machine: {machine()}")
    print("| model | dtype | size | K | s/frame | encode | features | kmeans | denoise | decode | labels "
          "| UNet evals | UNet calls | decodes | peak MB |")
    print(f"| {args.model} | {report['dtype']} | {report['processing_size'][0]}x{report['processing_size'][1]} "
          f"| {report['num_masks']} | {report['seconds_per_frame']:.2f} | "
          + " | ".join(f"{stages[k]:.2f}" for k in ("encode", "features", "kmeans", "denoise", "decode", "labels"))
          + f" | {report['unet_sample_evals']} | {report['sequential_unet_calls']} | {report['vae_decodes']} "
          f"| {report['peak_memory_mb']:.0f} |")
    print(f"step t_m: the UNet before the modulated layer is {100 * report['prefix_flop_share']:.1f}% of an "
          f"evaluation (FLOPs); shared by {report['unet_prefix_shared']} samples it saves "
          f"{report['unet_evals_saved']:.1f} of the {report['denoise_sample_evals']} modulated-denoising "
          f"sample-evaluations ({100 * report['unet_evals_saved'] / report['denoise_sample_evals']:.1f}%)")
    if args.prefix:
        frame = segmenter.encode(bench_image((width, height)))
        batch = 1 + 2 * report["num_masks"]
        seconds = time_step_tm_call(segmenter, frame, batch)
        print(f"step-t_m UNet call, {batch} samples: unsplit {seconds['unsplit']:.3f} s, prefix shared "
              f"{seconds['shared']:.3f} s (saves {seconds['unsplit'] - seconds['shared']:.3f} s per frame)")
    if args.baseline:
        frame = segmenter.encode(bench_image((width, height)))
        masks = segmenter.cluster(segmenter.features(frame))
        batched = stages["denoise"] + stages["decode"]
        sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
        sync()
        start = time.perf_counter()
        plain_emerdiff(segmenter, frame, masks.grid, masks.present())
        sync()
        plain = time.perf_counter() - start
        print(f"modulated denoising + decoding: batched {batched:.2f} s, plain one mask at a time {plain:.2f} s "
              f"({plain / batched:.1f}x)")


if __name__ == "__main__":
    main()
