"""Per-frame speed and memory of the engine on a real sample frame resized to a given size."""

from __future__ import annotations

import platform

import numpy as np
import torch
from PIL import Image

from ..engine import Segmenter
from ..engine.prefix import prefix_flop_share
from .samples import sample_images


def bench_image(size: tuple[int, int]) -> np.ndarray:
    with Image.open(sample_images()[0]) as image:
        return np.array(image.convert("RGB").resize(size, Image.BICUBIC))


def prefix_share(segmenter: Segmenter, image: np.ndarray) -> float:
    """FLOP share of one UNet evaluation spent before the modulated layer, at this image's processing size."""
    model, cfg = segmenter.model, segmenter.config
    latent = segmenter.encode(image).latent.to(model.dtype)
    with torch.inference_mode():
        return prefix_flop_share(model.unet, cfg.modulation_layer, lambda: model.unet(
            latent, cfg.modulation_timestep, encoder_hidden_states=model.prompt_embedding, return_dict=False))


def benchmark(segmenter: Segmenter, size: tuple[int, int], frames: int = 3, warmup: int = 1) -> dict:
    image = bench_image(size)
    for _ in range(warmup):
        segmenter.segment(image)
    runs = [segmenter.segment(image).stats for _ in range(frames)]
    last = runs[-1]
    device = segmenter.model.device
    share = prefix_share(segmenter, image)
    denoise_evals = last.unet_sample_evals - segmenter.config.feature_draws  # the feature passes are one each
    return {
        "model": segmenter.config.model,
        "random_weights": segmenter.model.random_weights,
        "device": _device_name(device),
        "dtype": str(segmenter.model.dtype).removeprefix("torch."),
        "torch": torch.__version__,
        "image_size": list(size),
        "processing_size": list(last.processing_size),
        "num_masks": last.masks,
        "frames": frames,
        "seconds_per_frame": float(np.mean([r.seconds for r in runs])),
        "stage_seconds": {k: float(np.mean([r.stage_seconds[k] for r in runs])) for k in last.stage_seconds},
        "unet_sample_evals": last.unet_sample_evals,
        "sequential_unet_calls": last.sequential_unet_calls,
        "unet_prefix_shared": last.unet_prefix_shared,
        "prefix_flop_share": share,
        "unet_evals_saved": last.unet_prefix_shared * share,
        "denoise_sample_evals": denoise_evals,
        "vae_decodes": last.vae_decodes,
        "peak_memory_mb": max(r.peak_memory_mb for r in runs),
        "max_batch": last.max_batch,
    }


def format_report(report: dict) -> list[str]:
    stages = ", ".join(f"{k} {v:.3f}" for k, v in report["stage_seconds"].items())
    return [
        f"model: {report['model']}{' (random weights)' if report['random_weights'] else ''} on {report['device']}, "
        f"{report['dtype']}, torch {report['torch']}",
        f"image {report['image_size'][0]}x{report['image_size'][1]} -> processed at "
        f"{report['processing_size'][0]}x{report['processing_size'][1]}, K = {report['num_masks']}, "
        f"{report['frames']} frames",
        f"seconds per frame: {report['seconds_per_frame']:.3f}  ({stages})",
        f"UNet sample-evaluations: {report['unet_sample_evals']}, sequential UNet calls: "
        f"{report['sequential_unet_calls']}, VAE decodes: {report['vae_decodes']}",
        (f"step t_m: the UNet's work before the modulated layer ({100 * report['prefix_flop_share']:.1f}% of an "
         f"evaluation's FLOPs) ran once instead of for {report['unet_prefix_shared']} more samples: "
         f"{report['unet_evals_saved']:.1f} sample-evaluations saved, "
         f"{100 * report['unet_evals_saved'] / report['denoise_sample_evals']:.1f}% of the modulated denoising's "
         f"{report['denoise_sample_evals']}"),
        f"peak memory: {report['peak_memory_mb']:.0f} MB",
    ]


def _device_name(device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
