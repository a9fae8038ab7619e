"""EmerDiff: label-free segmentation from a frozen Stable Diffusion model. No ROS imports here."""

from .config import PRESETS, EmerDiffConfig, ParamSpec, config_fields
from .errors import ConfigError
from .masks import LowResMasks
from .models import RANDOM_MODELS, CheckpointError, DiffusionModel, load_model
from .segmenter import METHODS, EncodedFrame, Segmentation, Segmenter
from .stats import FrameStats

__all__ = [
    "PRESETS", "EmerDiffConfig", "ParamSpec", "config_fields", "ConfigError", "LowResMasks", "RANDOM_MODELS", "CheckpointError",
    "DiffusionModel", "load_model", "METHODS", "EncodedFrame", "Segmentation", "Segmenter", "FrameStats",
]
