"""The offline tools on a Ray cluster: a driver/worker split around the same Segmenter.

Workers (one per GPU, or per CPU slot) load the model once and do the tools' jobs; the driver
reads, fits shared centres, tracks labels in stamp order and writes every output, so a run on the
cluster writes what a single-process run writes. Ray is imported lazily: without it, only --ray
fails, with what to install. RayRunner loads on first use (PEP 562): it needs the engine, hence torch,
which the CLI must not load to parse its flags or catch ClusterError.
"""

from .cluster import RAY_HINT, ClusterError, connect, import_ray

__all__ = ["RAY_HINT", "ClusterError", "connect", "import_ray", "RayRunner"]


def __getattr__(name: str):
    if name != "RayRunner":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from .pool import RayRunner

    return RayRunner
