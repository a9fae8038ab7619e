"""The CARLA study's two other methods, behind the Segmenter's interface (config, model.device,
model.smoke_note, with_config, segment(image, centers, method) -> Segmentation), so every tool runs them.

dino: patch features of a self-supervised ViT (DINOv2, or DINO v1's ViT-B/16), k-means into num_masks
clusters with EmerDiff's k-means code, each cluster's indicator map upsampled bilinearly to the input
and the strongest kept. That is exactly how EmerDiff's lowres baseline upsamples its masks, so the two
differ only in the features; nearest upsampling would add the patch grid's staircase on top. Label
tracking works as for EmerDiff: the masks carry their centres in feature space.

segformer: a Cityscapes-trained SegFormer, SUPERVISED (a reference, not an unsupervised competitor). Its
logits are upsampled bilinearly to the input, then argmax: the labels are its 19 Cityscapes train ids,
stable by construction, so its masks are None and nothing tracks them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import torch

from .config import EmerDiffConfig
from .errors import ConfigError
from .imaging import argmax_upsampled, as_rgb, crop_box, place_in_frame, processing_size
from .labels import label_dtype
from .masks import LowResMasks, assign_to_centers, kmeans_masks
from .models import LoadedModel, load_cache_first, resolve_device, resolve_dtype
from .segmenter import Segmentation
from .stats import FrameStats

# Both model families were trained on ImageNet-normalised inputs.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CITYSCAPES_CLASSES = 19  # SegFormer's Cityscapes head: the 19 train ids
RANDOM_SEED = 1234


@dataclass(kw_only=True)
class VisionModel(LoadedModel):
    """A transformers network and where it runs."""

    network: torch.nn.Module


def _tiny_dino():
    from transformers import Dinov2Config, Dinov2Model

    return Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                    patch_size=8, image_size=64))


def _tiny_segformer():
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    return SegformerForSemanticSegmentation(SegformerConfig(
        num_labels=CITYSCAPES_CLASSES, hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1],
        num_attention_heads=[1, 1, 2, 4], decoder_hidden_size=32))


def _pretrained_dino(source: str, options: dict):
    from transformers import AutoModel  # Dinov2Model, Dinov2WithRegistersModel or ViTModel (DINO v1)

    return AutoModel.from_pretrained(source, **options)


def _pretrained_segformer(source: str, options: dict):
    from transformers import SegformerForSemanticSegmentation

    return SegformerForSemanticSegmentation.from_pretrained(source, **options)


# config field -> (random model, pretrained loader)
_LOADERS = {"dino_model": (_tiny_dino, _pretrained_dino), "segformer_model": (_tiny_segformer, _pretrained_segformer)}


def load_vision_model(setting: str, config: EmerDiffConfig) -> VisionModel:
    """The network config.<setting> names: tiny-random, a local folder, or a hub id (cache first)."""
    spec = getattr(config, setting)
    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    random_model, pretrained = _LOADERS[setting]
    if spec == "tiny-random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_SEED)
            network = random_model()
    else:
        network = load_cache_first(spec, pretrained, setting)
    network.to(device, dtype).eval().requires_grad_(False)
    return VisionModel(name=spec, network=network, device=device, dtype=dtype, random_weights=spec == "tiny-random")


class _FrameMethod(ABC):
    """What dino and segformer share: the model, the input as the network sees it, labels at the input size."""

    method: str
    setting: str  # the config field naming the checkpoint
    multiple: int  # input sides are multiples of this

    def __init__(self, model: VisionModel, config: EmerDiffConfig):
        self.model, self.config = model, config

    @classmethod
    def load(cls, config: EmerDiffConfig):
        return cls(load_vision_model(cls.setting, config), config)

    def with_config(self, **changes):
        """The same model with other method parameters (for sweeps)."""
        model_fields = (self.setting, "device", "dtype")
        if any(name in changes for name in model_fields):
            raise ConfigError(f"{', '.join(model_fields)} need a new model: load it again")
        return type(self)(self.model, self.config.replace(**changes))

    def segment(self, image: np.ndarray, centers: np.ndarray | None = None, method: str | None = None) -> Segmentation:
        if method not in (None, self.method):
            raise ConfigError(f"this segmenter runs {self.method}, not {method!r}")
        rgb = as_rgb(image)
        with FrameStats.frame(self.model.device) as stats:
            with stats.stage("encode"):
                pixels, crop_size = self._pixels(rgb, stats)
            labels, masks = self._labels(pixels, crop_size, centers, stats)
            labels = place_in_frame(labels, (rgb.shape[1], rgb.shape[0]), self.config.processing)
        return Segmentation(labels, masks, stats, self.model.smoke_note)

    def _pixels(self, rgb: np.ndarray, stats: FrameStats) -> tuple[torch.Tensor, tuple[int, int]]:
        """(1, 3, h, w) normalised input at the processing size (sides multiples of the patch), and the crop's size."""
        height, width = rgb.shape[:2]
        left, top, right, bottom = crop_box(width, height, self.config.processing)
        size = processing_size(width, height, self.config.resolution, self.config.processing)
        size = tuple(max(self.multiple, side // self.multiple * self.multiple) for side in size)
        stats.processing_size = size
        crop = torch.as_tensor(rgb[top:bottom, left:right], device=self.model.device).permute(2, 0, 1)[None].float()
        resized = torch.nn.functional.interpolate(crop / 255, size=size[::-1], mode="bilinear", antialias=True,
                                                  align_corners=False)
        mean, std = (torch.tensor(v, device=self.model.device).view(1, 3, 1, 1) for v in (IMAGENET_MEAN, IMAGENET_STD))
        return ((resized - mean) / std).to(self.model.dtype), (right - left, bottom - top)

    @abstractmethod
    def _labels(self, pixels, crop_size, centers, stats) -> tuple[np.ndarray, LowResMasks | None]:
        """The crop's labels from the network's input, and the masks with their centres (None for classes)."""


class DinoSegmenter(_FrameMethod):
    method, setting = "dino", "dino_model"

    @property
    def multiple(self) -> int:
        return self.model.network.config.patch_size

    @torch.inference_mode()
    def features(self, pixels: torch.Tensor) -> np.ndarray:
        """(h, w, channels) patch features: the last layer's tokens without CLS and register tokens."""
        grid = (pixels.shape[2] // self.multiple, pixels.shape[3] // self.multiple)
        network = self.model.network
        # ViTModel (DINO v1) interpolates its position embeddings only when asked; Dinov2 always does.
        options = {"interpolate_pos_encoding": True} if network.config.model_type == "vit" else {}
        tokens = network(pixel_values=pixels, **options).last_hidden_state[0]
        patches = tokens[-grid[0] * grid[1]:]  # CLS and register tokens come first
        return patches.float().view(*grid, -1).cpu().numpy()

    def image_features(self, image: np.ndarray) -> np.ndarray:
        """(h, w, channels) patch features of an image, the ones segment clusters."""
        pixels, _ = self._pixels(as_rgb(image), FrameStats())
        return self.features(pixels)

    def _labels(self, pixels, crop_size, centers, stats):
        cfg = self.config
        with stats.stage("features"):
            features = self.features(pixels)
        with stats.stage("kmeans"):
            masks = (assign_to_centers(features, centers) if centers is not None
                     else kmeans_masks(features, cfg.num_masks, cfg.kmeans_restarts, cfg.seed))
        ids = masks.present()
        stats.masks = len(ids)
        with stats.stage("labels"):
            cells = torch.as_tensor(masks.grid, device=self.model.device)
            maps = (cells[None] == torch.as_tensor(ids, device=cells.device)[:, None, None]).float()
            winner = argmax_upsampled(maps, crop_size).cpu().numpy()
        return ids[winner].astype(label_dtype(masks.num_masks)), masks


class SegformerSegmenter(_FrameMethod):
    method, setting = "segformer", "segformer_model"
    multiple = 32  # its four stages downsample 32 times

    @torch.inference_mode()
    def _labels(self, pixels, crop_size, centers, stats):
        with stats.stage("features"):
            logits = self.model.network(pixel_values=pixels).logits[0].float()  # (classes, h/4, w/4)
        with stats.stage("labels"):
            labels = argmax_upsampled(logits, crop_size).cpu().numpy().astype(np.uint8)
        stats.masks = len(np.unique(labels))
        return labels, None
