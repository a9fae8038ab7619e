"""One drive in CARLA: connect, set the world up, spawn the rig, tick, and undo everything after.

Every change to the world is registered with its undo as it is made, so `close()` destroys every
actor this session spawned and restores the settings, weather and Traffic Manager mode it changed,
also after an error or an interruption half-way through the set-up.
"""

from __future__ import annotations

import logging
import math
import random
import re
import sys
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .convert import bgra_pixels, lidar_points, radar_points, stamp_ns
from ..rig import Rig, RigError, SensorSpec

log = logging.getLogger(__name__)
CLIENT_VERSION = "0.9.16"  # the newest client on PyPI when this was written
INSTALL_HINT = (f"the carla Python client is not installed: pip install carla==<your server's version> "
                f"(carla=={CLIENT_VERSION} has wheels for Python 3.10-3.12 on x86-64 Linux and Windows; "
                f"pip install 'emerdiff_ros[carla]' installs it)")
LOAD_TIMEOUT = 120.0  # seconds a map may take to load
START_SERVER = "start one with CarlaUE4.sh -RenderOffScreen (add --ros2 for native ROS 2 topics)"
# carla releases on PyPI -> the Pythons with wheels (x86-64 Linux and Windows), as pip's index showed in Nov 2026
CLIENT_WHEELS = {"0.9.16": ((3, 10), (3, 12)), "0.9.15": ((3, 7), (3, 10)), "0.9.14": ((3, 7), (3, 8)),
                 "0.9.13": ((3, 6), (3, 8)), "0.9.12": ((3, 6), (3, 8))}
WAKE_SECONDS = 0.1  # how often a main thread waiting on the client looks at signals


class CarlaError(RuntimeError):
    """The rig cannot go on; the text says why in one line."""


class ClientMissing(CarlaError):
    pass


class NoServer(CarlaError):
    pass


class VersionMismatch(CarlaError):
    pass


def import_carla():
    try:
        import carla
    except ImportError:
        raise ClientMissing(INSTALL_HINT) from None
    return carla


def release(version: str) -> str:
    """'0.9.16' of '0.9.16', '0.9.16-dirty' or '0.9.16-3-gabcdef'."""
    match = re.match(r"\d+(\.\d+)*", version.strip())
    return match.group(0) if match else version.strip()


