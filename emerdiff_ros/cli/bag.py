"""`emerdiff bag`: bags into new rosbag2s holding the node's outputs."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..rig import RigError
from ..runtime.rigging import surround_rig
from ..runtime.settings import StreamSettings
from ..tools.bag_options import STORAGES, BagTopics, surround_topics
from .errors import CommandError, UsageError, user_path
from .flags import (add_config_flags, add_method_flag, add_param_flags, add_ray_flags, check_ray_flags,
                    config_from_args, output_setting_specs, settings_from_args)

DESCRIPTION = ("Segment a bag into a new rosbag2 with the node's outputs: emerdiff bag IN OUT. Several bags in one "
               "run: emerdiff bag IN IN... OUT, OUT then being a folder that receives one new bag per input, named "
               "after it.")
TOPIC_FLAGS = ("image", "camera_info", "lidar", "radar")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.add_argument("input", type=Path, nargs="+", metavar="IN", help="rosbag2 folder or ROS 1 .bag file")
    parser.add_argument("output", type=Path, metavar="OUT",
                        help="with one IN, the new rosbag2; with several, a folder: each IN goes to OUT/<its folder "
                             "name, or its .bag file's name without .bag> (never an existing bag)")
    defaults = BagTopics()
    for name in TOPIC_FLAGS:
        parser.add_argument(f"--{name.replace('_', '-')}-topic", dest=f"{name}_topic",
                            default=getattr(defaults, name), help=f"(default {getattr(defaults, name)}; with "
                                                                  f"--cameras the rig's)")
    parser.add_argument("--every", type=int, default=1, metavar="N", help="segment every Nth image (default 1)")
    parser.add_argument("--resume", action="store_true", help="finish an interrupted run into the same output")
    parser.add_argument("--storage", choices=sorted(STORAGES), default="mcap", help="output storage (default mcap)")
    add_method_flag(parser)
    add_ray_flags(parser)
    add_param_flags(parser.add_argument_group("matching, labelled clouds and tracking, as the node"),
                    output_setting_specs(), "default")
    add_config_flags(parser, preset="carla")


def run(args: argparse.Namespace) -> int:
    from ..engine.jobs import runner_for
    from ..tools.bag import segment_bag, segment_fleet
    from .engines import open_engine

    config = config_from_args(args)
    check_ray_flags(args, config)
    settings = settings_from_args(args)
    options = dict(topics=_topics(args, settings), every=args.every, resume=args.resume, storage=args.storage,
                   method=args.method)
    with open_engine(args, config) as engine:
        with user_path(args.output):
            if len(args.input) == 1:
                summary = segment_bag(engine, settings, args.input[0], args.output, **options)
                print("\n".join(summary.lines(args.output)))
            else:
                _print_fleet(segment_fleet(engine, settings, args.input, args.output, **options), len(args.input))
        for line in runner_for(engine).lines():
            print(line)
    return 0


def _topics(args: argparse.Namespace, settings: StreamSettings) -> BagTopics:
    """The flags' topics for one camera; in surround each camera's and cloud sensor's, by its id in the rig."""
    if not settings.cameras:
        return BagTopics(*(getattr(args, f"{name}_topic") for name in TOPIC_FLAGS))
    defaults = BagTopics()
    given = [f"--{name.replace('_', '-')}-topic" for name in TOPIC_FLAGS
             if getattr(args, f"{name}_topic") != getattr(defaults, name)]
    if given:
        raise UsageError(f"{', '.join(given)}: with --cameras the inputs are the rig's topics of each camera, "
                         "--lidar-id and --radar-id")
    try:
        return surround_topics(surround_rig(settings), settings)
    except RigError as exc:
        raise CommandError(str(exc)) from None


def _print_fleet(results, bags: int) -> None:
    """Each bag's summary as it is written, then the count."""
    written = 0
    for src, dst, summary in results:
        if summary is None:
            print(f"{src}: {dst} was written whole by an earlier run")
        else:
            written += 1
            print("\n".join([f"{src}:", *summary.lines(dst)]))
    print(f"bags: {written} written now, {bags - written} by an earlier run")
