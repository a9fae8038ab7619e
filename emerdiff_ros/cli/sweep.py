"""`emerdiff sweep`: one image under several values of K, lambda, t_m and the method's open choices."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..engine.config import config_fields
from ..scoring import ScoringError
from ..tools.sweep import BASELINE_SWEEPS, SWEEPS, shown
from .errors import UsageError, user_path
from .flags import add_config_flags, add_ground_truth_flags, add_method_flag, config_from_args, ground_truth_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="folder for the figures and sweep.json")
    for attr, (name, values) in SWEEPS.items():
        spec = next(s for s in config_fields() if s.attr == attr)
        kind = {"type": _on_off, "metavar": "on|off"} if spec.type is bool else {
            "type": spec.type, "metavar": name.upper(), "choices": spec.choices}
        parser.add_argument(spec.flag, dest=attr, nargs="+", **kind,
                            help=f"values to try (when no parameter is given: {' '.join(map(shown, values))})")
    parser.add_argument("--grid", action="store_true",
                        help="run every combination of the given values (default: one parameter at a time, "
                             "the others at the preset's values)")
    parser.add_argument("--gt", type=Path, help="ground-truth labels of the image, for an mIoU table and plot")
    add_ground_truth_flags(parser, required=False)
    add_method_flag(parser)
    add_config_flags(parser, preset="carla", exclude=tuple(SWEEPS))


def _on_off(text: str) -> bool:
    if text.lower() not in ("on", "off"):
        raise argparse.ArgumentTypeError(f"must be on or off, got {text!r}")
    return text.lower() == "on"


def run(args: argparse.Namespace) -> int:
    from ..engine import load_segmenter
    from ..scoring import read_label_image
    from ..tools.images import read_rgb
    from ..tools.sweep import run_sweep, save, table

    config = config_from_args(args)
    chosen = {attr: getattr(args, attr) for attr in SWEEPS if getattr(args, attr)}
    swept = BASELINE_SWEEPS.get(args.method, SWEEPS)  # by default, what the method reads
    sweeps = chosen or {attr: values for attr, (_, values) in SWEEPS.items() if attr in swept}
    if (args.gt is None) != (args.gt_format is None and args.class_map is None):
        raise UsageError("--gt and its encoding (--gt-format or --class-map) go together")
    if args.grid and not chosen:
        raise UsageError("--grid combines the values you give, e.g. --grid --num-masks 10 15 "
                         "--attention-injection on off")
    fmt = ground_truth_from_args(args) if args.gt else None
    with user_path(args.image):
        image = read_rgb(args.image)
    gt = None
    if args.gt:
        try:
            gt = fmt.decode(read_label_image(args.gt, fmt.encoding))
        except ScoringError as exc:
            raise ScoringError(f"{args.gt}: {exc}") from None
    segmenter = load_segmenter(config, args.method)
    points = run_sweep(segmenter, image, sweeps, grid=args.grid, method=args.method, gt=gt, gt_format=fmt)
    with user_path(args.out):
        written = save(points, image, args.out, segmenter.model.smoke_note)
    print("\n".join(table(points)))
    if segmenter.model.smoke_note:
        print(segmenter.model.smoke_note)
    print("wrote " + ", ".join(str(p) for p in written))
    return 0
