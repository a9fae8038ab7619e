"""Label values: the dtype a label image takes and the one value that means "no label". numpy only, so
scoring, the streaming side and the CLI read it without loading torch."""

from __future__ import annotations

import numpy as np


def label_dtype(num_masks: int) -> np.dtype:
    """uint8 while every cluster id (0 to K - 1) stays below the reserved no-label value 255, else uint16."""
    return np.dtype(np.uint8) if num_masks <= 255 else np.dtype(np.uint16)


def no_label(dtype: np.dtype) -> int:
    """The one 'no label' value: the maximum of the label dtype, 255 in uint8 and 65535 in uint16 labels.

    Pixels outside a center_crop carry it, and so does a LiDAR or radar point (uint16 labels) that lands
    outside the image or on such a pixel. Cluster ids never reach it (label_dtype; K is at most 4096).
    """
    return int(np.iinfo(dtype).max)


def unlabelled(labels: np.ndarray) -> np.ndarray:
    """Where a label image holds the no-label value; nowhere for signed or boolean labels, which have none."""
    labels = np.asarray(labels)
    if labels.dtype.kind != "u":
        return np.zeros(labels.shape, dtype=bool)
    return labels == no_label(labels.dtype)
