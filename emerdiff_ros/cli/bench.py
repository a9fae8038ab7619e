"""`emerdiff bench`: seconds, UNet evaluations and memory per frame."""

from __future__ import annotations

import argparse
import json

from .errors import UsageError
from .flags import add_config_flags, config_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", type=_size, default=(512, 512), help="frame size WxH (default 512x512)")
    parser.add_argument("--frames", type=int, default=3, help="measured frames (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured frames first (default 1)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    add_config_flags(parser)


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 512x512, got {text!r}") from None
    if width < 1 or height < 1:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return width, height


def run(args: argparse.Namespace) -> int:
    from ..engine import Segmenter
    from ..tools.bench import benchmark, format_report

    config = config_from_args(args)
    if args.frames < 1 or args.warmup < 0:
        raise UsageError(f"--frames must be at least 1 and --warmup at least 0, got {args.frames} and {args.warmup}")
    report = benchmark(Segmenter.load(config), args.size, frames=args.frames, warmup=args.warmup)
    print(json.dumps(report) if args.json else "\n".join(format_report(report)))
    return 0
