"""Attention processors for EmerDiff, set on the UNet the way diffusers sets its own.

* QueryCapture reads the query vectors (to_q output) of one layer and stops the forward pass
  there: nothing after that layer is needed for the features.
* SharedAttention runs a batch whose sample 0 is the unmodulated reference. With attention
  injection every sample uses the reference's attention probabilities, computed once per layer
  and step and applied to every sample's values in one matrix product. It can also add a
  per-sample spatial offset (the modulation) before or after the output projection.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F

from .errors import ConfigError

_SUFFIX = ".processor"


class StopForward(Exception):
    """Raised by QueryCapture once it holds the queries; the caller catches it."""


def attention_layer_names(unet) -> list[str]:
    return [name[: -len(_SUFFIX)] for name in unet.attn_processors]


def layer_grid(tokens: int, latent_hw: tuple[int, int]) -> tuple[int, int]:
    """Spatial (h, w) of a layer with `tokens` tokens inside a UNet run on a latent of latent_hw."""
    lh, lw = latent_hw
    factor = math.sqrt(lh * lw / tokens)
    h, w = round(lh / factor), round(lw / factor)
    if h * w != tokens:
        raise ValueError(f"{tokens} tokens do not tile a {lh}x{lw} latent")
    return h, w


@contextmanager
def attention_processors(unet, processors: dict[str, object]) -> Iterator[None]:
    """Set processors on the named layers for the duration of the block, then restore the originals."""
    original = unet.attn_processors
    known = {name[: -len(_SUFFIX)] for name in original}
    unknown = sorted(set(processors) - known)
    if unknown:
        raise ConfigError(f"no attention layer named {unknown[0]!r}; the UNet has e.g. {sorted(known)[:4]}")
    for name in processors:
        _check_supported(unet.get_submodule(name), name)
    unet.set_attn_processor({n: processors.get(n[: -len(_SUFFIX)], p) for n, p in original.items()})
    try:
        yield
    finally:
        unet.set_attn_processor(original)


def _check_supported(attn, name: str) -> None:
    plain = (
        attn.spatial_norm is None
        and attn.group_norm is None
        and not attn.residual_connection
        and attn.rescale_output_factor == 1.0
    )
    if not plain:
        raise ConfigError(f"layer {name!r} is not a plain transformer attention layer (as in SD 1.x/2.x)")


class QueryCapture:
    """Sums the to_q output over every sample it sees, then stops the UNet."""

    def __init__(self) -> None:
        self.total: torch.Tensor | None = None
        self.count = 0

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, **kwargs):
        queries = attn.to_q(hidden_states).float().sum(0)
        self.total = queries if self.total is None else self.total + queries
        self.count += hidden_states.shape[0]
        raise StopForward

    def mean(self) -> torch.Tensor:
        """(tokens, channels) query vectors averaged over every sample."""
        return self.total / self.count


class SharedAttention:
    """Attention for a batch whose sample 0 is the unmodulated reference.

    All samples share one prompt, so with injection the cross-attention output is the same for
    every sample and is computed once; an offset before the projection makes it per sample there.
    """

    def __init__(self, inject: bool, latent_hw: tuple[int, int], before_projection: bool):
        self.inject = inject
        self.latent_hw = latent_hw
        self.before_projection = before_projection
        # (batch, h, w), broadcast over channels; 0 for the reference, so it stays unmodulated either way.
        self.offsets: torch.Tensor | None = None

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, **kwargs):
        if attention_mask is not None:
            raise ValueError("attention masks are not supported (SD uses none)")
        batch, tokens, _ = hidden_states.shape
        cross = encoder_hidden_states is not None
        context = encoder_hidden_states if cross else hidden_states
        if cross and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        if self.inject:
            out = self._injected(attn, hidden_states, context, cross)
        else:
            out = self._plain(attn, hidden_states, context)
        offsets = None if self.offsets is None else self._token_offsets(tokens).to(out.dtype)
        if offsets is not None and self.before_projection:
            out = out + offsets  # the paper's f(attention + c M); a shared cross-attention output becomes per sample
        out = attn.to_out[1](attn.to_out[0](out)).expand(batch, -1, -1)
        if offsets is not None and not self.before_projection:
            out = out + offsets
        return out

    def _token_offsets(self, tokens: int) -> torch.Tensor:
        offsets = self.offsets
        grid = layer_grid(tokens, self.latent_hw)
        if offsets.shape[1:] != grid:
            offsets = F.interpolate(offsets[:, None], size=grid, mode="nearest")[:, 0]
        return offsets.reshape(offsets.shape[0], tokens, 1)

    @staticmethod
    def _plain(attn, hidden_states, context):
        batch = hidden_states.shape[0]
        q, k, v = (
            proj(x).view(batch, -1, attn.heads, proj.out_features // attn.heads).transpose(1, 2)
            for proj, x in ((attn.to_q, hidden_states), (attn.to_k, context), (attn.to_v, context))
        )
        out = F.scaled_dot_product_attention(q, k, v, scale=attn.scale)
        return out.transpose(1, 2).reshape(batch, -1, attn.heads * q.shape[-1])

    @staticmethod
    def _injected(attn, hidden_states, context, cross):
        q = attn.head_to_batch_dim(attn.to_q(hidden_states[:1]))
        k = attn.head_to_batch_dim(attn.to_k(context[:1]))
        probs = attn.get_attention_scores(q, k)  # (heads, tokens, keys): the reference's maps
        if cross:
            return attn.batch_to_head_dim(torch.bmm(probs, attn.head_to_batch_dim(attn.to_v(context[:1]))))
        values = attn.to_v(context)
        batch, keys, channels = values.shape
        heads, dim = attn.heads, channels // attn.heads
        # One product for the whole batch: (heads, tokens, keys) @ (heads, keys, batch * dim).
        values = values.view(batch, keys, heads, dim).permute(2, 1, 0, 3).reshape(heads, keys, batch * dim)
        out = torch.bmm(probs, values)
        return out.view(heads, -1, batch, dim).permute(2, 1, 0, 3).reshape(batch, -1, channels)
