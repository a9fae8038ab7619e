"""Ground-truth label images in the encodings driving datasets use, decoded to class ids."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

UNKNOWN = 255  # a colour or value the format does not know

# CARLA's semantic tags as numbered up to 0.9.13, extended with the classes 0.9.14 added.
CARLA_CLASSES = {
    0: "unlabeled", 1: "building", 2: "fence", 3: "other", 4: "pedestrian", 5: "pole", 6: "roadline", 7: "road",
    8: "sidewalk", 9: "vegetation", 10: "vehicle", 11: "wall", 12: "trafficsign", 13: "sky", 14: "ground",
    15: "bridge", 16: "railtrack", 17: "guardrail", 18: "trafficlight", 19: "static", 20: "dynamic", 21: "water",
    22: "terrain", 23: "rider", 24: "truck", 25: "bus", 26: "train", 27: "motorcycle", 28: "bicycle",
}
# CARLA's CityScapesPalette colours across versions. 0.9.5 and 0.9.13 differ for fence and other;
# 0.9.14 (CityScapes ids) changed terrain and added the road users below vehicle.
CARLA_PALETTE = {
    (0, 0, 0): 0, (70, 70, 70): 1, (190, 153, 153): 2, (100, 40, 40): 2, (250, 170, 160): 3, (55, 90, 80): 3,
    (220, 20, 60): 4, (153, 153, 153): 5, (157, 234, 50): 6, (128, 64, 128): 7, (244, 35, 232): 8,
    (107, 142, 35): 9, (0, 0, 142): 10, (102, 102, 156): 11, (220, 220, 0): 12, (70, 130, 180): 13,
    (81, 0, 81): 14, (150, 100, 100): 15, (230, 150, 140): 16, (180, 165, 180): 17, (250, 170, 30): 18,
    (110, 190, 160): 19, (170, 120, 50): 20, (45, 60, 150): 21, (145, 170, 100): 22, (152, 251, 152): 22,
    (255, 0, 0): 23, (0, 0, 70): 24, (0, 60, 100): 25, (0, 80, 100): 26, (0, 0, 230): 27, (119, 11, 32): 28,
}
CITYSCAPES_CLASSES = {
    0: "unlabeled", 1: "ego vehicle", 2: "rectification border", 3: "out of roi", 4: "static", 5: "dynamic",
    6: "ground", 7: "road", 8: "sidewalk", 9: "parking", 10: "rail track", 11: "building", 12: "wall", 13: "fence",
    14: "guard rail", 15: "bridge", 16: "tunnel", 17: "pole", 18: "polegroup", 19: "traffic light",
    20: "traffic sign", 21: "vegetation", 22: "terrain", 23: "sky", 24: "person", 25: "rider", 26: "car",
    27: "truck", 28: "bus", 29: "caravan", 30: "trailer", 31: "train", 32: "motorcycle", 33: "bicycle",
}


@dataclass(frozen=True)
class GroundTruthFormat:
    name: str
    classes: dict[int, str]
    evaluated: frozenset[int]  # class ids that are scored; any other value is ignored
    decode: Callable[[np.ndarray], np.ndarray]  # the label file's pixels -> (H, W) uint8 class ids


def _red_channel(pixels: np.ndarray) -> np.ndarray:
    if pixels.ndim != 3:
        raise ValueError("carla-tags labels carry the tag in the red channel of an RGB(A) image")
    return pixels[:, :, 0].astype(np.uint8)


def _palette(pixels: np.ndarray) -> np.ndarray:
    if pixels.ndim != 3:
        raise ValueError("carla-palette labels are RGB(A) colour images")
    packed = (pixels[:, :, 0].astype(np.uint32) << 16) | (pixels[:, :, 1].astype(np.uint32) << 8) | pixels[:, :, 2]
    values, inverse = np.unique(packed, return_inverse=True)
    table = {(r << 16) | (g << 8) | b: tag for (r, g, b), tag in CARLA_PALETTE.items()}
    ids = np.array([table.get(int(v), UNKNOWN) for v in values], dtype=np.uint8)
    return ids[inverse].reshape(packed.shape)


def _label_ids(pixels: np.ndarray) -> np.ndarray:
    if pixels.ndim != 2:
        raise ValueError("cityscapes-ids labels are single-channel images of labelIds")
    return pixels.astype(np.uint8)


FORMATS = {
    "carla-tags": GroundTruthFormat("carla-tags", {k: CARLA_CLASSES[k] for k in range(13)},
                                    frozenset(range(1, 13)), _red_channel),
    "carla-palette": GroundTruthFormat("carla-palette", CARLA_CLASSES, frozenset(CARLA_CLASSES) - {0}, _palette),
    # Cityscapes-27, the unsupervised segmentation protocol: labelIds 7 (road) to 33 (bicycle).
    "cityscapes-ids": GroundTruthFormat("cityscapes-ids", CITYSCAPES_CLASSES, frozenset(range(7, 34)), _label_ids),
}


def read_labels(path: Path) -> np.ndarray:
    """The label file's pixels as stored: (H, W) or (H, W, channels)."""
    with Image.open(path) as image:
        if image.mode in ("P", "1"):
            image = image.convert("L")
        return np.array(image)


def decode(path: Path, fmt: GroundTruthFormat) -> np.ndarray:
    return fmt.decode(read_labels(path))
