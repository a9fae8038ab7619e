"""The `emerdiff` command: argument parsing, dispatching to the tools."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from contextlib import contextmanager
from pathlib import Path

from rosbags.highlevel import AnyReaderError

from .carla import command as carla_rig
from .distributed.cluster import ClusterError
from .engine import METHODS, PRESETS, CheckpointError, EmerDiffConfig, config_fields
from .engine.config import param_specs
from .engine.jobs import runner_for
from .runtime.settings import OUTPUT_SETTINGS, StreamSettings
from .scoring import CARLA_FAMILIES, ClassMap, ScoringError, format_names, ground_truth_format
from .tools.bag import STORAGES, BagError, BagTopics
from .tools.evaluate import GT_TOPIC, LABELS_TOPIC
from .tools.sweep import SWEEPS, shown


class CommandError(Exception):
    """A user error found while running a command; printed as one line, exit status 2."""


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


def _offline_specs():
    return [spec for spec in param_specs(StreamSettings) if spec.name in OUTPUT_SETTINGS]


def settings_from_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> StreamSettings:
    values = {s.attr: getattr(args, s.attr) for s in _offline_specs() if getattr(args, s.attr) is not None}
    try:
        return StreamSettings(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
    except ValueError as exc:
        parser.error(str(exc))


def add_method_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", choices=METHODS, default="emerdiff",
                        help="emerdiff (default) or lowres: the paper's baseline, the same masks upsampled bilinearly")


def _on_off(text: str) -> bool:
    if text.lower() not in ("on", "off"):
        raise argparse.ArgumentTypeError(f"must be on or off, got {text!r}")
    return text.lower() == "on"


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 512x512, got {text!r}") from None
    if width < 1 or height < 1:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return width, height


def add_ray_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("on a Ray cluster (pip install 'emerdiff_ros[ray]'); the outputs are the same "
                                      "as without")
    group.add_argument("--ray", metavar="ADDRESS",
                       help="segment on Ray workers: local (a cluster on this machine for this command), auto (the "
                            "cluster `ray start` made on this machine), HOST:PORT or ray://HOST:PORT")
    group.add_argument("--ray-workers", type=int, metavar="N",
                       help="workers, each loading the model once (default: one per GPU of the cluster; without "
                            "GPUs one per --ray-cpus-per-worker CPUs)")
    group.add_argument("--ray-gpus-per-worker", type=float, metavar="G",
                       help="GPUs each worker holds (default 1 on a cluster with GPUs, else 0; 0.5 puts two on a GPU)")
    group.add_argument("--ray-cpus-per-worker", type=float, metavar="C",
                       help="CPUs each worker reserves (default 1 with a GPU; without, the torch threads each runs, "
                            "which are this process's: set OMP_NUM_THREADS to change them)")


def check_ray_flags(parser: argparse.ArgumentParser, args: argparse.Namespace, config: EmerDiffConfig) -> None:
    given = [flag for flag, value in (("--ray-workers", args.ray_workers), ("--ray-gpus-per-worker",
             args.ray_gpus_per_worker), ("--ray-cpus-per-worker", args.ray_cpus_per_worker)) if value is not None]
    if args.ray is None:
        if given:
            parser.error(f"{', '.join(given)} need --ray ADDRESS")
        return
    if args.ray_workers is not None and args.ray_workers < 1:
        parser.error(f"--ray-workers must be at least 1, got {args.ray_workers}")
    if args.ray_gpus_per_worker is not None and args.ray_gpus_per_worker < 0:
        parser.error(f"--ray-gpus-per-worker must be 0 or more, got {args.ray_gpus_per_worker:g}")
    if args.ray_cpus_per_worker is not None and not args.ray_cpus_per_worker > 0:
        parser.error(f"--ray-cpus-per-worker must be more than 0, got {args.ray_cpus_per_worker:g}")
    if config.device.startswith("cuda:"):
        parser.error(f"--device {config.device} picks a GPU, but with --ray each worker gets its own from Ray: "
                     f"use --device auto or cuda")


def add_ground_truth_flags(parser: argparse.ArgumentParser, required: bool) -> None:
    group = parser.add_argument_group("ground truth encoding")
    which = group.add_mutually_exclusive_group(required=required)
    which.add_argument("--gt-format", metavar="FORMAT",  # checked by ground_truth_from_args: one line, no usage
                       help=f"a built-in encoding: {', '.join(format_names())}")
    which.add_argument("--class-map", type=Path, metavar="FILE",
                       help="a class map (YAML or JSON: value or colour -> class name, plus ignored values)")
    group.add_argument("--carla-version", metavar="V",
                       help="CARLA release of carla-tags/carla-palette ground truth: 0.8-0.9.5, 0.9.6-0.9.13 and "
                            "0.9.14+ number their tags differently (default: the release the frames record, as "
                            "carla_rig and emerdiff bag write it; without a record, this flag is needed)")
    group.add_argument("--ignore", action="append", default=[], metavar="CLASS|VALUE",
                       help="a class, value or colour (R,G,B) not to score (repeatable; each format already "
                            "ignores its unlabeled/void values)")


def ground_truth_from_args(args: argparse.Namespace, carla_version: str | None = None) -> ClassMap:
    """The ground truth's format; carla-tags/carla-palette take carla_version (the frames' record or the
    flag), other formats refuse --carla-version."""
    if args.gt_format is not None and args.gt_format not in format_names():
        raise CommandError(f"unknown --gt-format {args.gt_format!r}; built in: {', '.join(format_names())} "
                           f"(a class map file goes with --class-map)")
    family = args.class_map is None and args.gt_format in CARLA_FAMILIES
    fmt = ground_truth_format(args.class_map or args.gt_format, (carla_version if family else None)
                              or args.carla_version)
    return fmt.ignoring(args.ignore) if args.ignore else fmt


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
    add_ray_flags(seg)
    add_config_flags(seg)

    bench = commands.add_parser("bench", help="measure seconds, UNet evaluations and memory per frame")
    bench.add_argument("--size", type=_size, default=(512, 512), help="frame size WxH (default 512x512)")
    bench.add_argument("--frames", type=int, default=3, help="measured frames (default 3)")
    bench.add_argument("--warmup", type=int, default=1, help="unmeasured frames first (default 1)")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    add_config_flags(bench)

    bag = commands.add_parser("bag", help="segment rosbag2 or ROS 1 bags into new rosbag2s with the node's outputs",
                              description="Segment a bag into a new rosbag2 with the node's outputs: emerdiff bag IN "
                                          "OUT. Several bags in one run: emerdiff bag IN IN... OUT, OUT then being a "
                                          "folder that receives one new bag per input, named after it.")
    bag.add_argument("input", type=Path, nargs="+", metavar="IN", help="rosbag2 folder or ROS 1 .bag file")
    bag.add_argument("output", type=Path, metavar="OUT",
                     help="with one IN, the new rosbag2; with several, a folder: each IN goes to OUT/<its folder "
                          "name, or its .bag file's name without .bag> (never an existing bag)")
    defaults = BagTopics()
    for name in ("image", "camera_info", "lidar", "radar"):
        bag.add_argument(f"--{name.replace('_', '-')}-topic", dest=f"{name}_topic", default=getattr(defaults, name),
                         help=f"(default {getattr(defaults, name)})")
    bag.add_argument("--every", type=int, default=1, metavar="N", help="segment every Nth image (default 1)")
    bag.add_argument("--resume", action="store_true", help="finish an interrupted run into the same output")
    bag.add_argument("--storage", choices=sorted(STORAGES), default="mcap", help="output storage (default mcap)")
    add_method_flag(bag)
    add_ray_flags(bag)
    _add_flags(bag.add_argument_group("matching, labelled clouds and tracking, as the node"), _offline_specs(),
               "default")
    add_config_flags(bag, preset="carla")

    sweep = commands.add_parser("sweep", help="compare K, lambda, t_m and the method's open choices on one image")
    sweep.add_argument("image", type=Path)
    sweep.add_argument("--out", type=Path, required=True, help="folder for the figures and sweep.json")
    for attr, (name, values) in SWEEPS.items():
        spec = next(s for s in config_fields() if s.attr == attr)
        kind = {"type": _on_off, "metavar": "on|off"} if spec.type is bool else {
            "type": spec.type, "metavar": name.upper(), "choices": spec.choices}
        sweep.add_argument(spec.flag, dest=attr, nargs="+", **kind,
                           help=f"values to try (when no parameter is given: {' '.join(map(shown, values))})")
    sweep.add_argument("--grid", action="store_true",
                       help="run every combination of the given values (default: one parameter at a time, "
                            "the others at the preset's values)")
    sweep.add_argument("--gt", type=Path, help="ground-truth labels of the image, for an mIoU table and plot")
    add_ground_truth_flags(sweep, required=False)
    add_method_flag(sweep)
    add_config_flags(sweep, preset="carla", exclude=tuple(SWEEPS))

    ev = commands.add_parser("eval", help="score label images against ground truth (Hungarian matching)",
                             description="Score label images against ground truth: a folder of predictions "
                                         "against a folder of ground truth, or a bag segmented by emerdiff bag.")
    source = ev.add_argument_group("frames (--pred and --gt, or --bag)")
    source.add_argument("--pred", type=Path, help="folder of <stem>_labels.png (or <stem>.png)")
    source.add_argument("--gt", type=Path, help="folder of ground-truth <stem>.png")
    source.add_argument("--bag", type=Path, help="a bag segmented by emerdiff bag: predictions and ground truth "
                                                 "paired by header stamp")
    source.add_argument("--pred-topic", default=LABELS_TOPIC, help=f"label images in --bag (default {LABELS_TOPIC})")
    source.add_argument("--gt-topic", default=GT_TOPIC, help=f"ground-truth images in --bag (default {GT_TOPIC})")
    add_ground_truth_flags(ev, required=True)
    ev.add_argument("--ignore-mask", type=Path, metavar="PNG",
                    help="pixels that are not black in this PNG are not scored (the ego vehicle's hood, say)")
    ev.add_argument("--allow-missing", action="store_true",
                    help="score the ground-truth frames that have a prediction, list the others (default: error)")
    ev.add_argument("--resize", action="store_true",
                    help="resample predictions of another size to the ground truth's, nearest (default: error)")
    ev.add_argument("--consistent-ids", action="store_true",
                    help="cluster ids mean the same in every frame, so the headline is the whole-set matching "
                         "(segment --consistent and emerdiff bag with label tracking record this themselves)")
    ev.add_argument("--out", type=Path, help="folder for confusion.png and scores.json")

    rig = commands.add_parser("carla", help="drive the CARLA rig of config/carla_sensors.json: native ROS 2 or a "
                                            "recorded rosbag2 (needs the carla client and a server)")
    carla_rig.add_arguments(rig)

    demo = commands.add_parser("demo", help="segment the bundled CARLA frames (falls back to a smoke run)")
    demo.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default demo_out)")
    add_config_flags(demo, preset="carla")
    return parser


# Errors in the user's input (files included): one line and exit status 2, never a traceback.
USER_ERRORS = (CommandError, ScoringError, BagError, AnyReaderError, OSError, ClusterError)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return _run(parser, args)
    except CheckpointError as exc:  # several lines on purpose: how to get weights
        print(exc, file=sys.stderr)
        return 2
    except USER_ERRORS as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"emerdiff {args.command}: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:  # every output is written whole, then renamed: nothing half-written stays
        again = " (run it again with --resume to finish)" if args.command in RESUMABLE else ""
        print(f"emerdiff {args.command}: interrupted{again}", file=sys.stderr)
        return 130


RESUMABLE = {"segment", "bag"}


def _load(config: EmerDiffConfig):
    """The segmenter; a device or layer the machine or model does not have is the user's error."""
    from .engine import Segmenter

    try:
        return Segmenter.load(config)
    except ValueError as exc:
        raise CommandError(str(exc)) from None


