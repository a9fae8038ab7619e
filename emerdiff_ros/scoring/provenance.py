"""Where predictions record whether their cluster ids mean the same in every frame.

Only then is the whole-set matching meaningful. `emerdiff segment` writes a small manifest next to its
label images; `emerdiff bag` writes a key into the output bag's metadata.yaml (rosbag2 custom_data).
"""

from __future__ import annotations

import json
from pathlib import Path

SEGMENT_MANIFEST = "emerdiff_segment.json"
BAG_LABEL_IDS_KEY = "emerdiff.label_ids"  # custom_data value: "consistent" or "per-frame"


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


def folder_ids_consistent(folder: Path) -> bool | None:
    """What the folder's segment manifest says; None without one (or an unreadable one)."""
    try:
        value = json.loads((Path(folder) / SEGMENT_MANIFEST).read_text()).get("label_ids")
    except (OSError, ValueError, AttributeError):
        return None
    return {"consistent": True, "per-frame": False}.get(value)


def bag_ids_consistent(custom_data: dict | None) -> bool | None:
    value = (custom_data or {}).get(BAG_LABEL_IDS_KEY)
    return {"consistent": True, "per-frame": False}.get(value)
