"""One frame through EmerDiff: encode, query features, k-means, modulated denoising, labels.

The modulated denoising runs the unmodulated reference and the 2K modulated samples
(+lambda and -lambda for each mask) as one batch. The reference always sits at the inverted
latent x_t, so its UNet output at each step is exactly the one the edit-friendly inversion
needs: the stored noise map of a step is x_{t-1} - mu_t(reference), computed in the same call
that advances the modulated samples. The inversion therefore costs no UNet call of its own. At the
first step (t_m) every sample still equals the reference up to the modulated layer, so that part of
the UNet runs once for the whole batch (prefix.py).
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, TypeVar

import numpy as np
import torch

from .attention import (QueryCapture, SharedAttention, StopForward, attention_layer_names, attention_processors,
                        layer_grid)
from .config import DIFFUSION_METHODS, EmerDiffConfig
from .errors import ConfigError
from .imaging import argmax_upsampled, as_rgb, crop_box, difference_map, place_in_frame, processing_size, to_model_input
from .labels import label_dtype
from .masks import LowResMasks, assign_to_centers, kmeans_masks
from .models import DiffusionModel, load_model
from .prefix import shared_prefix
from .schedule import InversionSchedule
from .stats import FrameStats

log = logging.getLogger(__name__)
T = TypeVar("T")
_MODEL_FIELDS = ("model", "device", "dtype")


@dataclass
class EncodedFrame:
    image_size: tuple[int, int]  # (width, height) of the input
    processing_size: tuple[int, int]  # (width, height) the model sees
    latent: torch.Tensor  # (1, 4, h, w) float32, scaled by the VAE's scaling factor

    @property
    def latent_hw(self) -> tuple[int, int]:
        return tuple(self.latent.shape[-2:])


@dataclass
class Segmentation:
    labels: np.ndarray  # (H, W) at the input size: uint8, or uint16 when K > 255; no_label() outside a crop
    masks: LowResMasks | None  # the low-resolution masks and their centres (None: segformer, its ids are classes)
    stats: FrameStats
    smoke_note: str | None  # set when the model has random weights


class Segmenter:
    def __init__(self, model: DiffusionModel, config: EmerDiffConfig):
        self.model = model
        self.config = config
        self.schedule = InversionSchedule(model.scheduler, config.num_inference_steps)
        self._layers = attention_layer_names(model.unet)
        for what in ("feature_layer", "modulation_layer"):
            layer = getattr(config, what)
            if layer not in self._layers:
                near = [name for name in self._layers if "attn2" in name and name.startswith("up_blocks")]
                raise ConfigError(f"{what} {layer!r} is not an attention layer of this UNet; e.g. {near[:3]}")
        self._max_batch = config.max_batch
        self._max_decode = config.max_decode_batch

    @classmethod
    def load(cls, config: EmerDiffConfig) -> "Segmenter":
        return cls(load_model(config.model, config.device, config.dtype), config)

    def with_config(self, **changes) -> "Segmenter":
        """The same model with other method parameters (for sweeps)."""
        if any(name in changes for name in _MODEL_FIELDS):
            raise ConfigError(f"{', '.join(_MODEL_FIELDS)} need a new model: use Segmenter.load")
        return Segmenter(self.model, self.config.replace(**changes))

    # --- the whole frame ----------------------------------------------------------------------

    def segment(self, image: np.ndarray, centers: np.ndarray | None = None, method: str = "emerdiff") -> Segmentation:
        """Labels for an RGB uint8 image; with centers, the masks come from those cluster centres."""
        if method not in DIFFUSION_METHODS:
            raise ConfigError(f"Segmenter runs {', '.join(DIFFUSION_METHODS)}, not {method!r}: load_segmenter(config, "
                              f"{method!r}) loads that method's model")
        with FrameStats.frame(self.model.device) as stats:
            frame = self.encode(image, stats)
            features = self.features(frame, stats)
            masks = self.cluster(features, stats, centers)
            labels = self.refine(frame, masks, stats) if method == "emerdiff" else self.lowres(frame, masks, stats)
        return Segmentation(labels, masks, stats, self.model.smoke_note)

    # --- the stages, public so tools can reuse work between settings ---------------------------

    @torch.inference_mode()
    def encode(self, image: np.ndarray, stats: FrameStats | None = None) -> EncodedFrame:
        stats = stats or FrameStats()
        rgb = as_rgb(image)
        height, width = rgb.shape[:2]
        size = processing_size(width, height, self.config.resolution, self.config.processing)
        left, top, right, bottom = crop_box(width, height, self.config.processing)
        vae = self.model.vae
        with stats.stage("encode"):
            pixels = to_model_input(rgb[top:bottom, left:right], size, self.model.device, self.model.dtype)
            latent = vae.encode(pixels).latent_dist.mean.float() * vae.config.scaling_factor
        stats.vae_encodes += 1
        stats.processing_size = size
        return EncodedFrame((width, height), size, latent)

    @torch.inference_mode()
    def features(self, frame: EncodedFrame, stats: FrameStats | None = None) -> np.ndarray:
        """(h, w, channels) query vectors of the feature layer at t_f, averaged over noise draws."""
        stats = stats or FrameStats()
        cfg = self.config
        noise = torch.randn((cfg.feature_draws, *frame.latent.shape[1:]), generator=self._generator(0))
        noisy = self.schedule.add_noise(frame.latent, cfg.feature_timestep, noise.to(frame.latent.device))
        capture = QueryCapture()
        with stats.stage("features"), attention_processors(self.model.unet, {cfg.feature_layer: capture}):
            done = 0
            while done < len(noisy):
                done += self._adaptive("_max_batch", 1, lambda limit: self._capture(noisy[done : done + limit], stats))
        queries = capture.mean()
        return queries.view(*layer_grid(len(queries), frame.latent_hw), -1).cpu().numpy()

    def cluster(self, features: np.ndarray, stats: FrameStats | None = None,
                centers: np.ndarray | None = None) -> LowResMasks:
        stats = stats or FrameStats()
        cfg = self.config
        with stats.stage("kmeans"):
            if centers is not None:
                return assign_to_centers(features, centers)
            return kmeans_masks(features, cfg.num_masks, cfg.kmeans_restarts, cfg.seed)

    @torch.inference_mode()
    def refine(self, frame: EncodedFrame, masks: LowResMasks, stats: FrameStats | None = None) -> np.ndarray:
        """Image-resolution labels: for every pixel, the mask whose modulation changes it most."""
        stats = stats or FrameStats()
        ids = masks.present()
        latents = self.modulated_latents(frame, masks.grid, ids, stats)
        differences = self.difference_maps(latents, stats)
        with stats.stage("labels"):
            winner = argmax_upsampled(differences, self._crop_size(frame)).cpu().numpy()
            labels = self._at_input_size(ids[winner].astype(label_dtype(masks.num_masks)), frame)
        return labels

    def lowres(self, frame: EncodedFrame, masks: LowResMasks, stats: FrameStats | None = None) -> np.ndarray:
        """The baseline: each mask upsampled bilinearly to the image, the strongest wins."""
        stats = stats or FrameStats()
        ids = masks.present()
        stats.masks = len(ids)
        with stats.stage("labels"):
            cells = torch.as_tensor(masks.grid, device=frame.latent.device)
            maps = (cells[None] == torch.as_tensor(ids, device=cells.device)[:, None, None]).float()
            winner = argmax_upsampled(maps, self._crop_size(frame)).cpu().numpy()
        return self._at_input_size(ids[winner].astype(label_dtype(masks.num_masks)), frame)

    def inverted_latents(self, frame: EncodedFrame) -> tuple[int, torch.Tensor]:
        """(index of t_m in the schedule, independent x_t for the steps from t_m on)."""
        start = self.schedule.snap(self.config.modulation_timestep)
        return start, self.schedule.inverted_latents(frame.latent, start, self._generator(1))

    @torch.inference_mode()
    def modulated_latents(self, frame: EncodedFrame, grid: np.ndarray, ids: np.ndarray,
                          stats: FrameStats | None = None) -> torch.Tensor:
        """Final latents of the modulated samples: (2 len(ids), 4, h, w), +lambda M_k then -lambda M_k."""
        stats = stats or FrameStats()
        cfg = self.config
        start, inverted = self.inverted_latents(frame)
        stats.modulation_timestep = self.schedule.timesteps[start]
        stats.masks = len(ids)
        cells = torch.as_tensor(grid, device=frame.latent.device)
        maps = (cells[None] == torch.as_tensor(ids, device=cells.device)[:, None, None]).float()
        # +lambda and -lambda of one mask side by side: a chunk always holds whole pairs.
        offsets = torch.stack([maps, -maps], 1).flatten(0, 1) * cfg.modulation_lambda
        targets = torch.cat([inverted[1:], frame.latent.float()])  # where each step must land

        def denoise_chunk(limit: int) -> torch.Tensor:
            pairs = max(1, (limit - 1) // 2)
            return self._modulated_denoise(inverted[0], targets, offsets[done : done + 2 * pairs], start, frame, stats)

        chunks, done = [], 0
        while done < len(offsets):
            chunks.append(self._adaptive("_max_batch", 3, denoise_chunk))
            done += len(chunks[-1])
        stats.max_batch = self._max_batch
        return torch.cat(chunks)

    @torch.inference_mode()
    def difference_maps(self, latents: torch.Tensor, stats: FrameStats | None = None) -> torch.Tensor:
        """d_k = |I(+lambda M_k) - I(-lambda M_k)| per pixel, (k, H, W) at the processing size."""
        stats = stats or FrameStats()
        with stats.stage("decode"):
            maps, done = [], 0
            while done < len(latents):
                # Whole pairs per decode call: each call reduces to its difference maps at once.
                maps.append(self._adaptive("_max_decode", 2, lambda limit: self._decode_pairs(
                    latents[done : done + limit // 2 * 2])))
                done += 2 * len(maps[-1])
            stats.vae_decodes += done
        return torch.cat(maps)

    # --- internals ----------------------------------------------------------------------------

    def _generator(self, stream: int) -> torch.Generator:
        # Fresh per frame: the same seed gives the same labels whatever ran before.
        return torch.Generator().manual_seed(self.config.seed * 16 + stream)

    def _unet(self, x: torch.Tensor, t: int, stats: FrameStats) -> torch.Tensor:
        stats.sequential_unet_calls += 1
        stats.unet_sample_evals += len(x)
        context = self.model.prompt_embedding.expand(len(x), -1, -1)
        return self.model.unet(x.to(self.model.dtype), t, encoder_hidden_states=context, return_dict=False)[0]

    def _capture(self, noisy: torch.Tensor, stats: FrameStats) -> int:
        try:
            self._unet(noisy, self.config.feature_timestep, stats)
        except StopForward:
            return len(noisy)
        raise RuntimeError(f"the feature layer {self.config.feature_layer!r} was never reached")

    def _modulated_denoise(self, start_latent, targets, offsets, start, frame, stats) -> torch.Tensor:
        """Final latents of the modulated samples (reference first in the batch, dropped at the end)."""
        cfg = self.config
        batch = 1 + len(offsets)
        before = cfg.modulation_point == "before_projection"
        processors = {name: SharedAttention(cfg.attention_injection, frame.latent_hw, before) for name in self._layers}
        modulated = processors[cfg.modulation_layer]
        first_offsets = torch.cat([offsets.new_zeros(1, *offsets.shape[1:]), offsets])
        x = start_latent[None].expand(batch, -1, -1, -1)
        with stats.stage("denoise"), attention_processors(self.model.unet, processors):
            for step, index in enumerate(range(start, len(self.schedule.timesteps))):
                modulated.offsets = first_offsets if step == 0 else None
                with self._shared_prefix(batch, stats) if step == 0 else nullcontext():
                    output = self._unet(x, self.schedule.timesteps[index], stats)
                mean = self.schedule.reverse_mean(output, x, index)
                x = mean + (targets[step] - mean[0])  # the reference's noise map, shared by all
        return x[1:]

    def _shared_prefix(self, batch: int, stats: FrameStats):
        """At step t_m the samples differ only from the modulated layer on: the part before it runs once."""
        stats.unet_prefix_shared += batch - 1
        return shared_prefix(self.model.unet, self.config.modulation_layer, batch)

    def _decode_pairs(self, latents: torch.Tensor) -> torch.Tensor:
        vae = self.model.vae
        images = vae.decode((latents / vae.config.scaling_factor).to(self.model.dtype)).sample.float()
        return difference_map(images[0::2], images[1::2], self.config.blur_sigma, self.config.blur_target)

    def _crop_box(self, frame: EncodedFrame) -> tuple[int, int, int, int]:
        return crop_box(*frame.image_size, self.config.processing)

    def _crop_size(self, frame: EncodedFrame) -> tuple[int, int]:
        left, top, right, bottom = self._crop_box(frame)
        return right - left, bottom - top

    def _at_input_size(self, labels: np.ndarray, frame: EncodedFrame) -> np.ndarray:
        return place_in_frame(labels, frame.image_size, self.config.processing)

    def _adaptive(self, attr: str, floor: int, run: Callable[[int], T]) -> T:
        """run(limit) with the batch limit self.<attr>, halved after each CUDA out-of-memory error."""
        while True:
            limit = getattr(self, attr)
            try:
                return run(limit)
            except torch.cuda.OutOfMemoryError:
                if limit <= floor:
                    raise
                setattr(self, attr, max(floor, limit // 2))
                torch.cuda.empty_cache()
                log.warning("out of GPU memory at %s=%d; retrying with %d", attr.strip("_"), limit, getattr(self, attr))

