"""The Ray worker: one per GPU (or CPU slot), the model loaded once, jobs done with the same code as here.

Workers never write files: they return labels, masks and features to the driver, which writes
exactly what the single-process tools write.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import threadpoolctl
import torch

from ..engine import EmerDiffConfig, load_segmenter
from ..engine.jobs import Job


@dataclass(frozen=True)
class ThreadSettings:
    """The driver's CPU thread counts. Float sums depend on them (2 torch threads instead of 1 change a
    few label pixels), and Ray sets OMP_NUM_THREADS to a worker's CPUs: workers take the driver's."""

    torch_threads: int
    pools: dict[str, int]  # threadpoolctl library prefix (libgomp, libscipy_openblas, ...) -> threads

    @classmethod
    def here(cls) -> "ThreadSettings":
        pools: dict[str, int] = {}
        for pool in threadpoolctl.threadpool_info():
            pools[pool["prefix"]] = min(pool["num_threads"], pools.get(pool["prefix"], pool["num_threads"]))
        return cls(torch.get_num_threads(), pools)

    def apply(self) -> None:
        threadpoolctl.threadpool_limits(limits=self.pools)
        torch.set_num_threads(self.torch_threads)  # after: torch's own OpenMP is among the pools


@dataclass(frozen=True)
class WorkerInfo:
    host: str
    pid: int
    device: str
    smoke_note: str | None


class SegmentWorker:
    """Made a Ray actor by the pool (ray.remote), so this module needs no Ray."""

    def __init__(self, config: EmerDiffConfig, threads: ThreadSettings, method: str = "emerdiff"):
        threads.apply()
        self._config, self._method = config, method
        self._segmenter = None  # loaded by start()

    def start(self) -> WorkerInfo:
        """Load the model (the pool sends jobs only after this returns)."""
        self._segmenter = load_segmenter(self._config, self._method)
        model = self._segmenter.model
        return WorkerInfo(socket.gethostname(), os.getpid(), str(model.device), model.smoke_note)

    def run(self, job: Job):
        return job.run(self._segmenter)
