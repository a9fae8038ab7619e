"""The UNet's work before the modulated layer, done once for a batch whose samples all agree there.

At step t_m every sample of the modulated batch is the reference: the same latent, timestep and prompt.
The offsets enter at the modulated layer, so everything the UNet computes before that layer is the same
for every sample. `shared_prefix` runs that part on the first sample alone and hands every later module
the result broadcast over the batch (a view, no copy); from the modulated layer on, the batch runs as
usual.

The split follows the UNet's own modules, not a hand-written copy of its forward: the modules on the
path to the modulated layer (the UNet, up_blocks.1, its attentions.2, the transformer block) run at
full batch, and each module called directly by one of them runs on one sample while the layer has not
been reached yet. Every module that runs before the layer is such a module or inside one, so what is
left at full batch before the split is only the glue of those path modules' forwards (a concatenation,
a reshape), no convolution, attention or projection.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

_CONTAINERS = (nn.ModuleList, nn.ModuleDict)


def path_to(layer: str) -> set[str]:
    """Names of the modules whose forward the layer is called from, directly or further down ('' is the UNet)."""
    parts = layer.split(".")
    return {".".join(parts[:i]) for i in range(len(parts))}


def prefix_modules(unet: nn.Module, layer: str) -> list[nn.Module]:
    """The modules a forward on the path to the layer calls itself: candidates to run on one sample."""
    path = path_to(layer)
    modules = dict(unet.named_modules())
    chosen = []
    for name, module in modules.items():
        if name in path or name == layer or isinstance(module, _CONTAINERS):
            continue
        caller = name.rpartition(".")[0]
        while caller not in path and isinstance(modules.get(caller), _CONTAINERS):
            caller = caller.rpartition(".")[0]  # a ModuleList is indexed, never called: its owner calls
        if caller in path:
            chosen.append(module)
    return chosen


@contextmanager
def shared_prefix(unet: nn.Module, layer: str, batch: int) -> Iterator[None]:
    """For the calls inside the block: everything before `layer` runs on sample 0 and is broadcast to `batch`.

    Only valid when every sample's input (latent, timestep, prompt) is the same as sample 0's.
    """
    split = _Split(batch)
    with ExitStack() as hooks:
        for module in prefix_modules(unet, layer):
            hooks.callback(module.register_forward_pre_hook(split.one_sample, with_kwargs=True).remove)
            hooks.callback(module.register_forward_hook(split.whole_batch).remove)
        target = unet.get_submodule(layer)
        hooks.callback(target.register_forward_pre_hook(split.reached).remove)
        hooks.callback(unet.register_forward_pre_hook(split.start).remove)
        yield


class _Split:
    """The hooks' shared state: whether the current UNet call has reached the modulated layer."""

    def __init__(self, batch: int):
        self.batch = batch
        self.before = True

    def start(self, module, args) -> None:
        self.before = True

    def reached(self, module, args) -> None:
        self.before = False

    def one_sample(self, module, args, kwargs):
        if not self.before:
            return None
        return _map(args, self._first), _map(kwargs, self._first)

    def whole_batch(self, module, args, output):
        return _map(output, self._broadcast) if self.before else None

    def _first(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor[:1] if tensor.dim() and tensor.shape[0] == self.batch else tensor

    def _broadcast(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.expand(self.batch, *tensor.shape[1:]) if tensor.dim() and tensor.shape[0] == 1 else tensor


def _map(value: Any, change) -> Any:
    """value with change() applied to every tensor in it (tuples, lists and dicts followed)."""
    if isinstance(value, torch.Tensor):
        return change(value)
    if isinstance(value, (tuple, list)):
        return type(value)(_map(v, change) for v in value)
    if isinstance(value, dict):
        return {k: _map(v, change) for k, v in value.items()}
    return value


def prefix_flop_share(unet: nn.Module, layer: str, run) -> float:
    """Share of one UNet evaluation's FLOPs spent before `layer` is reached, counted during run()."""
    counter = FlopCounterMode(display=False)
    reached: list[int] = []
    hook = unet.get_submodule(layer).register_forward_pre_hook(lambda *_: reached.append(counter.get_total_flops()))
    try:
        with counter:
            run()
    finally:
        hook.remove()
    return reached[0] / counter.get_total_flops()
