"""`emerdiff compare`: segment frames with several methods and score them all against ground truth."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..engine.config import METHODS
from ..scoring import CARLA_FAMILIES
from .errors import CommandError, UsageError, user_path
from .flags import METHOD_HELP, add_config_flags, add_ground_truth_flags, config_from_args, ground_truth_from_args

DESCRIPTION = ("Segment the frames once per method (into OUT/<method>/, as emerdiff segment writes them), score each "
               "with emerdiff eval's code (every protocol), and write compare.json, compare.png and a table. "
               "segformer is supervised (Cityscapes): a reference, not an unsupervised competitor.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.add_argument("frames", type=Path, help="image file or folder")
    parser.add_argument("--gt", type=Path, required=True, help="folder of ground-truth <stem>.png")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS), metavar="METHOD",
                        help=f"methods to compare (default: all). {METHOD_HELP}")
    parser.add_argument("--out", type=Path, default=Path("compare"), help="output folder (default ./compare)")
    parser.add_argument("--resume", action="store_true", help="keep the frames each method already segmented")
    add_ground_truth_flags(parser, required=True)
    add_config_flags(parser)


def run(args: argparse.Namespace) -> int:
    from ..engine import load_segmenter
    from ..tools.compare import compare_methods, table, write_report
    from ..tools.evaluate import recorded_carla_version
    from ..tools.images import list_images

    if len(set(args.methods)) != len(args.methods):
        raise UsageError(f"--methods names a method twice: {' '.join(args.methods)}")
    config = config_from_args(args)
    carla_version, version_note = recorded_carla_version(args.carla_version, args.gt)
    fmt = ground_truth_from_args(args, carla_version)
    with user_path(args.frames):
        images = list_images(args.frames)
    if not images:
        raise CommandError(f"no images in {args.frames}")
    with user_path(args.out):
        results = compare_methods(lambda method: load_segmenter(config, method), args.methods, images, args.gt, fmt,
                                  args.out, resume=args.resume)
        written = write_report(results, images, args.gt, args.out)
    if version_note and args.class_map is None and args.gt_format in CARLA_FAMILIES:
        print(version_note)
    print("\n".join(table(results)))
    print("wrote " + ", ".join(str(p) for p in written))
    return 0
