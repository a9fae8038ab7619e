"""`carla_rig` / `emerdiff carla`: drive the rig of config/carla_sensors.json in CARLA.

Exit status: 0 after the asked frames or a Ctrl-C stop, 1 when the server is missing or fails
during the drive, 2 for a problem the user fixes (no carla client, a version mismatch with
--strict-version, a bad rig file or option), 130 when interrupted at once (a second Ctrl-C, or one
while connecting). Every way out destroys the actors and restores the world.
"""

from __future__ import annotations

import argparse
import logging
import math
import signal
import sys
import threading
from contextlib import ExitStack, contextmanager
from pathlib import Path

from tqdm import tqdm

from .recording import BagRecorder, FrameWriter, RecordError, check_new_bag, ground_truth_pair
from ..rig import RigError, default_rig_file, load_rig, sensor_topics
from .session import (CarlaError, ClientMissing, NoServer, RigSession, SessionOptions, VersionMismatch, connect,
                      import_carla, release, weather_presets)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(prog=parser.prog)  # messages start with it: carla_rig, or emerdiff carla
    server = parser.add_argument_group("server")
    server.add_argument("--host", default="localhost", help="CARLA server host (default localhost)")
    server.add_argument("--port", type=int, default=2000, help="CARLA server port (default 2000)")
    server.add_argument("--timeout", type=_positive, default=10.0,
                        help="seconds to wait for the server: to connect, per tick and for sensor data (default 10)")
    server.add_argument("--strict-version", action="store_true",
                        help="refuse a server of another release than the client (default: warn, as CARLA's client)")
    world = parser.add_argument_group("world")
    world.add_argument("--town", help="load this map first, e.g. Town10HD_Opt (default: keep the loaded one)")
    world.add_argument("--weather", help="a carla.WeatherParameters preset, e.g. ClearNoon (restored after)")
    world.add_argument("--fixed-delta", type=_positive, default=0.05,
                       help="seconds of simulation per tick, synchronous mode (default 0.05, as the bridge)")
    world.add_argument("--seed", type=int, default=0, help="seed of the spawn point and the Traffic Manager")
    world.add_argument("--no-autopilot", action="store_true", help="leave the ego vehicle standing")
    world.add_argument("--tm-port", type=int, default=8000, help="Traffic Manager port (default 8000)")
    rig = parser.add_argument_group("rig and outputs")
    rig.add_argument("--sensors", type=Path, help=f"rig file in the bridge's objects format "
                                                  f"(default {default_rig_file()})")
    rig.add_argument("--ros2", action="store_true",
                     help="enable CARLA's native ROS 2 publishing of each sensor "
                          "(server >= 0.9.15 started with --ros2)")
    rig.add_argument("--record", type=Path, metavar="OUT",
                     help="write the bridge's messages and /clock into a new rosbag2 (MCAP), no ROS needed")
    rig.add_argument("--save-frames", type=Path, metavar="DIR",
                     help="also write DIR/rgb/<frame>.png and DIR/gt/<frame>.png (semantic camera, palette colours)")
    limit = rig.add_mutually_exclusive_group()
    limit.add_argument("--frames", type=_positive_int, metavar="N", help="stop after N ticks (default: at Ctrl-C)")
    limit.add_argument("--seconds", type=_positive, metavar="S", help="stop after S seconds of simulation")


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def tick_limit(args: argparse.Namespace) -> int | None:
    if args.frames is not None:
        return args.frames
    if args.seconds is not None:
        return max(1, math.ceil(args.seconds / args.fixed_delta - 1e-9))
    return None


class SignalGuard:
    """While active, a first Ctrl-C (or SIGTERM) asks the drive to stop after the current tick and a
    second one interrupts it at once (say, a tick waiting on a hung server), but never while a tick
    is being written; while cleaning up, signals only say to wait, so the actors are always destroyed
    and the bag always closed."""

    def __init__(self):
        self.stop = threading.Event()
        self.cleaning = False
        self._writing = False
        self._interrupt_pending = False
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        if self.cleaning:
            print("\ncleaning up: destroying the actors, restoring the world, closing the bag", file=sys.stderr)
        elif not self.stop.is_set():
            self.stop.set()
            print("\nstopping after this tick (Ctrl-C again to stop at once)", file=sys.stderr)
        elif self._writing:
            self._interrupt_pending = True
        else:
            raise KeyboardInterrupt

    @contextmanager
    def writing(self):
        """A tick's messages are written whole: an interruption waits for the end of the block."""
        self._writing = True
        try:
            yield
        finally:
            self._writing = False
        if self._interrupt_pending:
            raise KeyboardInterrupt

    def __enter__(self) -> "SignalGuard":
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)


