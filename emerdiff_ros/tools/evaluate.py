"""`emerdiff eval`: label images (a folder, or a segmented bag) scored against ground truth.

The scoring itself is emerdiff_ros.scoring, the code the node's live scoring runs; this module finds
the frame pairs, reads them, and writes the report, scores.json and confusion.png.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .. import scoring
from ..rig import default_rig, sensor_topics
from ..runtime.messages import MessageError, stamp_ns
from ..runtime.messages import label_pixels as message_label_pixels
from ..runtime.outputs import LABELS, output_topic
from ..scoring import ClassMap, RunningScore, ScoringError

LABELS_TOPIC = output_topic(LABELS)
GT_TOPIC = sensor_topics(default_rig(), default_rig().first("semantic"))["image"]  # the rig's semantic camera


@dataclass
class Evaluation:
    drive: RunningScore
    ids_consistent: bool
    ids_source: str  # where the consistency of the ids is known from ("" if not known)
    skipped: list[str] = field(default_factory=list)  # ground-truth frames without a prediction
    unpaired_predictions: int = 0  # predictions without ground truth (bags)
    ignore_mask: str | None = None
    notes: list[str] = field(default_factory=list)  # where the format's details came from
    warnings: list[str] = field(default_factory=list)  # choices of the user that go against the records
    smoke_note: str | None = None  # the predictions' model had random weights

    def frames_without_scored_pixels(self) -> list[str]:
        return sorted(name for name, s in self.drive.frames.items() if not s.pixels)

    @property
    def fmt(self) -> ClassMap:
        return self.drive.fmt

    def headline_line(self) -> str:
        best = self.drive.headline(self.ids_consistent)
        if self.ids_consistent:
            why = f"whole-set matching: cluster ids are consistent across frames ({self.ids_source})"
        elif self.ids_source:
            why = f"per-image mean: cluster ids are numbered per frame ({self.ids_source})"
        else:
            why = "per-image mean: cluster ids are not known to be consistent across frames"
        return f"mIoU: {100 * best.miou:.2f} ({why})"

    def lines(self) -> list[str]:
        fmt, drive = self.fmt, self.drive
        out = [f"ground truth: {fmt.name}" + (f" ({fmt.description})" if fmt.description else "")
               + f"; {drive.scored_frames} frames scored", *self.notes]
        empty = self.frames_without_scored_pixels()
        if empty:
            out.append(f"{len(empty)} frames have no scored pixel (every pixel ignored), not counted: {_few(empty)}")
        unscored = ", ".join(fmt.key_text(k) for k in sorted(fmt.ignore))
        out.append(f"not scored: values {unscored}" if unscored else "not scored: nothing")
        if self.ignore_mask:
            out[-1] += f"; pixels under the ignore mask {self.ignore_mask} ({100 * drive.ignore_mask.mean():.1f}%)"
        if drive.unlabelled_pixels:
            share = drive.unlabelled_pixels / (drive.unlabelled_pixels + drive.pixels)
            out.append(f"left out: {drive.unlabelled_pixels} pixels without a label (the no-label value, e.g. "
                       f"outside a center_crop), {100 * share:.1f}% of the pixels the ground truth scores")
        if self.skipped:
            out.append(f"skipped {len(self.skipped)} ground-truth frames without a prediction: "
                       f"{_few(self.skipped)}")
        if self.unpaired_predictions:
            out.append(f"{self.unpaired_predictions} predictions have no ground truth at the same stamp")
        out += ["", f"{'image':32s} {'mIoU %':>8s} {'pixel acc %':>12s}"]
        for name, s in sorted(drive.frames.items()):
            out.append(f"{name:32s} {_pct(s.miou):>8s} {_pct(s.pixel_accuracy):>12s}")
        protocols = drive.protocols()
        totals = drive.confusion.counts.sum(0)
        cluster_of = {c: p for p, c in drive.total().matching.items()}
        scored = f"class ({np.count_nonzero(totals)} of {len(fmt.classes)} scored)"
        out += ["", f"{scored:24s} {'pixels %':>8s} {'per-image':>10s} {'whole-set':>10s} {'diffseg':>8s} "
                    f"{'cluster':>8s}  (IoU %)"]
        for c in np.flatnonzero(totals):
            name = fmt.classes[c]
            out.append(f"{name:24s} {100 * totals[c] / totals.sum():8.2f} "
                       + " ".join(f"{_pct(protocols[p].iou.get(name, math.nan)):>{w}s}"
                                  for p, w in (("per-image", 10), ("whole-set", 10), ("diffseg", 8)))
                       + f" {cluster_of.get(name, '-')!s:>8s}")
        absent = [fmt.classes[c] for c in np.flatnonzero(totals == 0)]
        if absent:
            out.append(f"not in the ground truth: {', '.join(absent)}")
        out += ["", f"{'protocol':10s} {'mIoU %':>8s} {'pixel acc %':>12s}"]
        for name, p in protocols.items():
            out.append(f"{name:10s} {_pct(p.miou):>8s} {_pct(p.pixel_accuracy):>12s}  {p.description}")
        if self.smoke_note:  # said again next to the number it makes meaningless
            out[:0] = [self.smoke_note]
            out.append(self.smoke_note)
        return out + [self.headline_line()]

    def report(self) -> dict:
        drive, fmt = self.drive, self.fmt
        protocols = drive.protocols()
        best = drive.headline(self.ids_consistent)
        return _finite({
            "smoke_run": self.smoke_note,
            "ground_truth": fmt.as_dict(), "frames": drive.frame_count, "scored_frames": drive.scored_frames,
            "frames_without_scored_pixels": self.frames_without_scored_pixels(), "notes": self.notes,
            "unlabelled_pixels": drive.unlabelled_pixels,
            "skipped_without_prediction": self.skipped, "predictions_without_ground_truth": self.unpaired_predictions,
            "ignore_mask": None if self.ignore_mask is None else
            {"path": self.ignore_mask, "fraction": float(drive.ignore_mask.mean())},
            "label_ids": {"consistent": self.ids_consistent, "source": self.ids_source or None},
            "headline": best.protocol, "miou": best.miou, "pixel_accuracy": best.pixel_accuracy,
            "protocols": {name: {"description": p.description, "miou": p.miou, "pixel_accuracy": p.pixel_accuracy,
                                 "iou": p.iou} for name, p in protocols.items()},
            "class_pixels": {fmt.classes[c]: int(n) for c, n in enumerate(drive.confusion.counts.sum(0)) if n},
            "whole_set_matching": {str(k): v for k, v in drive.total().matching.items()},
            "per_image": {name: {"miou": s.miou, "pixel_accuracy": s.pixel_accuracy, "iou": s.iou}
                          for name, s in sorted(drive.frames.items())},
        })


def _pct(value: float) -> str:
    return "-" if math.isnan(value) else f"{100 * value:.2f}"


def _few(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def _finite(value):
    """JSON has no NaN: null instead."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