@contextmanager
def _engine(args: argparse.Namespace, config: EmerDiffConfig):
    """The segmenter, or with --ray a pool of workers on the cluster that each load the model once."""
    if args.ray is None:
        yield _load(config)
        return
    from .distributed import RayRunner, connect

    with connect(args.ray):
        try:
            runner = RayRunner(config, args.ray_workers, gpus_per_worker=args.ray_gpus_per_worker,
                               cpus_per_worker=args.ray_cpus_per_worker)
        except ValueError as exc:  # a device or layer the workers' machines or model do not have
            raise CommandError(str(exc)) from None
        except CheckpointError as exc:  # the model path may exist here and not on the worker's machine
            raise CheckpointError(exc.spec, f"a Ray worker could not load it (each worker loads it on its own "
                                            f"machine, so a local folder must be there too): {exc.reason}") from None
        with runner:
            yield runner


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.command == "eval":
        return _evaluate(parser, args)
    if args.command == "carla":
        return carla_rig.run(args, prog="emerdiff carla")
    config = config_from_args(parser, args)
    if args.command == "segment":
        from .tools.images import list_images
        from .tools.segment import segment_images

        check_ray_flags(parser, args, config)
        images = list_images(args.input)
        if not images:
            raise CommandError(f"no images in {args.input}")
        with _engine(args, config) as engine:
            try:
                summary = segment_images(engine, images, args.out, resume=args.resume,
                                         consistent=args.consistent, method=args.method)
            except ValueError as exc:
                raise CommandError(str(exc)) from None
            print("\n".join(summary.lines() + runner_for(engine).lines()))
        return 1 if summary.failed else 0
    if args.command == "bag":
        return _bag(parser, args, config)
    if args.command == "sweep":
        return _sweep(parser, args, config)
    if args.command == "bench":
        from .tools.bench import benchmark, format_report

        if args.frames < 1 or args.warmup < 0:
            parser.error(f"--frames must be at least 1 and --warmup at least 0, got {args.frames} and {args.warmup}")
        report = benchmark(_load(config), args.size, frames=args.frames, warmup=args.warmup)
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


