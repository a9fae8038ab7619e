"""Loading a frozen Stable Diffusion (UNet, VAE, schedule, empty-prompt embedding).

Real checkpoints come from a Hugging Face id (cache first, then the hub) or a local diffusers
folder. ``tiny-random`` and ``sd21-random`` build seeded random-weight models with SD's block
layout: the code path is the real one, the weights are not, so their labels mean nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar
from urllib.parse import urlparse

import torch

from .checkpoints import CheckpointError
from .errors import ConfigError

log = logging.getLogger(__name__)

RANDOM_MODELS = ("tiny-random", "sd21-random")
T = TypeVar("T")


@dataclass(kw_only=True)
class LoadedModel:
    """A loaded network's name and where it runs; every output of a random-weight one says so."""

    name: str
    device: torch.device
    dtype: torch.dtype
    random_weights: bool

    @property
    def smoke_note(self) -> str | None:
        if not self.random_weights:
            return None
        return f"SMOKE RUN: '{self.name}' has random weights; the labels are meaningless"


@dataclass(kw_only=True)
class DiffusionModel(LoadedModel):
    unet: torch.nn.Module
    vae: torch.nn.Module
    scheduler: object  # diffusers DDIMScheduler; only its configuration and alphas are used
    prompt_embedding: torch.Tensor  # (1, tokens, dim): the empty prompt, on device and dtype


def resolve_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as exc:
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {spec!r}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {spec!r} asked for, but torch sees no CUDA GPU (torch {torch.__version__})")
    return device


def resolve_dtype(spec: str, device: torch.device) -> torch.dtype:
    if spec == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[spec]


def load_model(spec: str, device: str = "auto", dtype: str = "auto") -> DiffusionModel:
    """Load the model named by spec: a random model name, a local folder or a hub id."""
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    if spec in RANDOM_MODELS:
        unet, vae, scheduler, embedding = _random_model(spec, torch_dtype)
        random_weights = True
    else:
        unet, vae, scheduler, embedding = _pretrained_model(spec, torch_dtype)
        random_weights = False
    unet.to(torch_device).eval().requires_grad_(False)
    vae.to(torch_device).eval().requires_grad_(False)
    return DiffusionModel(
        name=spec,
        unet=unet,
        vae=vae,
        scheduler=scheduler,
        prompt_embedding=embedding.to(torch_device, torch_dtype),
        device=torch_device,
        dtype=torch_dtype,
        random_weights=random_weights,
    )


# --- real checkpoints -------------------------------------------------------------------------


def _hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP check, so an offline machine fails in seconds instead of minutes of retries."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def load_cache_first(spec: str, load: Callable[[str, dict], T], setting: str = "model") -> T:
    """load(source, options) of a local folder, or of a hub id from the cache first, then the hub if reachable.

    setting names the configuration field the spec came from, for the CheckpointError's advice.
    """
    folder = Path(spec).expanduser()
    if folder.exists():
        if not folder.is_dir():
            raise CheckpointError(spec, "it is a file, not a folder.", setting)
        attempts = [dict()]
        source = str(folder)
    elif spec.startswith(("/", ".", "~")):
        raise CheckpointError(spec, "no such folder.", setting)
    else:
        source = spec
        # Cache first: no network call at all when the checkpoint is already there.
        attempts = [dict(local_files_only=True)] + ([dict()] if _hub_reachable() else [])

    last_error: Exception | None = None
    for kwargs in attempts:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                return load(source, kwargs)
        except Exception as exc:  # diffusers/transformers/hub raise many types for "not there"
            last_error = exc
    first_line = str(last_error).strip().splitlines()[0] if last_error else ""
    if folder.exists():
        reason = f"the local folder cannot be loaded ({first_line})."
    elif len(attempts) == 1:  # the cache's "no file named config.json" would mislead: nothing is cached
        reason = "it is neither in the Hugging Face cache nor reachable (no network to the hub)."
    else:
        reason = f"it is not in the Hugging Face cache, and downloading it failed ({first_line})."
    raise CheckpointError(spec, reason, setting) from last_error


