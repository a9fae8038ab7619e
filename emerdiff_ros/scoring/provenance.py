"""What frames record about themselves, for `emerdiff eval`.

Predictions: whether their cluster ids mean the same in every frame (only then is the whole-set matching
meaningful), and whether the model had random weights (a smoke run). `emerdiff segment` writes a small
manifest next to its label images; `emerdiff bag` writes keys into the output bag's metadata.yaml
(rosbag2 custom_data).
Ground truth: the CARLA release that made it, whose numbering decodes it. `carla_rig --save-frames` writes
a manifest next to the ground-truth PNGs; `carla_rig --record` writes a key into the bag's custom_data,
which `emerdiff bag` copies into its output.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

SEGMENT_MANIFEST = "emerdiff_segment.json"
BAG_LABEL_IDS_KEY = "emerdiff.label_ids"  # custom_data value: "consistent" or "per-frame"
BAG_SMOKE_KEY = "emerdiff.smoke_run"  # custom_data value: the model's smoke-run note; absent for real weights
FRAMES_MANIFEST = "emerdiff_frames.json"  # beside ground-truth PNGs: {"carla_version": "0.9.15", ...}
BAG_CARLA_VERSION_KEY = "emerdiff.carla_version"  # custom_data value: the CARLA server's version


def ids_value(consistent: bool) -> str:
    return "consistent" if consistent else "per-frame"


def write_segment_manifest(folder: Path, consistent: bool, **details) -> Path:
    path = Path(folder) / SEGMENT_MANIFEST
    record = {"label_ids": ids_value(consistent),
              "meaning": "consistent: a label value means the same cluster in every frame (one set of centres); "
                         "per-frame: each frame numbers its own clusters", **details}
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(record, indent=2) + "\n")
    partial.replace(path)
    return path


def _manifest_value(path: Path, key: str):
    """A key of a small JSON manifest; None without the file (or an unreadable one)."""
    try:
        return json.loads(Path(path).read_text()).get(key)
    except (OSError, ValueError, AttributeError):
        return None


def folder_ids_consistent(folder: Path) -> bool | None:
    """What the folder's segment manifest says; None without one (or an unreadable one)."""
    return {"consistent": True, "per-frame": False}.get(_manifest_value(Path(folder) / SEGMENT_MANIFEST, "label_ids"))


def folder_smoke_note(folder: Path) -> str | None:
    """The smoke-run note the folder's segment manifest records (the model had random weights)."""
    value = _manifest_value(Path(folder) / SEGMENT_MANIFEST, "smoke_run")
    return value if isinstance(value, str) else None


def bag_ids_consistent(custom_data: dict | None) -> bool | None:
    value = (custom_data or {}).get(BAG_LABEL_IDS_KEY)
    return {"consistent": True, "per-frame": False}.get(value)


def write_frames_manifest(folder: Path, carla_version: str) -> Path:
    path = Path(folder) / FRAMES_MANIFEST
    path.write_text(json.dumps({"carla_version": carla_version,
                                "meaning": "the CARLA server that rendered these frames; its release decides "
                                           "the numbering of the semantic tags and palette"}, indent=2) + "\n")
    return path


def folder_carla_version(folder: Path) -> str | None:
    """The CARLA version a ground-truth folder's manifest records; None without one."""
    value = _manifest_value(Path(folder) / FRAMES_MANIFEST, "carla_version")
    return value if isinstance(value, str) else None


def bag_custom_data(bag: Path) -> dict:
    """custom_data of a rosbag2's metadata.yaml ({} for ROS 1 bags and bags without it)."""
    try:
        metadata = yaml.safe_load((Path(bag) / "metadata.yaml").read_text())
        data = metadata["rosbag2_bagfile_information"].get("custom_data")
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError):
        return {}
    return data if isinstance(data, dict) else {}
