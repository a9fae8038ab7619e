"""`emerdiff segment`: an image or a folder of images into label and overlay PNGs."""

from __future__ import annotations

import argparse
from pathlib import Path

from .errors import CommandError, user_path
from .flags import add_config_flags, add_method_flag, add_ray_flags, check_ray_flags, config_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, help="image file or folder")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--resume", action="store_true", help="skip frames whose outputs already exist")
    parser.add_argument("--consistent", action="store_true",
                        help="one set of cluster centres fitted on all frames: a label means the same in every frame")
    add_method_flag(parser)
    add_ray_flags(parser)
    add_config_flags(parser)


def run(args: argparse.Namespace) -> int:
    from ..engine.jobs import runner_for
    from ..tools.images import list_images
    from ..tools.segment import segment_images
    from .engines import open_engine

    config = config_from_args(args)
    check_ray_flags(args, config)
    with user_path(args.input):
        images = list_images(args.input)
    if not images:
        raise CommandError(f"no images in {args.input}")
    with open_engine(args, config) as engine:
        with user_path(args.out):
            summary = segment_images(engine, images, args.out, resume=args.resume, consistent=args.consistent,
                                     method=args.method)
        print("\n".join(summary.lines() + runner_for(engine).lines()))
    return 1 if summary.failed else 0
