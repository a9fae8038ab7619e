"""The sample frames that ship with the package."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def sample_dir() -> Path:
    return Path(str(files("emerdiff_ros") / "data" / "samples"))


def sample_images() -> list[Path]:
    return sorted(sample_dir().glob("*.png"))
