"""`emerdiff demo`: the bundled CARLA frames, segmented (a smoke run without weights)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .errors import user_path
from .flags import add_config_flags, config_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default demo_out)")
    add_config_flags(parser, preset="carla")


def run(args: argparse.Namespace) -> int:
    from ..tools.demo import load_or_fall_back
    from ..tools.samples import sample_images
    from ..tools.segment import segment_images

    segmenter = load_or_fall_back(config_from_args(args))
    with user_path(args.out):
        summary = segment_images(segmenter, sample_images(), args.out)
    print("\n".join(summary.lines()))
    print(f"outputs in {args.out}/")
    return 0
