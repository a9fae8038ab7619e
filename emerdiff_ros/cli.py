"""The `emerdiff` command: argument parsing, dispatching to the tools."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .carla import command as carla_rig
from .engine import METHODS, PRESETS, CheckpointError, EmerDiffConfig, config_fields
from .engine.config import param_specs
from .runtime.settings import StreamSettings
from .tools.bag import STORAGES, BagTopics
from .tools.groundtruth import FORMATS as GT_FORMATS
from .tools.sweep import STUDY


def add_config_flags(parser: argparse.ArgumentParser, preset: str = "paper", exclude: tuple[str, ...] = ()) -> None:
    """One flag per EmerDiffConfig field (but those excluded); unset flags keep the preset's value."""
    group = parser.add_argument_group("method and model (unset flags keep the preset's values)")
    group.add_argument("--preset", choices=sorted(PRESETS), default=preset, help=f"parameter preset (default {preset})")
    _add_flags(group, [spec for spec in config_fields() if spec.attr not in exclude], "paper")


def _add_flags(group, specs, default_word: str) -> None:
    for spec in specs:
        limits = f", {spec.low}..{spec.high}" if spec.low is not None else ""
        kwargs = {"dest": spec.attr, "default": None, "help": f"{spec.description} ({default_word}: {spec.default}{limits})"}
        if spec.type is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif spec.type is tuple:
            kwargs.update(type=float, nargs=spec.length, metavar="V")
        else:
            kwargs.update(type=spec.type, metavar=spec.name.upper(), choices=spec.choices)
        group.add_argument(spec.flag, **kwargs)


def config_from_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> EmerDiffConfig:
    overrides = {s.attr: getattr(args, s.attr) for s in config_fields()
                 if not isinstance(getattr(args, s.attr, None), (list, type(None)))}
    try:
        return EmerDiffConfig.from_preset(args.preset, **overrides)
    except ValueError as exc:
        parser.error(str(exc))


# The node's stream settings that also shape a segmented bag.
OFFLINE_SETTINGS = ("sync_slop", "camera_pose", "lidar_pose", "radar_pose", "track_labels", "track_smoothing",
                    "overlay_alpha")


def _offline_specs():
    return [spec for spec in param_specs(StreamSettings) if spec.name in OFFLINE_SETTINGS]


