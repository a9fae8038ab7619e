"""What segment and bag run on: the segmenter here, or a pool of Ray workers. Loads torch: commands
import this inside run(), never at the top, so --help stays light."""

from __future__ import annotations

import argparse
from contextlib import contextmanager
from typing import Iterator

from ..engine import CheckpointError, EmerDiffConfig, Segmenter, load_segmenter
from ..engine.jobs import FrameRunner


@contextmanager
def open_engine(args: argparse.Namespace, config: EmerDiffConfig) -> Iterator[Segmenter | FrameRunner]:
    """The segmenter of args.method, or with --ray a pool of workers on the cluster that each load its model once."""
    method = getattr(args, "method", "emerdiff")
    if args.ray is None:
        yield load_segmenter(config, method)
        return
    from ..distributed import RayRunner, connect

    with connect(args.ray):
        try:
            runner = RayRunner(config, args.ray_workers, gpus_per_worker=args.ray_gpus_per_worker,
                               cpus_per_worker=args.ray_cpus_per_worker, method=method)
        except CheckpointError as exc:  # the model path may exist here and not on the worker's machine
            raise CheckpointError(exc.spec, f"a Ray worker could not load it (each worker loads it on its own "
                                            f"machine, so a local folder must be there too): {exc.reason}",
                                  exc.setting) from None
        with runner:
            yield runner
