"""Reading frames and writing label and overlay PNGs (with provenance in the PNG text)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def list_images(path: Path) -> list[Path]:
    """The image itself, or the images directly inside a folder, sorted by name."""
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    raise FileNotFoundError(f"no such image or folder: {path}")


def read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.array(image.convert("RGB"))


def _png_info(description: str) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    info.add_text("Description", description)
    return info


def write_labels(path: Path, labels: np.ndarray, description: str) -> None:
    """8- or 16-bit single-channel PNG of the label values."""
    Image.fromarray(labels).save(path, format="PNG", pnginfo=_png_info(description))


def write_overlay(path: Path, rgb: np.ndarray, description: str, smoke_note: str | None) -> None:
    image = Image.fromarray(rgb)
    if smoke_note:
        _stamp(image, smoke_note)
    image.save(path, format="PNG", pnginfo=_png_info(description))


def _stamp(image: Image.Image, text: str) -> None:
    """A banner across the top, so a smoke-run overlay cannot be mistaken for a result."""
    draw = ImageDraw.Draw(image)
    size = max(8, image.height // 24)
    font = ImageFont.load_default(size=size)
    while size > 8 and draw.textlength(text, font=font) > image.width - 8:
        size -= 1
        font = ImageFont.load_default(size=size)
    box = draw.textbbox((4, 2), text, font=font)
    draw.rectangle((0, 0, image.width, box[3] + 4), fill=(0, 0, 0))
    draw.text((4, 2), text, fill=(255, 230, 0), font=font)
