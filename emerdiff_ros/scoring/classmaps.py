"""Ground-truth encodings as class maps: pixel value or colour -> class name, plus values not scored.

A class map file (YAML or JSON) holds:

    name: camvid-11                  # optional, the file's stem otherwise
    description: CamVid 11 classes   # optional
    encoding: id                     # id: single-channel values; red: CARLA raw tags (R = tag, G = B = 0);
                                     # colour: RGB colours
    classes:                         # value (id, red) or colour "R,G,B" / "#rrggbb" (colour) -> class name;
      0: sky                         # values that share a name are one class
      1: building
    ignore: [11, 255]                # values or colours that occur but are not scored
    max_ignored_fraction: 0.5        # optional: refuse a frame with more ignored pixels than this
    small_classes: [pole]            # optional: classes that never cover more than a fifth of a frame

Any value that is neither a class nor ignored is an error, with its pixel count, so another encoding
is never scored under the wrong names; so is a frame mostly of ignored values, or a small class (a pole,
a traffic light) covering more than a fifth of it, which is another numbering whose values fit this
one's range. Each error names the built-in formats the frame fits. The built-in formats are such files,
in classmaps/.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterable

import numpy as np
import yaml
from PIL import Image

IGNORE = 255  # decoded value of a pixel that is not scored; class indices are 0..254
ENCODINGS = ("id", "red", "colour")
BUILTIN_DIR = Path(__file__).parent / "classmaps"
CARLA_FAMILIES = ("carla-tags", "carla-palette")
CARLA_TABLES = ("0.9.5", "0.9.13", "0.9.14")  # tag numberings: 0.8-0.9.5, 0.9.6-0.9.13, 0.9.14 and later
DEFAULT_CARLA_VERSION = "0.9.14"  # the node's default: the numbering of CARLA 0.9.15/0.9.16, which the rig runs
SMALL_CLASS_SHARE = 0.2  # of a driving frame, more than any pole, traffic light or sign ever covers
_FIELDS = {"name", "description", "encoding", "classes", "ignore", "max_ignored_fraction", "small_classes"}


class ScoringError(ValueError):
    """Ground truth, predictions or a class map that cannot be scored; the text says why."""


def _colour_key(r: int, g: int, b: int) -> int:
    return (r << 16) | (g << 8) | b


@dataclass(frozen=True)
class ClassMap:
    """One ground-truth encoding. decode() turns its pixels into class indices (IGNORE where not scored)."""

    name: str
    encoding: str
    named: dict[int, str]  # pixel key (value, or 0xRRGGBB colour) -> class name
    ignore: frozenset[int]  # keys not scored
    description: str = ""
    max_ignored_fraction: float | None = None
    void: frozenset[int] = frozenset()  # the map's own ignored keys, which max_ignored_fraction bounds
    small: frozenset[str] = frozenset()  # classes that never cover more than SMALL_CLASS_SHARE of a frame
    classes: tuple[str, ...] = field(init=False)  # scored classes; decode() gives indices into this
    _lookup: dict[int, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        classes = tuple(dict.fromkeys(self.named.values()))
        if not classes:
            raise ScoringError(f"class map {self.name} scores no class")
        if len(classes) >= IGNORE:
            raise ScoringError(f"class map {self.name} has {len(classes)} classes; at most {IGNORE - 1} are supported")
        if not self.small <= set(classes):
            raise ScoringError(f"small_classes {', '.join(sorted(self.small - set(classes)))} are not classes of "
                               f"{self.name}")
        index = {name: i for i, name in enumerate(classes)}
        object.__setattr__(self, "classes", classes)
        object.__setattr__(self, "_lookup", {**{k: IGNORE for k in self.ignore},
                                             **{k: index[n] for k, n in self.named.items()}})

    # --- decoding --------------------------------------------------------------------------------

    def decode(self, pixels: np.ndarray) -> np.ndarray:
        """(H, W) uint8 class indices of a label image's pixels, IGNORE where not scored.

        pixels: (H, W) integer values, or (H, W, 3|4) uint8 in RGB(A) order, as read from the file or
        message. Raises ScoringError when the pixels do not fit this encoding.
        """
        keys = self._keys(np.asarray(pixels)).ravel()
        values = np.unique(keys)  # sorting without return_inverse, then a search: several times faster
        inverse = np.searchsorted(values, keys)
        counts = np.bincount(inverse, minlength=len(values))
        misfit = self.misfit(values, counts)
        if misfit:
            raise ScoringError(misfit + self._fitting_hint(values, counts))
        table = np.array([self._lookup[int(v)] for v in values], dtype=np.uint8)
        return table[inverse].reshape(np.shape(pixels)[:2])

    def misfit(self, values: np.ndarray, counts: np.ndarray) -> str:
        """Why a frame with these pixel keys (and their counts) is not this encoding; "" if it may be."""
        known = np.array([int(v) in self._lookup for v in values], dtype=bool)
        if not known.all():
            return self._unknown_message(values[~known], counts[~known], int(counts.sum()))
        share = dict(zip((int(v) for v in values), counts / counts.sum()))
        void = sum(share.get(k, 0.0) for k in self.void)
        if self.max_ignored_fraction is not None and void > self.max_ignored_fraction:
            return (f"{100 * void:.0f}% of the pixels are values {self.name} does not score "
                    f"({', '.join(self.key_text(k) for k in sorted(self.void))}); more than "
                    f"{100 * self.max_ignored_fraction:.0f}% means another encoding whose values happen to "
                    f"fall in this one's range")
        for name in sorted(self.small):
            cover = sum(share.get(k, 0.0) for k, n in self.named.items() if n == name)
            if cover > SMALL_CLASS_SHARE:
                return (f"{name} would cover {100 * cover:.0f}% of the frame under {self.name}, more than a "
                        f"{name} ever covers of a driving frame ({100 * SMALL_CLASS_SHARE:.0f}%): another "
                        f"numbering whose values fall in this one's range")
        return ""

    def _fitting_hint(self, values: np.ndarray, counts: np.ndarray) -> str:
        fits = [m for m in builtin_names() if m != self.name and builtin(m).encoding == self.encoding
                and not builtin(m).misfit(values, counts)]
        if fits:
            return f"; the frame fits {' and '.join(fits)}"
        if self.encoding == "id":
            return ("; for a dataset's own ids, write a class map (encoding: id, its values and class names) and "
                    "pass it with --class-map")
        return ""

    def _keys(self, pixels: np.ndarray) -> np.ndarray:
        if not np.issubdtype(pixels.dtype, np.integer) and pixels.dtype != bool:
            raise ScoringError(f"label images hold integers, this one holds {pixels.dtype}")
        if self.encoding == "id":
            if pixels.ndim == 3 and pixels.shape[2] >= 3 and (pixels[:, :, :3] == pixels[:, :, :1]).all():
                pixels = pixels[:, :, 0]  # a grey image stored as RGB
            if pixels.ndim != 2:
                raise ScoringError(f"{self.name} labels are single-channel images of ids; this one has shape "
                                   f"{pixels.shape} (colour labels need a colour class map)")
            return pixels if pixels.dtype in (np.uint8, np.uint16) else pixels.astype(np.int64)
        if pixels.ndim != 3 or pixels.shape[2] not in (3, 4) or pixels.dtype != np.uint8:
            raise ScoringError(f"{self.name} labels are 8-bit RGB(A) images; this one has shape {pixels.shape}, "
                               f"{pixels.dtype}")
        if self.encoding == "red":
            coloured = (pixels[:, :, 1] != 0) | (pixels[:, :, 2] != 0)
            if coloured.any():
                raise ScoringError(f"{self.name} labels carry the tag in the red channel with green and blue 0, "
                                   f"but {100 * coloured.mean():.1f}% of the pixels have green or blue: a photo "
                                   f"or a palette image, not a raw semantic image")
            return pixels[:, :, 0]
        rgb = pixels[:, :, :3].astype(np.uint32)
        return (rgb[:, :, 0] << 16) | (rgb[:, :, 1] << 8) | rgb[:, :, 2]

    def _unknown_message(self, values: np.ndarray, counts: np.ndarray, total: int) -> str:
        order = np.argsort(-counts)
        listed = ", ".join(f"{self.key_text(int(values[i]))} ({100 * counts[i] / total:.2g}% of the pixels)"
                           for i in order[:6])
        more = f" and {len(values) - 6} more" if len(values) > 6 else ""
        what = "colours" if self.encoding == "colour" else "values"
        wide = " (a 16-bit image; no id of this map is above 255)" if values.max() > 255 and \
            self.encoding != "colour" and max(self.named) <= 255 else ""
        return f"{what} {self.name} does not know: {listed}{more}{wide}"

    def key_text(self, key: int) -> str:
        return f"({key >> 16}, {(key >> 8) & 255}, {key & 255})" if self.encoding == "colour" else str(key)

    # --- variants --------------------------------------------------------------------------------

    def ignoring(self, items: Iterable[str | int]) -> "ClassMap":
        """This map with more classes (by name) or values/colours (as in a class map file) not scored."""
        named, ignore = dict(self.named), set(self.ignore)
        for item in items:
            text = str(item).strip()
            if text in self.classes:
                keys = {k for k, n in named.items() if n == text}
            else:  # a value or colour, known to the map or not (a dataset's own marks, say)
                try:
                    keys = {parse_key(self.encoding, item)}
                except ScoringError as exc:
                    raise ScoringError(f"cannot ignore {text!r}: not a class of {self.name} "
                                       f"({', '.join(self.classes)}), and {exc}") from None
            for key in keys:
                named.pop(key, None)
                ignore.add(key)
        return ClassMap(self.name, self.encoding, named, frozenset(ignore), self.description,
                        self.max_ignored_fraction, self.void, self.small & set(named.values()))

    def as_dict(self) -> dict:
        return {"name": self.name, "description": self.description, "encoding": self.encoding,
                "classes": list(self.classes), "ignored": [self.key_text(k) for k in sorted(self.ignore)]}


# --- files -----------------------------------------------------------------------------------------


def parse_key(encoding: str, raw) -> int:
    """A value (id, red) or a colour as "R,G,B", "R G B", "#rrggbb" or [R, G, B] (colour) -> pixel key."""
    if encoding == "colour":
        if isinstance(raw, str) and re.fullmatch(r"#[0-9a-fA-F]{6}", raw.strip()):
            return int(raw.strip()[1:], 16)
        parts = raw if isinstance(raw, (list, tuple)) else re.split(r"[,\s]+", str(raw).strip(" ()[]"))
        try:
            rgb = [int(p) for p in parts]
        except (TypeError, ValueError):
            rgb = []
        if len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb):
            raise ScoringError(f"{raw!r} is not a colour (write R,G,B with 0-255 each, or #rrggbb)")
        return _colour_key(*rgb)
    limit = 255 if encoding == "red" else 65535
    try:
        value = int(str(raw).strip()) if not isinstance(raw, bool) else None
    except ValueError:
        value = None
    if value is None or not 0 <= value <= limit:
        raise ScoringError(f"{raw!r} is not a {encoding} value (an integer 0-{limit})")
    return value


def load_class_map(path: Path) -> ClassMap:
    """Read and check a class map file (YAML, or JSON)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ScoringError(f"cannot read class map {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ScoringError(f"class map {path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: "
                           f"{' '.join(str(exc).split())}") from None
    try:
        return class_map_from_dict(data, default_name=path.stem)
    except ScoringError as exc:
        raise ScoringError(f"class map {path}: {exc}") from None


def class_map_from_dict(data, default_name: str = "class map") -> ClassMap:
    if not isinstance(data, dict):
        raise ScoringError("expected a mapping with encoding, classes and ignore")
    unknown = set(data) - _FIELDS
    if unknown:
        raise ScoringError(f"unknown field(s) {', '.join(sorted(map(str, unknown)))}; "
                           f"the fields are {', '.join(sorted(_FIELDS))}")
    encoding = {"color": "colour"}.get(data.get("encoding"), data.get("encoding"))
    if encoding not in ENCODINGS:
        raise ScoringError(f"encoding must be one of {', '.join(ENCODINGS)}, got {data.get('encoding')!r}")
    classes = data.get("classes")
    if not isinstance(classes, dict) or not classes:
        raise ScoringError("classes must map values (or colours) to class names")
    named = {}
    for raw, name in classes.items():
        if not isinstance(name, str) or not name.strip():
            raise ScoringError(f"the class name of {raw!r} must be a non-empty text, got {name!r}")
        key = parse_key(encoding, raw)
        if key in named:
            raise ScoringError(f"{raw!r} is listed twice")
        named[key] = name.strip()
    raw_ignore = data.get("ignore") or []
    if not isinstance(raw_ignore, list):
        raise ScoringError("ignore must be a list of values (or colours)")
    ignore = frozenset(parse_key(encoding, raw) for raw in raw_ignore)
    both = ignore & set(named)
    if both:
        raise ScoringError(f"{', '.join(str(k) for k in sorted(both))} both named and ignored")
    limit = data.get("max_ignored_fraction")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, float)) or not 0 < limit <= 1):
        raise ScoringError(f"max_ignored_fraction must be a number in (0, 1], got {limit!r}")
    small = data.get("small_classes") or []
    if not isinstance(small, list) or not all(isinstance(name, str) for name in small):
        raise ScoringError("small_classes must be a list of class names")
    return ClassMap(str(data.get("name") or default_name), encoding, named, ignore, str(data.get("description") or ""),
                    None if limit is None else float(limit), ignore, frozenset(small))


