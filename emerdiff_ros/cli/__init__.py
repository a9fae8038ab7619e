"""The `emerdiff` command: one module per subcommand (add_arguments(parser), run(args) -> int), and
here the table of them and what each kind of error becomes: its exit status and the lines printed.

Parsing and --help import no torch: commands load the engine inside run()."""

from __future__ import annotations

import argparse
import logging
import sys

from ..carla import command as carla
from ..engine.checkpoints import CheckpointError
from . import bag, bench, compare, demo, evaluate, segment, sweep
from .errors import USER_ERRORS, UsageError

# name -> (module, help), in the order --help lists them
COMMANDS = {
    "segment": (segment, "segment an image or a folder of images"),
    "bench": (bench, "measure seconds, UNet evaluations and memory per frame"),
    "bag": (bag, "segment rosbag2 or ROS 1 bags into new rosbag2s with the node's outputs"),
    "sweep": (sweep, "compare K, lambda, t_m and the method's open choices on one image"),
    "eval": (evaluate, "score label images against ground truth (Hungarian matching)"),
    "compare": (compare, "segment frames with emerdiff, lowres, dino and segformer (supervised) and score them all"),
    "carla": (carla, "drive the CARLA rig of config/carla_sensors.json: native ROS 2 or a recorded rosbag2 "
                     "(needs the carla client and a server)"),
    "demo": (demo, "segment the bundled CARLA frames (falls back to a smoke run)"),
}
# Every output is written whole, then renamed: an interrupted run of these finishes with --resume.
RESUMABLE = {"segment", "bag", "compare"}


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The parser, and each command's own (whose usage a UsageError is printed under)."""
    parser = argparse.ArgumentParser(prog="emerdiff", description="Label-free segmentation with EmerDiff.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log engine details")
    subparsers = parser.add_subparsers(dest="command", required=True)
    commands = {}
    for name, (module, help_text) in COMMANDS.items():
        commands[name] = subparsers.add_parser(name, help=help_text)
        module.add_arguments(commands[name])
    return parser, commands


def main(argv: list[str] | None = None) -> int:
    parser, commands = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return COMMANDS[args.command][0].run(args)
    except UsageError as exc:
        commands[args.command].error(str(exc))  # usage, one line, exit status 2
    except CheckpointError as exc:  # several lines on purpose: how to get weights
        print(exc, file=sys.stderr)
        return 2
    except USER_ERRORS as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"emerdiff {args.command}: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        again = " (run it again with --resume to finish)" if args.command in RESUMABLE else ""
        print(f"emerdiff {args.command}: interrupted{again}", file=sys.stderr)
        return 130
