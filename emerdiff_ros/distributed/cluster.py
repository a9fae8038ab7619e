"""Connecting to a Ray cluster; Ray is imported only here, when asked for, so nothing else needs it."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Iterator

RAY_HINT = ("--ray needs Ray, which is not installed: pip install 'emerdiff_ros[ray]' (ray 2.60.0), on this "
            "machine and on every node of the cluster")


class ClusterError(Exception):
    """The cluster cannot do the job (not installed, unreachable, too small, workers lost); one line says why."""


def import_ray():
    try:
        import ray
    except ImportError:
        raise ClusterError(RAY_HINT) from None
    return ray


@contextmanager
def connect(address: str) -> Iterator[None]:
    """Ray for one command. `local` starts a cluster on this machine for the command's lifetime; anything
    else is ray.init's address of a running cluster (auto, HOST:PORT, ray://HOST:PORT). A connection this
    process already has is used as it is, and left open."""
    ray = import_ray()
    if ray.is_initialized():
        yield
        return
    options = {"address": "local", "include_dashboard": False} if address == "local" else {"address": address}
    try:
        ray.init(logging_level=logging.WARNING, **options)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise ClusterError(f"cannot connect to the Ray cluster at {address!r}: {' '.join(str(exc).split())}") \
            from None
    try:
        yield
    finally:
        ray.shutdown()
