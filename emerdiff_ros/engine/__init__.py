"""EmerDiff: label-free segmentation from a frozen Stable Diffusion model. No ROS imports here.

The names load on first use (PEP 562): the configuration and the error types do not need torch,
so `emerdiff --help` and the CLI's flag parsing stay fast; the model and the segmenter load it.
"""

from importlib import import_module

_HOMES = {
    "config": ("PRESETS", "EmerDiffConfig", "ParamSpec", "config_fields", "METHODS", "BASELINE_METHODS",
               "DIFFUSION_METHODS"),
    "errors": ("ConfigError",),
    "checkpoints": ("CheckpointError",),
    "masks": ("LowResMasks",),
    "models": ("RANDOM_MODELS", "DiffusionModel", "load_model"),
    "segmenter": ("EncodedFrame", "Segmentation", "Segmenter"),
    "baselines": ("DinoSegmenter", "SegformerSegmenter"),
    "methods": ("load_segmenter",),
    "stats": ("FrameStats",),
}
_MODULE_OF = {name: module for module, names in _HOMES.items() for name in names}

__all__ = list(_MODULE_OF)


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{_MODULE_OF[name]}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
