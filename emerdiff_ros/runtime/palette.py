"""Label colours and overlays, the same in the node, the bag tool and the CLI."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..engine.labels import unlabelled

OVERLAY_ALPHA = 0.5


@lru_cache(maxsize=8)
def palette(size: int) -> np.ndarray:
    """(size, 3) uint8 colours; neighbouring ids get far-apart hues (golden-angle steps)."""
    ids = np.arange(size)
    hue = (ids * 0.618033988749895) % 1.0
    saturation = np.where(ids % 2 == 0, 0.85, 0.6)
    value = np.where(ids % 3 == 2, 0.7, 0.95)
    i = np.floor(hue * 6).astype(int) % 6
    f = hue * 6 - np.floor(hue * 6)
    p, q, t = value * (1 - saturation), value * (1 - f * saturation), value * (1 - (1 - f) * saturation)
    rgb = np.choose(i, [(value, t, p), (q, value, p), (p, value, t), (p, q, value), (t, p, value), (value, p, q)])
    colours = (np.stack(rgb, -1) * 255).round().astype(np.uint8)
    colours.setflags(write=False)
    return colours


def colourise(labels: np.ndarray) -> np.ndarray:
    """H x W x 3 uint8 colour image of a label image; black where there is no label."""
    colours = palette(int(np.iinfo(labels.dtype).max) + 1 if labels.dtype.itemsize == 1 else 65536)[labels]
    colours[unlabelled(labels)] = 0
    return colours


def overlay(image: np.ndarray, labels: np.ndarray, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """RGB image blended with the label colours; pixels without a label keep the image's colour."""
    if image.shape[:2] != labels.shape:
        raise ValueError(f"image {image.shape[:2]} and labels {labels.shape} differ in size")
    blend = (1.0 - alpha) * image[:, :, :3].astype(np.float32) + alpha * colourise(labels).astype(np.float32)
    out = blend.round().astype(np.uint8)
    missing = unlabelled(labels)
    out[missing] = image[:, :, :3][missing]
    return out
