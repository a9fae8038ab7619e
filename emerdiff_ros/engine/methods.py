"""Every method behind one call: the segmenter that runs it, its model loaded once."""

from __future__ import annotations

from .baselines import DinoSegmenter, SegformerSegmenter
from .config import DIFFUSION_METHODS, METHODS, EmerDiffConfig
from .errors import ConfigError
from .segmenter import Segmenter

_BASELINES = {"dino": DinoSegmenter, "segformer": SegformerSegmenter}


def load_segmenter(config: EmerDiffConfig, method: str = "emerdiff") -> Segmenter | DinoSegmenter | SegformerSegmenter:
    """Stable Diffusion for emerdiff and lowres, the DINO or SegFormer network for the others."""
    if method in DIFFUSION_METHODS:
        return Segmenter.load(config)
    if method not in METHODS:
        raise ConfigError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    return _BASELINES[method].load(config)