def settings_from_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> StreamSettings:
    values = {s.attr: getattr(args, s.attr) for s in _offline_specs() if getattr(args, s.attr) is not None}
    try:
        return StreamSettings(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
    except ValueError as exc:
        parser.error(str(exc))


def add_method_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", choices=METHODS, default="emerdiff",
                        help="emerdiff (default) or lowres: the paper's baseline, the same masks upsampled bilinearly")


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 512x512, got {text!r}") from None
    if width < 1 or height < 1:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return width, height


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="emerdiff", description="Label-free segmentation with EmerDiff.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log engine details")
    commands = parser.add_subparsers(dest="command", required=True)

    seg = commands.add_parser("segment", help="segment an image or a folder of images")
    seg.add_argument("input", type=Path, help="image file or folder")
    seg.add_argument("--out", type=Path, required=True, help="output folder")
    seg.add_argument("--resume", action="store_true", help="skip frames whose outputs already exist")
    seg.add_argument("--consistent", action="store_true",
                     help="one set of cluster centres fitted on all frames: a label means the same in every frame")
    add_method_flag(seg)
    add_config_flags(seg)

    bench = commands.add_parser("bench", help="measure seconds, UNet evaluations and memory per frame")
    bench.add_argument("--size", type=_size, default=(512, 512), help="frame size WxH (default 512x512)")
    bench.add_argument("--frames", type=int, default=3, help="measured frames (default 3)")
    bench.add_argument("--warmup", type=int, default=1, help="unmeasured frames first (default 1)")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    add_config_flags(bench)

    bag = commands.add_parser("bag", help="segment a rosbag2 or ROS 1 bag into a new rosbag2 with the node's outputs")
    bag.add_argument("input", type=Path, help="rosbag2 folder or ROS 1 .bag file")
    bag.add_argument("output", type=Path, help="the new rosbag2 (never an existing path)")
    defaults = BagTopics()
    for name in ("image", "camera_info", "lidar", "radar"):
        bag.add_argument(f"--{name.replace('_', '-')}-topic", dest=f"{name}_topic", default=getattr(defaults, name),
                         help=f"(default {getattr(defaults, name)})")
    bag.add_argument("--every", type=int, default=1, metavar="N", help="segment every Nth image (default 1)")
    bag.add_argument("--resume", action="store_true", help="finish an interrupted run into the same output")
    bag.add_argument("--storage", choices=sorted(STORAGES), default="mcap", help="output storage (default mcap)")
    add_method_flag(bag)
    _add_flags(bag.add_argument_group("matching, labelled clouds and tracking, as the node"), _offline_specs(),
               "default")
    add_config_flags(bag, preset="carla")

    sweep = commands.add_parser("sweep", help="the CARLA study's ablations of K, lambda and t_m on one image")
    sweep.add_argument("image", type=Path)
    sweep.add_argument("--out", type=Path, required=True, help="folder for the figures and sweep.json")
    for attr, (name, values) in STUDY.items():
        spec = next(s for s in config_fields() if s.attr == attr)
        sweep.add_argument(spec.flag, dest=attr, type=spec.type, nargs="+", metavar=name.upper(),
                           help=f"values of {name} to try (study: {' '.join(f'{v:g}' for v in values)})")
    sweep.add_argument("--gt", type=Path, help="ground-truth labels of the image, for an mIoU table and plot")
    sweep.add_argument("--gt-format", choices=sorted(GT_FORMATS), help="encoding of --gt")
    add_method_flag(sweep)
    add_config_flags(sweep, preset="carla", exclude=tuple(STUDY))

    ev = commands.add_parser("eval", help="score label images against ground truth (Hungarian matching)")
    ev.add_argument("--pred", type=Path, required=True, help="folder of <stem>_labels.png (or <stem>.png)")
    ev.add_argument("--gt", type=Path, required=True, help="folder of ground-truth <stem>.png")
    ev.add_argument("--gt-format", required=True, choices=sorted(GT_FORMATS), help="ground-truth encoding")
    ev.add_argument("--ignore", type=int, action="append", default=[], metavar="V",
                    help="a ground-truth value not to score (repeatable; each format ignores its unlabeled value)")
    ev.add_argument("--out", type=Path, help="folder for confusion.png and scores.json")

    rig = commands.add_parser("carla", help="drive the CARLA rig of config/carla_sensors.json: native ROS 2 or a "
                                            "recorded rosbag2 (needs the carla client and a server)")
    carla_rig.add_arguments(rig)

    demo = commands.add_parser("demo", help="segment the bundled CARLA frames (falls back to a smoke run)")
    demo.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default demo_out)")
    add_config_flags(demo, preset="carla")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return _run(parser, args)
    except CheckpointError as exc:
        print(exc, file=sys.stderr)
        return 2


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from .engine import Segmenter

    if args.command == "eval":
        return _evaluate(parser, args)
    if args.command == "carla":
        return carla_rig.run(args, prog="emerdiff carla")
    config = config_from_args(parser, args)
    if args.command == "segment":
        from .tools.images import list_images
        from .tools.segment import segment_images

        try:
            images = list_images(args.input)
        except FileNotFoundError as exc:
            parser.error(str(exc))
        if not images:
            parser.error(f"no images in {args.input}")
        try:
            summary = segment_images(Segmenter.load(config), images, args.out, resume=args.resume,
                                     consistent=args.consistent, method=args.method)
        except ValueError as exc:
            parser.error(str(exc))
        print("\n".join(summary.lines()))
        return 1 if summary.failed else 0
    if args.command == "bag":
        from .tools.bag import BagError, segment_bag

        topics = BagTopics(args.image_topic, args.camera_info_topic, args.lidar_topic, args.radar_topic)
        settings = settings_from_args(parser, args)
        try:
            summary = segment_bag(Segmenter.load(config), settings, args.input, args.output, topics=topics,
                                  every=args.every, resume=args.resume, storage=args.storage, method=args.method)
        except BagError as exc:
            parser.error(str(exc))
        print("\n".join(summary.lines(args.output)))
        return 0
    if args.command == "sweep":
        return _sweep(parser, args, config)
    if args.command == "bench":
        from .tools.bench import benchmark, format_report

        report = benchmark(Segmenter.load(config), args.size, frames=args.frames, warmup=args.warmup)
        print(json.dumps(report) if args.json else "\n".join(format_report(report)))
        return 0
    if args.command == "demo":
        from .tools.demo import load_or_fall_back
        from .tools.samples import sample_images
        from .tools.segment import segment_images

        summary = segment_images(load_or_fall_back(config), sample_images(), args.out)
        print("\n".join(summary.lines()))
        print(f"outputs in {args.out}/")
        return 0
    raise AssertionError(args.command)


def _sweep(parser: argparse.ArgumentParser, args: argparse.Namespace, config: EmerDiffConfig) -> int:
    from .engine import Segmenter
    from .tools.groundtruth import decode
    from .tools.images import read_rgb
    from .tools.sweep import run_sweep, save, table

    chosen = {attr: getattr(args, attr) for attr in STUDY if getattr(args, attr)}
    sweeps = chosen or {attr: values for attr, (_, values) in STUDY.items()}
    if (args.gt is None) != (args.gt_format is None):
        parser.error("--gt and --gt-format go together")
    try:
        image = read_rgb(args.image)
        gt = decode(args.gt, GT_FORMATS[args.gt_format]) if args.gt else None
        segmenter = Segmenter.load(config)
        points = run_sweep(segmenter, image, sweeps, method=args.method, gt=gt,
                           gt_format=GT_FORMATS.get(args.gt_format))
    except (OSError, ValueError) as exc:
        parser.error(str(exc))
    written = save(points, image, args.out, segmenter.model.smoke_note)
    print("\n".join(table(points)))
    if segmenter.model.smoke_note:
        print(segmenter.model.smoke_note)
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def _evaluate(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from .tools.evaluate import confusion_figure, evaluate, pair_files

    fmt = GT_FORMATS[args.gt_format]
    try:
        pairs = pair_files(args.pred, args.gt)
    except FileNotFoundError as exc:
        parser.error(str(exc))
    result = evaluate(pairs, fmt, set(args.ignore))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        confusion_figure(result, fmt, args.out / "confusion.png")
        report = {"gt_format": fmt.name, "images": len(pairs), "miou": result.whole_set.miou,
                  "pixel_accuracy": result.whole_set.pixel_accuracy,
                  "iou": {fmt.classes.get(c, str(c)): v for c, v in result.whole_set.iou.items()},
                  "per_image": {name: {"miou": s.miou, "pixel_accuracy": s.pixel_accuracy}
                                for name, s in result.per_image.items()}}
        (args.out / "scores.json").write_text(json.dumps(report, indent=2))
    print("\n".join(result.lines(fmt)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