# --- reading -----------------------------------------------------------------------------------------


def read_prediction(path: Path) -> np.ndarray:
    """(H, W) cluster ids of a label PNG (8 or 16 bit)."""
    try:
        with Image.open(path) as image:
            # A 1-bit image as 0 and 1: converted to 8 bits its 255 would read as the no-label value.
            pred = np.array(image).astype(np.uint8) if image.mode == "1" else np.array(image)
    except OSError as exc:
        raise ScoringError(f"cannot read {path}: {exc}") from None
    if pred.ndim != 2 or not np.issubdtype(pred.dtype, np.integer):
        raise ScoringError(f"{path} is not a single-channel label image (shape {pred.shape}, {pred.dtype})")
    return pred


def read_ignore_mask(path: Path) -> np.ndarray:
    """True where a PNG is not black: those pixels are not scored (the ego vehicle's hood, say)."""
    try:
        with Image.open(path) as image:
            return np.array(image.convert("L")) > 0
    except OSError as exc:
        raise ScoringError(f"cannot read the ignore mask {path}: {exc}") from None


def resize_nearest(pred: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    rows = (np.arange(shape[0]) * pred.shape[0]) // shape[0]
    cols = (np.arange(shape[1]) * pred.shape[1]) // shape[1]
    return pred[rows[:, None], cols[None, :]]


def _fit(pred: np.ndarray, gt_shape: tuple[int, int], resize: bool, what: str) -> np.ndarray:
    if pred.shape != gt_shape:
        if not resize:
            raise ScoringError(f"{what}: prediction is {pred.shape[1]}x{pred.shape[0]}, ground truth "
                               f"{gt_shape[1]}x{gt_shape[0]} (width x height); pass --resize to resample "
                               f"predictions to the ground truth (nearest)")
        pred = resize_nearest(pred, gt_shape)
    return pred


def _consistency(consistent_ids: bool | None, recorded: bool | None, where: str) -> tuple[bool, str, list[str]]:
    """(consistent, where that is known from, warnings)."""
    if consistent_ids:
        overridden = [f"--consistent-ids overrides {where}, which records per-frame cluster ids: the whole-set "
                      f"matching of ids numbered per frame means little"] if recorded is False else []
        return True, "--consistent-ids", overridden
    if recorded is None:
        return False, "", []
    return recorded, where, []


def recorded_carla_version(flag: str | None, gt_dir: Path | None = None,
                           bag: Path | None = None) -> tuple[str | None, str]:
    """The CARLA version to decode carla-tags/carla-palette with, and a report line on where it came from:
    --carla-version, else what the frames record (None if neither). A flag whose numbering differs from
    the record is an error."""
    if bag is not None:
        recorded, where = scoring.bag_custom_data(bag).get(scoring.BAG_CARLA_VERSION_KEY), \
            f"{bag.name} metadata {scoring.BAG_CARLA_VERSION_KEY}"
    else:
        recorded, where = scoring.folder_carla_version(gt_dir), f"{Path(gt_dir) / scoring.FRAMES_MANIFEST}"
    if recorded is None:
        return flag, ""
    if flag is not None and scoring.carla_table(flag) != scoring.carla_table(recorded):
        raise ScoringError(f"--carla-version {flag} numbers classes otherwise than CARLA {recorded}, which made "
                           f"the frames ({where}); leave the flag out")
    return flag or recorded, f"CARLA version {recorded} (recorded in {where})"


# --- folders -----------------------------------------------------------------------------------------


def pair_files(pred_dir: Path, gt_dir: Path) -> tuple[list[tuple[str, Path, Path]], list[str]]:
    """(stem, prediction, ground truth) pairs, and the ground-truth stems without a prediction.
    A prediction is <stem>_labels.png or <stem>.png."""
    for what, folder in (("prediction", pred_dir), ("ground-truth", gt_dir)):
        if not folder.is_dir():
            problem = "is not a folder" if folder.exists() else "does not exist"
            raise ScoringError(f"the {what} folder {folder} {problem}")
    gt_files = sorted(p for p in gt_dir.iterdir() if p.suffix.lower() == ".png")
    if not gt_files:
        raise ScoringError(f"no ground-truth PNGs in {gt_dir}")
    pairs, missing = [], []
    for gt in gt_files:
        pred = next((p for p in (pred_dir / f"{gt.stem}_labels.png", pred_dir / gt.name) if p.is_file()), None)
        if pred is None:
            missing.append(gt.stem)
        else:
            pairs.append((gt.stem, pred, gt))
    return pairs, missing


def evaluate_folders(pred_dir: Path, gt_dir: Path, fmt: ClassMap, *, ignore_mask: Path | None = None,
                     allow_missing: bool = False, resize: bool = False,
                     consistent_ids: bool | None = None) -> Evaluation:
    pairs, missing = pair_files(pred_dir, gt_dir)
    if missing and not allow_missing:
        raise ScoringError(f"no prediction in {pred_dir} for {len(missing)} of {len(missing) + len(pairs)} "
                           f"ground-truth images ({_few(missing)}); pass --allow-missing to score the others")
    if not pairs:
        raise ScoringError(f"no prediction in {pred_dir} matches a ground-truth image of {gt_dir}")
    consistent, source, warnings = _consistency(consistent_ids, scoring.folder_ids_consistent(pred_dir),
                                                f"{pred_dir / scoring.SEGMENT_MANIFEST}")
    drive = RunningScore(fmt, None if ignore_mask is None else read_ignore_mask(ignore_mask))
    for name, pred_path, gt_path in pairs:
        try:
            gt = fmt.decode(scoring.read_label_image(gt_path, fmt.encoding))
            drive.add(_fit(read_prediction(pred_path), gt.shape, resize, pred_path.name), gt, name)
        except ScoringError as exc:
            raise ScoringError(f"{gt_path}: {exc}") from None
    for stem in missing:  # not scored, but a wrong format there is as wrong as anywhere
        gt_path = gt_dir / f"{stem}.png"
        try:
            fmt.decode(scoring.read_label_image(gt_path, fmt.encoding))
        except ScoringError as exc:
            raise ScoringError(f"{gt_path}: {exc}") from None
    return _checked(Evaluation(drive, consistent, source, missing, ignore_mask=_text(ignore_mask), warnings=warnings,
                               smoke_note=scoring.folder_smoke_note(pred_dir)))


def _text(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _checked(evaluation: Evaluation) -> Evaluation:
    if evaluation.drive.pixels == 0:
        raise ScoringError(f"no pixel of the ground truth belongs to a class {evaluation.fmt.name} scores "
                           f"(every pixel is an ignored value, under the ignore mask or without a label): "
                           f"nothing to score")
    return evaluation


# --- bags --------------------------------------------------------------------------------------------


def label_pixels(msg) -> np.ndarray:
    """A ground-truth or label Image message's pixels (runtime.messages.label_pixels), or a ScoringError."""
    try:
        return message_label_pixels(msg)
    except MessageError as exc:
        raise ScoringError(str(exc)) from None


def _stamp_text(stamp: int) -> str:
    return f"{stamp // 1_000_000_000}.{stamp % 1_000_000_000:09d}"


def evaluate_bag(bag: Path, fmt: ClassMap, *, gt_topic: str = GT_TOPIC, pred_topic: str = LABELS_TOPIC,
                 ignore_mask: Path | None = None, allow_missing: bool = False, resize: bool = False,
                 consistent_ids: bool | None = None) -> Evaluation:
    """Frames of pred_topic scored against the gt_topic message with the same header stamp."""
    from rosbags.highlevel import AnyReader, AnyReaderError

    if not bag.exists():
        raise ScoringError(f"no such bag: {bag}")
    drive = RunningScore(fmt, None if ignore_mask is None else read_ignore_mask(ignore_mask))
    try:
        with AnyReader([bag]) as reader:
            conns = {topic: [c for c in reader.connections if c.topic == topic] for topic in (gt_topic, pred_topic)}
            images = sorted({c.topic for c in reader.connections if c.msgtype == "sensor_msgs/msg/Image"})
            for topic, conn in conns.items():
                if not conn or any(c.msgtype != "sensor_msgs/msg/Image" for c in conn):
                    flag = "--gt-topic" if topic == gt_topic else "--pred-topic"
                    raise ScoringError(f"no sensor_msgs/Image topic {topic} in {bag}; its image topics: "
                                       f"{', '.join(images) or 'none'} (use {flag})")
            stamps = {topic: _stamps(reader, conn, topic) for topic, conn in conns.items()}
            paired = stamps[gt_topic] & stamps[pred_topic]
            missing = sorted(stamps[gt_topic] - paired)
            if not paired:
                raise ScoringError(f"no message of {pred_topic} has a message of {gt_topic} with the same "
                                   f"header stamp in {bag}")
            if missing and not allow_missing:
                raise ScoringError(f"{len(missing)} of {len(stamps[gt_topic])} ground-truth frames on {gt_topic} "
                                   f"have no prediction on {pred_topic} at the same stamp (first at "
                                   f"{_stamp_text(missing[0])}); pass --allow-missing to score the others")
            pending: dict[str, dict[int, np.ndarray]] = {gt_topic: {}, pred_topic: {}}
            for conn, _, raw in reader.messages(connections=conns[gt_topic] + conns[pred_topic]):
                msg = reader.deserialize(raw, conn.msgtype)
                stamp = stamp_ns(msg.header.stamp)
                if stamp not in paired and conn.topic != gt_topic:
                    continue  # ground truth without a prediction is decoded all the same: a wrong format shows
                where = f"{conn.topic} at {_stamp_text(stamp)}"
                try:
                    pixels = label_pixels(msg)
                    if stamp not in paired:
                        fmt.decode(pixels)
                        continue
                    if conn.topic == gt_topic:
                        pixels = fmt.decode(pixels)
                    elif pixels.ndim != 2:
                        raise ScoringError(f"predictions must be mono8 or mono16 label images, got {msg.encoding}")
                    pending[conn.topic][stamp] = pixels
                    if stamp in pending[gt_topic] and stamp in pending[pred_topic]:
                        gt, pred = pending[gt_topic].pop(stamp), pending[pred_topic].pop(stamp)
                        drive.add(_fit(pred, gt.shape, resize, where), gt, _stamp_text(stamp))
                except ScoringError as exc:
                    raise ScoringError(f"{where}: {exc}") from None
    except (AnyReaderError, OSError) as exc:  # not a bag: rosbags says why
        raise ScoringError(f"cannot read bag {bag}: {exc}") from None
    custom = scoring.bag_custom_data(bag)
    consistent, source, warnings = _consistency(consistent_ids, scoring.bag_ids_consistent(custom),
                                                f"{bag.name} metadata {scoring.BAG_LABEL_IDS_KEY}")
    return _checked(Evaluation(drive, consistent, source, [_stamp_text(s) for s in missing],
                               len(stamps[pred_topic] - paired), _text(ignore_mask), warnings=warnings,
                               smoke_note=custom.get(scoring.BAG_SMOKE_KEY)))


def _stamps(reader, connections, topic: str) -> set[int]:
    seen: set[int] = set()
    for conn, _, raw in reader.messages(connections=connections):
        stamp = stamp_ns(reader.deserialize(raw, conn.msgtype).header.stamp)
        if stamp in seen:
            raise ScoringError(f"two messages on {topic} share the header stamp {_stamp_text(stamp)}; frames "
                               f"are paired by stamp")
        seen.add(stamp)
    return seen


# --- figure ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfusionView:
    """What confusion.png shows: row-normalised counts, ground-truth classes down."""

    classes: list[str]  # rows: the ground-truth classes present
    columns: list[str]  # clusters (whole-set) or the classes clusters were matched to (per-image)
    matrix: np.ndarray  # (classes, columns) fraction of each class's pixels
    title: str
    xlabel: str


def confusion_view(evaluation: Evaluation) -> ConfusionView:
    """The matching of the headline: the whole-set one (clusters across, matched ones first), or for the
    per-image headline each frame's own, its clusters named by the class they were matched to there."""
    drive, fmt = evaluation.drive, evaluation.fmt
    present = np.flatnonzero(drive.confusion.counts.sum(0) > 0)
    best = drive.headline(evaluation.ids_consistent)
    if best.protocol == "whole-set":
        counts, clusters = drive.confusion.counts, drive.confusion.clusters
        row_of = {int(c): i for i, c in enumerate(clusters)}
        matching = drive.total().matching
        matched = [row_of[p] for c in present for p, name in matching.items() if name == fmt.classes[c]]
        order = matched + [r for r in range(len(clusters)) if r not in matched]
        matrix, columns = counts[order][:, present].T, [str(clusters[r]) for r in order]
        xlabel = "predicted cluster (matched clusters first, in class order)"
    else:
        rows = [*present, len(fmt.classes)]  # the classes present, then the clusters left unmatched
        matrix = drive.matched[rows][:, present].T
        columns = [fmt.classes[c] for c in present] + ["unmatched"]
        xlabel = "class its cluster was matched to in its frame"
    matrix = matrix.astype(float) / np.maximum(matrix.sum(1, keepdims=True), 1)
    title = f"{best.protocol} matching: mIoU {100 * best.miou:.2f} % ({fmt.name})"
    return ConfusionView([fmt.classes[c] for c in present], columns, matrix, title, xlabel)


def confusion_figure(evaluation: Evaluation, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    view = confusion_view(evaluation)
    rows, cols = view.matrix.shape
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * cols + 3), max(4, 0.35 * rows + 2)))
    image = ax.imshow(view.matrix, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax.set_yticks(range(rows), view.classes)
    ax.set_xticks(range(cols), view.columns, rotation=90)
    ax.set_xlabel(view.xlabel)
    ax.set_ylabel("ground-truth class")
    title = f"{view.title}\n{evaluation.smoke_note}" if evaluation.smoke_note else view.title
    ax.set_title(title, color="red" if evaluation.smoke_note else "black")
    fig.colorbar(image, ax=ax, label="fraction of the class's pixels")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(evaluation: Evaluation, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    confusion_figure(evaluation, out / "confusion.png")
    (out / "scores.json").write_text(json.dumps(evaluation.report(), indent=2) + "\n")