def off_main_thread(call: Callable, *args):
    """call(*args) on a daemon thread, waited for here in short slices.

    The client's blocking calls (tick, get_server_version, load_world) wait inside C++, where Python
    runs no signal handler until they return: on the main thread a Ctrl-C would wait for the timeout.
    The client releases the GIL, so here the handlers run at once; a KeyboardInterrupt they raise
    leaves the call running on its thread, which, as a daemon, never holds the process's exit up.
    """
    outcome: dict[str, object] = {}

    def work() -> None:
        try:
            outcome["value"] = call(*args)
        except BaseException as exc:  # handed to the waiting thread, which decides
            outcome["error"] = exc

    worker = threading.Thread(target=work, name=f"carla {getattr(call, '__name__', 'call')}", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(WAKE_SECONDS)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def matching_client(server_version: str, python: tuple[int, int] | None = None) -> str:
    """How to get the client of a server's release for this Python, in words."""
    python = python or sys.version_info[:2]
    wanted = release(server_version)
    span = CLIENT_WHEELS.get(wanted)
    here = f"{python[0]}.{python[1]}"
    if span is None:
        return f"PyPI has no carla=={wanted} client: build it from CARLA's PythonAPI"
    low, high = (f"{v[0]}.{v[1]}" for v in span)
    if span[0] <= python <= span[1]:
        return f"pip install carla=={wanted}"
    return (f"PyPI has carla=={wanted} for Python {low}-{high} only, not {here}: run the rig from such a "
            f"Python, or build the client from CARLA's PythonAPI")


def connect(carla, host: str, port: int, timeout: float, strict: bool = False):
    """(client, client version, server version, a warning or ""); NoServer, or with `strict`
    VersionMismatch, in one line."""
    client = carla.Client(host, port)
    client.set_timeout(timeout)
    try:
        server_version = off_main_thread(client.get_server_version)
    except RuntimeError as exc:
        reason = str(exc).split(",")[0]
        raise NoServer(f"no CARLA server at {host}:{port} ({reason}): {START_SERVER}, "
                       f"or pass --host/--port") from None
    client_version = client.get_client_version()
    if release(client_version) == release(server_version):
        return client, client_version, server_version, ""
    mismatch = f"the carla client is {client_version} but the server at {host}:{port} is {server_version}"
    if strict:
        raise VersionMismatch(f"{mismatch}: {matching_client(server_version)}")
    # as CARLA's own client: a warning, since a matching client may not exist for this Python
    return client, client_version, server_version, (
        f"{mismatch}: calls, blueprint attributes and sensor data may differ between releases and fail or "
        f"come out wrong ({matching_client(server_version)}; --strict-version refuses a mismatch)")


@dataclass(frozen=True)
class SessionOptions:
    fixed_delta: float = 0.05
    timeout: float = 10.0
    town: str | None = None
    weather: str | None = None
    autopilot: bool = True
    tm_port: int = 8000
    seed: int = 0
    ros2: bool = False
    listen: bool = True  # deliver sensor data to tick() (recording); off when only CARLA publishes


@dataclass(frozen=True)
class CameraGeometry:
    width: int
    height: int
    fov: float


@dataclass(frozen=True)
class Reading:
    frame: int
    elapsed: float  # the data's simulation time, s
    value: np.ndarray | None  # the converted raw buffer; None if it could not be converted
    error: str = ""


@dataclass
class Tick:
    frame: int
    stamp: int  # ns of simulation time, the same for every message of the tick
    readings: dict[str, np.ndarray]  # sensor id -> converted raw buffer, for the sensors whose data came


def weather_presets(carla) -> list[str]:
    return sorted(name for name in dir(carla.WeatherParameters)
                  if not name.startswith("_") and isinstance(getattr(carla.WeatherParameters, name),
                                                             carla.WeatherParameters))


class FrameCollector:
    """Sensor callbacks (CARLA's threads) file readings by frame; a tick takes its frame's readings."""

    def __init__(self, names: list[str]):
        self._cond = threading.Condition()
        self._by_frame: dict[str, dict[int, Reading]] = {name: {} for name in names}
        self.stale = Counter()  # readings of frames already past when they arrived, by sensor
        self.latest: dict[str, float] = {}  # sensor -> simulation time of its newest data, late ones included

    def file(self, name: str, reading: Reading) -> None:
        with self._cond:
            self._by_frame[name][reading.frame] = reading
            self.latest[name] = max(reading.elapsed, self.latest.get(name, reading.elapsed))
            self._cond.notify_all()

    def take(self, frame: int, due: list[str], timeout: float) -> dict[str, Reading]:
        """The readings of `frame`, waiting up to `timeout` seconds for those of the sensors `due`;
        older readings are dropped."""
        with self._cond:
            self._cond.wait_for(lambda: all(frame in self._by_frame[name] for name in due), timeout)
            taken = {name: readings.pop(frame) for name, readings in self._by_frame.items() if frame in readings}
            for name, readings in self._by_frame.items():
                for old in [f for f in readings if f < frame]:
                    del readings[old]
                    self.stale[name] += 1
            return taken


def _decoder(carla, kind: str, geometry: CameraGeometry | None) -> Callable:
    """Sensor data -> converted buffer, as the bridge converts each kind."""
    if kind == "camera":
        return lambda data: bgra_pixels(data.raw_data, geometry.width, geometry.height)
    if kind == "semantic":
        def palette(data):  # the bridge publishes CityScapes palette colours, converted by the client
            data.convert(carla.ColorConverter.CityScapesPalette)
            return bgra_pixels(data.raw_data, geometry.width, geometry.height)
        return palette
    return {"lidar": lambda data: lidar_points(data.raw_data), "radar": lambda data: radar_points(data.raw_data)}[kind]


class RigSession:
    def __init__(self, carla, client, rig: Rig, options: SessionOptions):
        self.carla, self.client, self.rig, self.options = carla, client, rig, options
        self.world = None
        self.vehicle = None
        self.sensors: dict[str, object] = {}  # sensor id -> carla actor
        self.cameras: dict[str, CameraGeometry] = {}
        self.collector = FrameCollector([s.id for s in rig.sensors])
        self.notes: list[str] = []  # what was set up, for the user
        self._undo: list[tuple[str, Callable[[], object], bool, bool]] = []  # (note, undo, is a destroy, quiet)
        self.periods: dict[str, float] = {}  # sensor id -> its sensor_tick, s (0: every tick)
        self._lost: dict[str, float] = {}  # sensor id -> time of the last tick it was due on and sent nothing
        self.ticks = 0
        self.missing = Counter()
        self.bad = Counter()

    # --- set-up ---------------------------------------------------------------------------
    def start(self) -> None:
        carla, options = self.carla, self.options
        if options.town:
            self.client.set_timeout(max(options.timeout, LOAD_TIMEOUT))  # loading a map takes a while
            self.world = off_main_thread(self.client.load_world, options.town)
            self.client.set_timeout(options.timeout)
            self.notes.append(f"loaded {options.town}")
        else:
            self.world = self.client.get_world()
        world = self.world
        original = world.get_settings()
        if original.synchronous_mode:
            log.warning("the world is already in synchronous mode: if another client ticks it, it advances twice "
                        "per step")
        settings = world.get_settings()
        settings.synchronous_mode = True
        settings.fixed_delta_seconds = options.fixed_delta
        world.apply_settings(settings)
        self._on_close("world settings restored", lambda: world.apply_settings(original))
        traffic_manager = self.client.get_trafficmanager(options.tm_port)
        traffic_manager.set_synchronous_mode(True)
        self._on_close("Traffic Manager back to asynchronous", lambda: traffic_manager.set_synchronous_mode(False))
        traffic_manager.set_random_device_seed(options.seed)
        if options.weather:
            weather = world.get_weather()
            world.set_weather(getattr(carla.WeatherParameters, options.weather))
            self._on_close("weather restored", lambda: world.set_weather(weather))
        library = world.get_blueprint_library()
        rng = random.Random(options.seed)
        self.vehicle = self._spawn_vehicle(library, rng)
        for spec in self.rig.sensors:
            self._spawn_sensor(library, spec)
        self.notes.append(f"attached {', '.join(self.sensors)}" + (
            f"; skipped the bridge's pseudo sensors {', '.join(self.rig.skipped)}" if self.rig.skipped else ""))
        if options.ros2:
            self._enable_ros2()
        if options.autopilot:
            self.vehicle.set_autopilot(True, traffic_manager.get_port())

    def _blueprint(self, library, type_id: str, role: str, rng: random.Random):
        if "*" in type_id:  # as the bridge: a random match
            matches = list(library.filter(type_id))
            if not matches:
                raise RigError(f"no blueprint matches {type_id!r}")
            blueprint = rng.choice(matches)
        else:
            try:
                blueprint = library.find(type_id)
            except (IndexError, RuntimeError):
                raise RigError(f"the server has no blueprint {type_id!r}") from None
        blueprint.set_attribute("role_name", role)  # the bridge's topic names come from it
        if blueprint.has_attribute("ros_name"):  # CARLA >= 0.9.15 names its native topics after it
            blueprint.set_attribute("ros_name", role)
        return blueprint

    def _transform(self, pose):
        (x, y, z), (pitch, yaw, roll) = pose.to_carla()
        return self.carla.Transform(self.carla.Location(x=x, y=y, z=z),
                                    self.carla.Rotation(pitch=pitch, yaw=yaw, roll=roll))

    def _spawn_vehicle(self, library, rng: random.Random):
        rig = self.rig
        blueprint = self._blueprint(library, rig.vehicle_type, rig.role_name, rng)
        if rig.vehicle_pose is not None:
            vehicle = self.world.spawn_actor(blueprint, self._transform(rig.vehicle_pose))
        else:
            points = list(self.world.get_map().get_spawn_points())
            rng.shuffle(points)
            vehicle = next((v for v in (self.world.try_spawn_actor(blueprint, p) for p in points) if v is not None),
                           None)
            if vehicle is None:
                raise CarlaError(f"no free spawn point for {rig.role_name} among the map's {len(points)}")
        self._on_close(f"destroying {rig.role_name}", vehicle.destroy, actor=True)
        self.notes.append(f"spawned {rig.role_name} ({vehicle.type_id}, id {vehicle.id})")
        return vehicle

    def _spawn_sensor(self, library, spec: SensorSpec) -> None:
        blueprint = self._blueprint(library, spec.type, spec.id, random.Random(0))
        for key, value in spec.attributes.items():
            if not blueprint.has_attribute(key):
                raise RigError(f"sensor {spec.id}: {spec.type} has no attribute {key!r}")
            try:
                blueprint.set_attribute(key, value)
            except (RuntimeError, ValueError, IndexError) as exc:
                raise RigError(f"sensor {spec.id}: {key}={value!r} rejected: {exc}") from None
        actor = self.world.spawn_actor(blueprint, self._transform(spec.pose), attach_to=self.vehicle)
        self._on_close(f"destroying {spec.id}", actor.destroy, actor=True)
        self.sensors[spec.id] = actor
        self.periods[spec.id] = self._period(spec.id, actor.attributes.get("sensor_tick", "0"))
        geometry = None
        if spec.kind in ("camera", "semantic"):
            attributes = actor.attributes
            geometry = CameraGeometry(int(attributes["image_size_x"]), int(attributes["image_size_y"]),
                                      float(attributes["fov"]))
            self.cameras[spec.id] = geometry
        if self.options.listen:
            decode = _decoder(self.carla, spec.kind, geometry)
            actor.listen(lambda data, name=spec.id: self._receive(name, decode, data))
            self._on_close(f"stopping {spec.id}", actor.stop, quiet=True)

    def _period(self, name: str, sensor_tick: str) -> float:
        period = float(sensor_tick)
        step = self.options.fixed_delta
        if period > step and abs(period / step - round(period / step)) > 1e-6:
            log.warning("sensor %s: sensor_tick %g is not a multiple of the fixed step %g: the ticks it sends data "
                        "on are guessed, and a wrong guess costs a wait of --timeout", name, period, step)
        return period

    def _receive(self, name: str, decode: Callable, data) -> None:
        try:
            reading = Reading(data.frame, data.timestamp, decode(data))
        except Exception as exc:  # a CARLA thread calls this: report the reading as bad, never raise there
            reading = Reading(data.frame, data.timestamp, None, str(exc))
        self.collector.file(name, reading)

    def _enable_ros2(self) -> None:
        for name, actor in self.sensors.items():
            if not hasattr(actor, "enable_for_ros"):
                raise CarlaError("this carla client has no enable_for_ros: native ROS 2 needs CARLA >= 0.9.15")
            actor.enable_for_ros()
        self.notes.append(f"native ROS 2 publishing enabled for {', '.join(self.sensors)}")

    def _on_close(self, note: str, undo: Callable[[], object], actor: bool = False, quiet: bool = False) -> None:
        """Register the undo of a change just made (note: what it does, for the report)."""
        self._undo.append((note, undo, actor, quiet))

    # --- driving --------------------------------------------------------------------------
    def tick(self) -> Tick:
        frame = off_main_thread(self.world.tick, self.options.timeout)
        elapsed = self.world.get_snapshot().timestamp.elapsed_seconds
        self.ticks += 1
        return Tick(frame, stamp_ns(elapsed), self._readings(frame, elapsed) if self.options.listen else {})

    def _readings(self, frame: int, elapsed: float) -> dict[str, np.ndarray]:
        """The frame's converted readings, waiting for the sensors due on it; the others are counted."""
        due = [spec.id for spec in self.rig.sensors if self._due(spec.id, elapsed)]
        taken = self.collector.take(frame, due, self.options.timeout)
        readings, missing = {}, [name for name in due if name not in taken]
        for name in missing:
            self.missing[name] += 1
            self._lost[name] = elapsed  # it measured and its data were lost: due again a period on
        if missing:
            log.warning("frame %d: no data from %s within %g s", frame, ", ".join(missing), self.options.timeout)
        for name, reading in taken.items():
            if reading.value is None:
                self.bad[name] += 1
                log.warning("sensor %s, frame %d: %s", name, frame, reading.error)
            else:
                readings[name] = reading.value
        return readings

    def _due(self, name: str, elapsed: float) -> bool:
        """Whether a sensor sends data on the tick at `elapsed`, as the bridge's next_data_expected_time
        tells: one with a sensor_tick longer than the step sends once that much time has passed since its
        last data (half a step of slack for the rounding of accumulated time)."""
        period, step = self.periods.get(name, 0.0), self.options.fixed_delta
        last = max(self.collector.latest.get(name, -math.inf), self._lost.get(name, -math.inf))
        return period <= step or elapsed >= last + period - step / 2

    # --- undo -----------------------------------------------------------------------------
    def close(self) -> list[str]:
        """Undo every change, newest first, each one even if another fails; the report, a line each."""
        done, failed, destroyed = [], [], 0
        while self._undo:
            note, undo, actor, quiet = self._undo.pop()
            try:
                result = off_main_thread(undo)  # a Ctrl-C meanwhile is told to wait, at once
            except Exception as exc:  # keep undoing the rest: a left-over actor is worse than a message
                failed.append(f"{note}: {exc}")
                continue
            if actor:
                if result is False:  # Actor.destroy() says whether the actor went
                    failed.append(f"{note}: the server did not destroy it")
                else:
                    destroyed += 1
            elif not quiet:
                done.append(note)
        lines = [f"cleanup: destroyed {destroyed} actors" + (f", {', '.join(done)}" if done else "")]
        lines += [f"cleanup failed: {line}" for line in failed]
        return lines