def run(args: argparse.Namespace) -> int:
    prog = args.prog

    def fail(message: str, status: int) -> int:
        print(f"{prog}: error: {message}", file=sys.stderr)
        return status

    try:
        rig = load_rig(args.sensors or default_rig_file())
        if args.record:
            check_new_bag(args.record)
        if args.save_frames:
            FrameWriter.check_folder(args.save_frames)
        carla = import_carla()
        if args.weather and args.weather not in weather_presets(carla):
            return fail(f"unknown weather {args.weather!r}; presets: {', '.join(weather_presets(carla))}", 2)
        client, client_version, server_version, warning = connect(carla, args.host, args.port, args.timeout,
                                                                  strict=args.strict_version)
    except (RigError, RecordError, ClientMissing, VersionMismatch) as exc:
        return fail(str(exc), 2)
    except NoServer as exc:
        return fail(str(exc), 1)
    except KeyboardInterrupt:  # while waiting for the server: nothing to undo yet
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    print(f"CARLA client {client_version}, server {server_version} at {args.host}:{args.port}")
    if warning:
        print(f"{prog}: warning: {warning}", file=sys.stderr)
    listen = bool(args.record or args.save_frames)
    options = SessionOptions(fixed_delta=args.fixed_delta, timeout=args.timeout, town=args.town,
                             weather=args.weather, autopilot=not args.no_autopilot, tm_port=args.tm_port,
                             seed=args.seed, ros2=args.ros2, listen=listen)
    session = RigSession(carla, client, rig, options)
    outputs: dict[str, object] = {}
    status = 0
    with SignalGuard() as guard, ExitStack() as closing:
        try:
            session.start()
            print("\n".join(session.notes))
            if args.ros2:
                print("native ROS 2 topics (if the server runs with --ros2): " + ", ".join(
                    ["/clock"] + [t for s in rig.sensors for t in sensor_topics(rig, s).values()]))
            if args.record:
                outputs["bag"] = closing.enter_context(BagRecorder(args.record, rig, session.cameras,
                                                                   release(server_version)))
            if args.save_frames:
                outputs["frames"] = FrameWriter(args.save_frames, *ground_truth_pair(rig, session.cameras),
                                                release(server_version))
            _drive(session, list(outputs.values()), tick_limit(args), guard, "record" if listen else "drive")
        except (RigError, RecordError) as exc:
            status = fail(str(exc), 2)
        except CarlaError as exc:
            status = fail(str(exc), 1)
        except RuntimeError as exc:  # how the carla client reports a lost or failing server
            status = fail(f"CARLA: {exc}", 1)
        except KeyboardInterrupt:
            print(f"{prog}: interrupted", file=sys.stderr)
            status = 130
        finally:
            guard.cleaning = True
            cleanup = session.close()
        # leaving the block closes the bag, whatever happened above
    print("\n".join(_summary(session, outputs, cleanup, args)))
    return status


def _drive(session: RigSession, sinks: list, limit: int | None, guard: SignalGuard, what: str) -> None:
    with tqdm(total=limit, desc=what, unit="tick", disable=None) as bar:
        while not guard.stop.is_set() and (limit is None or session.ticks < limit):
            tick = session.tick()
            with guard.writing():
                for sink in sinks:
                    sink.write(tick)
            bar.update()
            bar.set_postfix_str(f"sim {tick.stamp / 1e9:.2f} s", refresh=False)


def _counts(counter) -> str:
    return ", ".join(f"{name} {count}" for name, count in counter.items()) or "none"


def _summary(session: RigSession, outputs: dict, cleanup: list[str], args: argparse.Namespace) -> list[str]:
    lines = [f"ticks: {session.ticks} ({session.ticks * args.fixed_delta:.2f} s of simulation)"]
    if session.missing or session.bad or session.collector.stale:
        lines.append(f"sensor data missing: {_counts(session.missing)}; unreadable: {_counts(session.bad)}; "
                     f"late: {_counts(session.collector.stale)}")
    if "bag" in outputs:
        bag = outputs["bag"]
        lines.append(f"wrote {bag.path}: {bag.ticks} ticks, {bag.messages} messages (rosbag2, MCAP)")
    if "frames" in outputs:
        lines.append(f"wrote {outputs['frames'].pairs} image/ground-truth pairs to {args.save_frames}/rgb and "
                     f"{args.save_frames}/gt")
    return lines + cleanup


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="carla_rig", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log details")
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
