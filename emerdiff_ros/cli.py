"""The `emerdiff` command: argument parsing, dispatching to the tools."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .engine import PRESETS, CheckpointError, EmerDiffConfig, config_fields


def add_config_flags(parser: argparse.ArgumentParser, preset: str = "paper") -> None:
    """One flag per EmerDiffConfig field; unset flags keep the preset's value."""
    group = parser.add_argument_group("method and model (unset flags keep the preset's values)")
    group.add_argument("--preset", choices=sorted(PRESETS), default=preset, help=f"parameter preset (default {preset})")
    for spec in config_fields():
        limits = f", {spec.low}..{spec.high}" if spec.low is not None else ""
        kwargs = {"dest": spec.attr, "default": None, "help": f"{spec.description} (paper: {spec.default}{limits})"}
        if spec.type is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs.update(type=spec.type, metavar=spec.name.upper(), choices=spec.choices)
        group.add_argument(spec.flag, **kwargs)


def config_from_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> EmerDiffConfig:
    overrides = {s.attr: getattr(args, s.attr) for s in config_fields() if getattr(args, s.attr) is not None}
    try:
        return EmerDiffConfig.from_preset(args.preset, **overrides)
    except ValueError as exc:
        parser.error(str(exc))


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
    add_config_flags(seg)

    bench = commands.add_parser("bench", help="measure seconds, UNet evaluations and memory per frame")
    bench.add_argument("--size", type=_size, default=(512, 512), help="frame size WxH (default 512x512)")
    bench.add_argument("--frames", type=int, default=3, help="measured frames (default 3)")
    bench.add_argument("--warmup", type=int, default=1, help="unmeasured frames first (default 1)")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    add_config_flags(bench)

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
        summary = segment_images(Segmenter.load(config), images, args.out, resume=args.resume)
        print("\n".join(summary.lines()))
        return 1 if summary.failed else 0
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


if __name__ == "__main__":
    sys.exit(main())
