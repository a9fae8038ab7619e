"""Per-frame figures that the engine fills and the node, the CLI and the benchmark print."""

from __future__ import annotations

import resource
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Iterator

import torch

STAGES = ("encode", "features", "kmeans", "denoise", "decode", "labels")


@dataclass
class FrameStats:
    device: str = "cpu"
    stage_seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    seconds: float = 0.0
    unet_sample_evals: int = 0  # samples through the UNet, the early-stopped feature passes included
    sequential_unet_calls: int = 0
    # samples of the step-t_m call whose UNet work before the modulated layer was not done: they shared
    # the reference's (counted in unet_sample_evals all the same)
    unet_prefix_shared: int = 0
    vae_encodes: int = 0
    vae_decodes: int = 0
    peak_memory_mb: float = 0.0  # CUDA: peak allocated during the frame; CPU: peak RSS of the process
    processing_size: tuple[int, int] = (0, 0)  # (width, height) the model saw
    masks: int = 0  # clusters actually used (K, or fewer when the image has fewer distinct features)
    modulation_timestep: int = 0  # t_m after snapping to the schedule
    max_batch: int = 0  # UNet samples per call actually used (lowered after an out-of-memory)

    @classmethod
    @contextmanager
    def frame(cls, device: torch.device) -> Iterator["FrameStats"]:
        stats = cls(device=str(device))
        cuda = device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        yield stats
        if cuda:
            torch.cuda.synchronize(device)
            stats.peak_memory_mb = torch.cuda.max_memory_allocated(device) / 2**20
        else:
            stats.peak_memory_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        stats.seconds = time.perf_counter() - start

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        cuda = self.device.startswith("cuda")
        if cuda:  # this frame's device: a thread segmenting on cuda:1 must not wait for cuda:0
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            if cuda:
                torch.cuda.synchronize(self.device)
            self.stage_seconds[name] += time.perf_counter() - start

    def as_dict(self) -> dict:
        out = asdict(self)
        out["seconds_per_frame"] = out.pop("seconds")
        return out

    def summary(self) -> str:
        stages = " ".join(f"{k}={v:.2f}s" for k, v in self.stage_seconds.items())
        return (
            f"{self.seconds:.2f}s/frame ({stages}) unet_evals={self.unet_sample_evals} "
            f"unet_calls={self.sequential_unet_calls} prefix_shared={self.unet_prefix_shared} "
            f"decodes={self.vae_decodes} "
            f"peak={self.peak_memory_mb:.0f}MB size={self.processing_size[0]}x{self.processing_size[1]} "
            f"masks={self.masks}"
        )
