"""The offline tools on a Ray cluster: a driver/worker split around the same Segmenter.

Workers (one per GPU, or per CPU slot) load the model once and do the tools' jobs; the driver
reads, fits shared centres, tracks labels in stamp order and writes every output, so a run on the
cluster writes what a single-process run writes. Ray is imported lazily: without it, only --ray
fails, with what to install.
"""

from .cluster import RAY_HINT, ClusterError, connect, import_ray
from .pool import RayRunner

__all__ = ["RAY_HINT", "ClusterError", "connect", "import_ray", "RayRunner"]
