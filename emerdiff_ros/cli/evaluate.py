"""`emerdiff eval`: label images scored against ground truth, from folders or a segmented bag."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..scoring import CARLA_FAMILIES
from ..tools.evaluate import (GT_TOPIC, LABELS_TOPIC, evaluate_bag, evaluate_folders, recorded_carla_version,
                               write_outputs)
from .errors import CommandError, user_path
from .flags import add_ground_truth_flags, ground_truth_from_args

DESCRIPTION = ("Score label images against ground truth: a folder of predictions against a folder of ground truth, "
               "or a bag segmented by emerdiff bag.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    source = parser.add_argument_group("frames (--pred and --gt, or --bag)")
    source.add_argument("--pred", type=Path, help="folder of <stem>_labels.png (or <stem>.png)")
    source.add_argument("--gt", type=Path, help="folder of ground-truth <stem>.png")
    source.add_argument("--bag", type=Path, help="a bag segmented by emerdiff bag: predictions and ground truth "
                                                 "paired by header stamp")
    source.add_argument("--pred-topic", default=LABELS_TOPIC, help=f"label images in --bag (default {LABELS_TOPIC})")
    source.add_argument("--gt-topic", default=GT_TOPIC, help=f"ground-truth images in --bag (default {GT_TOPIC})")
    add_ground_truth_flags(parser, required=True)
    parser.add_argument("--ignore-mask", type=Path, metavar="PNG",
                        help="pixels that are not black in this PNG are not scored (the ego vehicle's hood, say)")
    parser.add_argument("--allow-missing", action="store_true",
                        help="score the ground-truth frames that have a prediction, list the others (default: error)")
    parser.add_argument("--resize", action="store_true",
                        help="resample predictions of another size to the ground truth's, nearest (default: error)")
    parser.add_argument("--consistent-ids", action="store_true",
                        help="cluster ids mean the same in every frame, so the headline is the whole-set matching "
                             "(segment --consistent and emerdiff bag with label tracking record this themselves)")
    parser.add_argument("--out", type=Path, help="folder for confusion.png and scores.json")


def run(args: argparse.Namespace) -> int:
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
        with user_path(args.out):
            write_outputs(result, args.out)
    print("\n".join(result.lines()))
    return 0
