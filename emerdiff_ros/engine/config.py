"""The one configuration object for EmerDiff and the settings that run it.

Every field carries its external name (CLI flag ``--num-masks`` / ROS parameter ``num_masks``),
a description and its valid range in the field metadata, so the CLI, the ROS node and the
presets are generated from this class rather than copied from it. `param`, `param_specs` and
`check_fields` serve any settings dataclass written the same way (the node's own settings too).
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any, Iterator, NamedTuple

from .errors import ConfigError

# diffusers names of the attention layers the paper refers to (SD 1.x/2.x block layout).
FEATURE_LAYER = "up_blocks.1.attentions.0.transformer_blocks.0.attn2"
# The paper's appendix compares perturbing each of the three cross-attention layers of the 16x16 up
# block. We perturb the last one, as the only public re-implementation (the CARLA study's code) does,
# and keep it configurable.
MODULATION_LAYER = "up_blocks.1.attentions.2.transformer_blocks.0.attn2"

# The paper's model (the paper summary in our sources and the CARLA study both name it).
DEFAULT_MODEL = "CompVis/stable-diffusion-v1-4"
SD21_BASE_MODEL = "stabilityai/stable-diffusion-2-1-base"  # also works: one --model away
# Where the offset c M_k joins the modulated layer. The paper's equation (Sec. 3.3) is
# f(softmax(QK^T / sqrt(d)) V) + c M: after the output projection f (to_out), c on every channel, as the
# CARLA study's code does too. Its appendix (Fig. 14) ablates f(softmax(QK^T / sqrt(d)) V + c M), the
# form the CARLA study's report writes: before f, so the channels see c W_o 1.
MODULATION_POINTS = ("after_projection", "before_projection")
# keep_aspect suits wide driving frames; square stretches to resolution x resolution (the paper's 512x512
# photos); center_crop takes the largest centred square, as the CARLA study's code does.
PROCESSING_MODES = ("keep_aspect", "square", "center_crop")
# What the Gaussian filter smooths: the paper's difference map d = ||I(-lambda) - I(+lambda)||, or the
# signed RGB difference of the two images before the norm.
BLUR_TARGETS = ("difference_map", "images")
# emerdiff: the paper's method. lowres: its baseline, the same masks upsampled bilinearly to the image.
DIFFUSION_METHODS = ("emerdiff", "lowres")
# The CARLA study's two other methods. dino: k-means on a self-supervised ViT's patch features, upsampled
# bilinearly. segformer: a supervised Cityscapes segmenter (a reference, not an unsupervised competitor).
BASELINE_METHODS = ("dino", "segformer")
METHODS = DIFFUSION_METHODS + BASELINE_METHODS
CLASS_ID_METHODS = ("segformer",)  # their label values are classes: the same in every frame, nothing to track
DEFAULT_DINO_MODEL = "facebook/dinov2-base"
DINO_V1_MODEL = "facebook/dino-vitb16"  # the study's ViT-B/16
DEFAULT_SEGFORMER_MODEL = "nvidia/segformer-b5-finetuned-cityscapes-1024-1024"
FAST_SEGFORMER_MODEL = "nvidia/segformer-b0-finetuned-cityscapes-1024-1024"


def param(default: Any, description: str, *, low=None, high=None, choices=None, name=None, length=None,
          read_only=False, may_be_empty=False):
    """A settings field: default, description, and what makes a value valid.

    read_only marks settings that need a restart (a new model) to change; may_be_empty lets a text setting
    be "" (meaning: off). A tuple field's items are floats (a pose) or, typed tuple[str, ...], names.
    """
    metadata = {"description": description, "low": low, "high": high, "choices": choices, "name": name,
                "length": length, "read_only": read_only, "may_be_empty": may_be_empty}
    if isinstance(default, (list, tuple)):
        return field(default_factory=lambda: tuple(default), metadata=metadata)
    return field(default=default, metadata=metadata)


class ParamSpec(NamedTuple):
    """One configuration field as the outside world sees it."""

    name: str  # external name: ROS parameter, CLI flag with '-' for '_'
    attr: str  # attribute on the dataclass
    type: type  # bool, int, float, str, or tuple (of `item`s)
    default: Any
    description: str
    low: float | None
    high: float | None
    choices: tuple[str, ...] | None
    length: int | None  # tuples only
    read_only: bool
    may_be_empty: bool = False
    item: type = float  # a tuple's items: float, or str (a list of names)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class EmerDiffConfig:
    # --- the method, with the paper's defaults ---
    num_masks: int = param(25, "K: number of k-means clusters, i.e. low-resolution masks", low=2, high=4096)
    modulation_lambda: float = param(
        10.0, "lambda: offset added to the masked tokens (+lambda and -lambda)", low=0.0, high=10000.0, name="lambda"
    )
    modulation_timestep: int = param(
        281, "t_m: timestep of the modulated step (snapped to the schedule)", low=1, high=999, name="t_m"
    )
    num_inference_steps: int = param(50, "steps of the DDPM schedule the inversion uses", low=2, high=1000,
                                     name="steps")
    feature_timestep: int = param(1, "t_f: timestep at which the query features are read", low=0, high=999, name="t_f")
    feature_draws: int = param(100, "noise draws the query features are averaged over", low=1, high=1000)
    feature_layer: str = param(FEATURE_LAYER, "attention layer whose to_q output is clustered")
    modulation_layer: str = param(MODULATION_LAYER, "attention layer whose output is modulated")
    modulation_point: str = param(
        "after_projection",
        "where the offset joins the modulated layer: after its output projection (the paper's equation, "
        "Sec. 3.3) or before it (the alternative its Fig. 14 ablates)",
        choices=MODULATION_POINTS,
    )
    attention_injection: bool = param(
        True, "fix every attention map to the unmodulated reconstruction's during modulated denoising"
    )
    blur_sigma: float = param(0.8, "Gaussian blur (pixels) of the decoded differences; 0 disables", low=0.0, high=20.0)
    blur_target: str = param(
        "difference_map",
        "what the blur smooths: the difference map ||I(-lambda) - I(+lambda)|| (the paper's) or the signed "
        "RGB difference of the two images before the norm",
        choices=BLUR_TARGETS,
    )
    resolution: int = param(
        512, "processing size: about resolution^2 pixels (keep_aspect) or resolution x resolution (square, "
        "center_crop), sides multiples of 64", low=64, high=2048,
    )
    processing: str = param(
        "keep_aspect",
        "how the image is resized for the model: keep_aspect keeps its aspect ratio; square stretches it to "
        "resolution x resolution; center_crop resizes its largest centred square to that (the CARLA study's "
        "input), pixels outside get no label",
        choices=PROCESSING_MODES,
    )
    kmeans_restarts: int = param(10, "k-means++ restarts; the best inertia wins", low=1, high=1000)
    seed: int = param(0, "seed of every noise draw and of k-means: same seed, same labels", low=0, high=2**31 - 1)
    # --- model and runtime ---
    model: str = param(
        DEFAULT_MODEL, "Hugging Face id or local diffusers folder of an SD 1.x/2.x checkpoint, or tiny-random",
        read_only=True,
    )
    dino_model: str = param(
        DEFAULT_DINO_MODEL, "method dino: Hugging Face id or local transformers folder of a DINOv2 or DINO ViT "
        f"({DINO_V1_MODEL} is the study's ViT-B/16), or tiny-random", read_only=True,
    )
    segformer_model: str = param(
        DEFAULT_SEGFORMER_MODEL, "method segformer (supervised): Hugging Face id or local transformers folder of a "
        f"Cityscapes SegFormer ({FAST_SEGFORMER_MODEL} for speed), or tiny-random", read_only=True,
    )
    device: str = param("auto", "torch device: auto, cpu, cuda, cuda:N", read_only=True)
    dtype: str = param("auto", "weights dtype: auto (float16 on GPU, float32 on CPU)",
                       choices=("auto", "float32", "float16", "bfloat16"), read_only=True)
    max_batch: int = param(
        64, "most UNet samples per call (the reference and whole +/- pairs); lowered on out-of-memory", low=3, high=4096
    )
    max_decode_batch: int = param(
        16, "most images per VAE decode (whole +/- pairs); lowered automatically on out-of-memory", low=2, high=1024
    )

    def __post_init__(self) -> None:
        check_fields(self)

    def replace(self, **changes: Any) -> "EmerDiffConfig":
        return replace(self, **changes)

    @classmethod
    def from_preset(cls, preset: str = "paper", **overrides: Any) -> "EmerDiffConfig":
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        return cls(**{**PRESETS[preset], **overrides})

    def as_params(self) -> dict[str, Any]:
        """External name -> value, e.g. for logging or a ROS parameter file."""
        return {spec.name: getattr(self, spec.attr) for spec in config_fields()}


PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    # A CARLA driving-scene study found K = 10-15 best; fewer clusters also means fewer samples.
    # What that K rests on: the study's runs never applied attention injection (a flag bug in its
    # code), used SD v1.4 in float32, read the features at t = 0, segmented the central 256x256 square of
    # each 1024x256 frame upscaled 2x to 512x512 (processing center_crop), and added the offset after
    # the output projection (the paper's equation, our default). This preset keeps our defaults for the
    # rest (injection on, t_f = 1, keep_aspect); `emerdiff sweep` re-decides K and them on a user's GPU.
    "carla": {"num_masks": 15},
}


def method_model(config: EmerDiffConfig, method: str) -> str:
    """The checkpoint a method runs: dino_model, segformer_model, or the Stable Diffusion model."""
    return {"dino": config.dino_model, "segformer": config.segformer_model}.get(method, config.model)


_TYPES = {"int": int, "float": float, "str": str, "bool": bool, "tuple[float, ...]": tuple, "tuple[str, ...]": tuple}


def param_specs(cls) -> Iterator[ParamSpec]:
    """The fields of a settings dataclass as the outside world sees them."""
    for f in fields(cls):
        meta = f.metadata
        default = f.default if f.default is not MISSING else f.default_factory()
        yield ParamSpec(
            name=meta["name"] or f.name, attr=f.name, type=_TYPES[f.type], default=default,
            description=meta["description"], low=meta["low"], high=meta["high"], choices=meta["choices"],
            length=meta["length"], read_only=meta["read_only"], may_be_empty=meta["may_be_empty"],
            item=str if f.type == "tuple[str, ...]" else float,
        )


def config_fields() -> Iterator[ParamSpec]:
    return param_specs(EmerDiffConfig)


def check_fields(obj) -> None:
    """Coerce ints to floats where floats are due; raise ConfigError with the reason for any bad value."""
    for spec in param_specs(type(obj)):
        value = getattr(obj, spec.attr)
        if spec.type is float and type(value) is int:
            value = float(value)
        elif spec.type is tuple and spec.item is str and isinstance(value, (list, tuple)):
            if not all(isinstance(v, str) and v for v in value):
                raise ConfigError(f"{spec.name} must be a list of non-empty names, got {list(value)}")
            value = tuple(value)
        elif spec.type is tuple and isinstance(value, (list, tuple)):
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
                raise ConfigError(f"{spec.name} must be a list of numbers, got {list(value)}")
            value = tuple(float(v) for v in value)
        if type(value) is not spec.type:
            raise ConfigError(f"{spec.name} must be {spec.type.__name__}, got {value!r}")
        problem = spec_violation(spec, value)
        if problem:
            raise ConfigError(problem)
        object.__setattr__(obj, spec.attr, value)


def spec_violation(spec: ParamSpec, value: Any) -> str | None:
    """Why value is not acceptable for spec, or None."""
    if spec.choices is not None and value not in spec.choices:
        return f"{spec.name} must be one of {', '.join(spec.choices)}, got {value!r}"
    numbers = value if spec.type is tuple and spec.item is float else (value,) if spec.type is float else ()
    if not all(math.isfinite(v) for v in numbers):
        return f"{spec.name} must be finite, got {_plain(value)}"
    if spec.type in (int, float):
        if spec.low is not None and value < spec.low or spec.high is not None and value > spec.high:
            return f"{spec.name} must be between {spec.low} and {spec.high}, got {value!r}"
    if spec.type is str and not value and not spec.may_be_empty:
        return f"{spec.name} must not be empty"
    if spec.length is not None and len(value) != spec.length:
        return f"{spec.name} must have {spec.length} values, got {len(value)}"
    return None


def _plain(value: Any) -> str:
    """A value as a user wrote it: [1.0, nan], not (np.float64(1.0), ...)."""
    if isinstance(value, tuple):
        return "[" + ", ".join(f"{float(v):g}" for v in value) + "]"
    return f"{value:g}" if isinstance(value, float) else repr(value)
