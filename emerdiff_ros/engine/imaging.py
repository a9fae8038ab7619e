"""Image checks, the processing size, and the small image operations of the method."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .labels import no_label

LATENT_MULTIPLE = 64  # SD's VAE divides by 8 and the UNet halves three more times


def as_rgb(image: np.ndarray) -> np.ndarray:
    """An H x W x 3 uint8 RGB array from an RGB, RGBA or grey uint8 array, or a clear error."""
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"image must be H x W, H x W x 3 or H x W x 4, got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image is empty: shape {image.shape}")
    return np.ascontiguousarray(image[:, :, :3])


def crop_box(width: int, height: int, processing: str) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the part of the input the model sees.

    center_crop: the largest centred square (columns 384:640 of a 1024x256 frame, the CARLA study's
    input); the other modes see the whole image.
    """
    if processing != "center_crop":
        return 0, 0, width, height
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


def processing_size(width: int, height: int, resolution: int, processing: str) -> tuple[int, int]:
    """(width, height) the model sees, sides multiples of 64.

    keep_aspect: about resolution^2 pixels in the input's aspect ratio. square: resolution x resolution
    whatever the input's shape (the image is stretched). center_crop: resolution x resolution from the
    crop_box square.
    """
    if processing in ("square", "center_crop"):
        width = height = resolution
    elif processing != "keep_aspect":
        raise ValueError(f"processing must be keep_aspect, square or center_crop, got {processing!r}")
    scale = resolution / math.sqrt(width * height)

    def side(x: int) -> int:
        return max(LATENT_MULTIPLE, round(x * scale / LATENT_MULTIPLE) * LATENT_MULTIPLE)

    return side(width), side(height)


def to_model_input(image: np.ndarray, size: tuple[int, int], device, dtype) -> torch.Tensor:
    """(1, 3, H, W) in [-1, 1], resized to size = (width, height)."""
    if (image.shape[1], image.shape[0]) != size:
        image = np.asarray(Image.fromarray(image).resize(size, Image.BICUBIC))
    tensor = torch.tensor(image, device=device, dtype=torch.float32).permute(2, 0, 1)[None]
    return (tensor / 127.5 - 1.0).to(dtype)


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (N, C, H, W), replicating the borders."""
    if sigma <= 0:
        return images
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, device=images.device, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(images.dtype)
    channels = images.shape[1]
    out = images
    for shape, pad in (((1, -1), (radius, radius, 0, 0)), ((-1, 1), (0, 0, radius, radius))):
        weight = kernel.view(1, 1, *shape).expand(channels, 1, -1, -1)
        out = F.conv2d(F.pad(out, pad, mode="replicate"), weight, groups=channels)
    return out


def difference_map(plus: torch.Tensor, minus: torch.Tensor, sigma: float, target: str) -> torch.Tensor:
    """(N, H, W) d = ||I(+lambda) - I(-lambda)|| per pixel of (N, 3, H, W) image pairs, Gaussian-filtered.

    target difference_map filters d itself (the paper's); images filters the signed RGB difference
    before the norm, which is what blurring both images would give.
    """
    difference = plus - minus
    if target == "images":
        return gaussian_blur(difference, sigma).norm(dim=1)
    if target != "difference_map":
        raise ValueError(f"blur target must be difference_map or images, got {target!r}")
    return gaussian_blur(difference.norm(dim=1, keepdim=True), sigma)[:, 0]


def argmax_upsampled(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """argmax over k of the maps bilinearly resized to size = (width, height), in bounded memory."""
    width, height = size
    group = max(1, 2**26 // (width * height))
    best_value = best_index = None
    for first in range(0, len(maps), group):
        resized = F.interpolate(maps[None, first : first + group], size=(height, width), mode="bilinear",
                                align_corners=False)[0]
        value, index = resized.max(0)
        index += first
        if best_value is None:
            best_value, best_index = value, index
        else:
            better = value > best_value
            best_value = torch.where(better, value, best_value)
            best_index = torch.where(better, index, best_index)
    return best_index


def place_in_frame(labels: np.ndarray, image_size: tuple[int, int], processing: str) -> np.ndarray:
    """The crop's labels in place in an input-sized label image, no label around them."""
    left, top, right, bottom = crop_box(*image_size, processing)
    if (right - left, bottom - top) == tuple(image_size):
        return labels
    width, height = image_size
    full = np.full((height, width), no_label(labels.dtype), dtype=labels.dtype)
    full[top:bottom, left:right] = labels
    return full