# --- names -----------------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def builtin_names() -> tuple[str, ...]:
    return tuple(sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml")))


@lru_cache(maxsize=None)
def builtin(name: str) -> ClassMap:
    return load_class_map(BUILTIN_DIR / f"{name}.yaml")


def format_names() -> tuple[str, ...]:
    """Every name ground_truth_format() accepts (besides class map files)."""
    return tuple(sorted(CARLA_FAMILIES + builtin_names()))


def carla_table(version: str) -> str:
    """The tag numbering of a CARLA release: 0.9.5 (0.8-0.9.5), 0.9.13 (0.9.6-0.9.13) or 0.9.14 (0.9.14+)."""
    match = re.fullmatch(r"0\.(8|9)(?:\.(\d+))?", str(version).strip())
    if not match:
        raise ScoringError(f"CARLA version must look like 0.9.15 (0.8.x or 0.9.x), got {version!r}")
    minor, patch = int(match.group(1)), int(match.group(2) or 0)
    if minor == 8 or patch <= 5:
        return "0.9.5"
    return "0.9.13" if patch <= 13 else "0.9.14"


def ground_truth_format(spec: str | Path, carla_version: str | None = None) -> ClassMap:
    """A built-in format by name, or a class map file; carla-tags and carla-palette follow carla_version,
    which they need: the releases' numberings share values, so a guessed release misnames classes."""
    text = str(spec)
    if text in CARLA_FAMILIES:
        if carla_version is None:
            raise ScoringError(f"{text} needs the CARLA release that made the frames (0.8-0.9.5, 0.9.6-0.9.13 and "
                               f"0.9.14+ number their classes differently) and the frames record none: pass "
                               f"--carla-version, or name the numbering ({text}-0.9.5, -0.9.13 or -0.9.14)")
        return builtin(f"{text}-{carla_table(carla_version)}")
    if carla_version is not None:
        raise ScoringError(f"a CARLA version applies to {' and '.join(CARLA_FAMILIES)}, not to {text}")
    if text in builtin_names():
        return builtin(text)
    path = Path(spec)
    if path.suffix.lower() in (".yaml", ".yml", ".json") or path.exists():
        return load_class_map(path)
    raise ScoringError(f"unknown ground-truth format {text!r}; built in: {', '.join(format_names())}; "
                       f"or a class map file (.yaml or .json)")


# --- label files -----------------------------------------------------------------------------------


def read_label_image(path: Path, encoding: str = "id") -> np.ndarray:
    """A label file's pixels as stored: (H, W) values (8 or 16 bit), or (H, W, 3|4) RGB(A) for colour
    and red encodings. A palette ("P") image gives its indices for ids and its colours otherwise."""
    try:
        with Image.open(path) as image:
            if image.mode == "P":
                image = image.convert("RGBA" if "transparency" in image.info else "RGB") if encoding != "id" \
                    else image
            elif image.mode == "1":
                image = image.convert("L")
            return np.array(image)
    except OSError as exc:
        raise ScoringError(f"cannot read {path}: {exc}") from None