def _bag(parser: argparse.ArgumentParser, args: argparse.Namespace, config: EmerDiffConfig) -> int:
    from .tools.bag import segment_bag, segment_fleet

    check_ray_flags(parser, args, config)
    settings = settings_from_args(parser, args)
    options = dict(topics=BagTopics(args.image_topic, args.camera_info_topic, args.lidar_topic, args.radar_topic),
                   every=args.every, resume=args.resume, storage=args.storage, method=args.method)
    with _engine(args, config) as engine:
        if len(args.input) == 1:
            print("\n".join(segment_bag(engine, settings, args.input[0], args.output, **options).lines(args.output)))
        else:
            written = 0
            for src, dst, summary in segment_fleet(engine, settings, args.input, args.output, **options):
                if summary is None:
                    print(f"{src}: {dst} was written whole by an earlier run")
                else:
                    written += 1
                    print("\n".join([f"{src}:", *summary.lines(dst)]))
            print(f"bags: {written} written now, {len(args.input) - written} by an earlier run")
        for line in runner_for(engine).lines():
            print(line)
    return 0


def _sweep(parser: argparse.ArgumentParser, args: argparse.Namespace, config: EmerDiffConfig) -> int:
    from .scoring import read_label_image
    from .tools.images import read_rgb
    from .tools.sweep import run_sweep, save, table

    chosen = {attr: getattr(args, attr) for attr in SWEEPS if getattr(args, attr)}
    sweeps = chosen or {attr: values for attr, (_, values) in SWEEPS.items()}
    if (args.gt is None) != (args.gt_format is None and args.class_map is None):
        parser.error("--gt and its encoding (--gt-format or --class-map) go together")
    if args.grid and not chosen:
        parser.error("--grid combines the values you give, e.g. --grid --num-masks 10 15 --attention-injection on off")
    fmt = ground_truth_from_args(args) if args.gt else None
    image = read_rgb(args.image)
    gt = None
    if args.gt:
        try:
            gt = fmt.decode(read_label_image(args.gt, fmt.encoding))
        except ScoringError as exc:
            raise ScoringError(f"{args.gt}: {exc}") from None
    segmenter = _load(config)
    try:
        points = run_sweep(segmenter, image, sweeps, grid=args.grid, method=args.method, gt=gt, gt_format=fmt)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    written = save(points, image, args.out, segmenter.model.smoke_note)
    print("\n".join(table(points)))
    if segmenter.model.smoke_note:
        print(segmenter.model.smoke_note)
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def _evaluate(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from .tools.evaluate import evaluate_bag, evaluate_folders, recorded_carla_version, write_outputs

    if args.bag is not None and (args.pred or args.gt):
        raise CommandError("eval takes --bag, or --pred and --gt, not both")
    if args.bag is None and not (args.pred and args.gt):
        raise CommandError("eval needs --pred and --gt (folders), or --bag")
    carla_version, version_note = recorded_carla_version(args.carla_version, args.gt, args.bag)
    fmt = ground_truth_from_args(args, carla_version)
    options = dict(ignore_mask=args.ignore_mask, allow_missing=args.allow_missing, resize=args.resize,
                   consistent_ids=args.consistent_ids or None)
    if args.bag is not None:
        result = evaluate_bag(args.bag, fmt, gt_topic=args.gt_topic, pred_topic=args.pred_topic, **options)
    else:
        result = evaluate_folders(args.pred, args.gt, fmt, **options)
    if version_note and args.class_map is None and args.gt_format in CARLA_FAMILIES:
        result.notes.append(version_note)
    for warning in result.warnings:
        print(f"emerdiff eval: warning: {warning}", file=sys.stderr)
    if args.out:
        write_outputs(result, args.out)
    print("\n".join(result.lines()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