def _pretrained_model(spec: str, dtype: torch.dtype):
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    parts = (  # (subfolder, class, loading options)
        ("unet", UNet2DConditionModel, {"torch_dtype": dtype}),
        ("vae", AutoencoderKL, {"torch_dtype": dtype}),
        ("scheduler", DDIMScheduler, {}),
        ("tokenizer", CLIPTokenizer, {}),
        ("text_encoder", CLIPTextModel, {}),  # float32 on the CPU: it runs once, for the empty prompt
    )
    folder = Path(spec).expanduser()
    if folder.exists():
        if not folder.is_dir():
            raise CheckpointError(spec, "it is a file, not a diffusers folder.")
        missing = [name for name, _, _ in parts if not (folder / name).is_dir()]
        if missing:
            raise CheckpointError(spec, f"the folder has no {', '.join(missing)}/.")

    def load(source: str, kwargs: dict) -> dict:
        return {name: cls.from_pretrained(source, subfolder=name, **options, **kwargs) for name, cls, options in parts}

    loaded = load_cache_first(spec, load)
    embedding = _empty_prompt_embedding(loaded["tokenizer"], loaded["text_encoder"])
    return loaded["unet"], loaded["vae"], loaded["scheduler"], embedding


@torch.no_grad()
def _empty_prompt_embedding(tokenizer, text_encoder) -> torch.Tensor:
    # Some tokenizer configs leave model_max_length unset (a huge sentinel): the encoder's positions bound it.
    length = min(tokenizer.model_max_length, text_encoder.config.max_position_embeddings)
    ids = tokenizer("", padding="max_length", max_length=length, truncation=True, return_tensors="pt").input_ids
    return text_encoder(ids)[0].float()


# --- random-weight models ---------------------------------------------------------------------

# SD 1.x/2.x block layout: three cross-attention levels down, a plain bottom level, mirrored up,
# two layers per level (so each up block has three attention layers, as the paper's 16x16 block).
_DOWN = ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",)
_UP = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3
_RANDOM_CONFIGS = {
    "tiny-random": dict(
        unet=dict(block_out_channels=(16, 32, 32, 32), attention_head_dim=8, cross_attention_dim=32,
                  norm_num_groups=8, sample_size=16),
        vae=dict(block_out_channels=(8, 16, 16, 16), layers_per_block=1, norm_num_groups=8, sample_size=128),
        text=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4),
    ),
    # SD 2.1-base sizes, for measuring speed and memory without weights.
    "sd21-random": dict(
        unet=dict(block_out_channels=(320, 640, 1280, 1280), attention_head_dim=(5, 10, 20, 20),
                  cross_attention_dim=1024, use_linear_projection=True, norm_num_groups=32, sample_size=64),
        vae=dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, norm_num_groups=32, sample_size=512),
        text=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=1, num_attention_heads=16),
    ),
}
RANDOM_MODEL_SEED = 1234


def _random_model(spec: str, dtype: torch.dtype):
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = _RANDOM_CONFIGS[spec]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_MODEL_SEED)
        unet = UNet2DConditionModel(
            in_channels=4, out_channels=4, down_block_types=_DOWN, up_block_types=_UP, layers_per_block=2,
            **cfg["unet"],
        )
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4,
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
            scaling_factor=0.18215, **cfg["vae"],
        )
        vocab = 1000
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=vocab, max_position_embeddings=77, bos_token_id=vocab - 2, eos_token_id=vocab - 1,
            pad_token_id=vocab - 1, **cfg["text"],
        ))
        # The empty prompt as CLIP's tokenizer writes it: start token, then end/padding tokens.
        ids = torch.full((1, 77), vocab - 1, dtype=torch.long)
        ids[0, 0] = vocab - 2
        with torch.no_grad():
            embedding = text_encoder.eval()(ids)[0].float()
    # Cast as plain modules: diffusers' to() warns about float32-kept modules even when a model has none.
    torch.nn.Module.to(unet, dtype)
    torch.nn.Module.to(vae, dtype)
    scheduler = DDIMScheduler(  # SD 1.x/2.x-base schedule
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon",
    )
    return unet, vae, scheduler, embedding
