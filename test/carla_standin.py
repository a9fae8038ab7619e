"""A stand-in for the `carla` client module, for testing carla_rig without a CARLA server.

It offers exactly the client calls the rig makes (the names are checked against the real client
in test_carla_rig.py when it is installed), keeps the state a server would (actors, settings,
weather, Traffic Manager mode), records every call, and produces sensor data the way CARLA does:
raw buffers (BGRA images, LiDAR x, y, z, intensity and radar velocity, azimuth, altitude, depth
float32, in CARLA's left-handed axes) delivered after each tick on other threads, in any order, by
the sensors whose `sensor_tick` has come round. Its blocking calls (tick, get_server_version,
load_world) hold off signals as the real ones, which wait inside C++, do: a Python signal handler of
the calling thread runs only once they return.
The data come from known geometry given in ROS axes, so a test can compute what the bridge
would publish by hand. Install it with `install(server)` as sys.modules["carla"].
"""

from __future__ import annotations

import copy
import random
import signal
import sys
import threading
import time
import types
from contextlib import contextmanager

import numpy as np

SERVER: "Server | None" = None  # None: no server answers
# CARLA 0.9.14+ CityScapesPalette for the tags the stand-in's semantic camera sees (RGB)
PALETTE = {0: (0, 0, 0), 1: (128, 64, 128), 3: (70, 70, 70), 11: (70, 130, 180), 14: (0, 0, 142)}
BLUEPRINTS = {
    "vehicle.tesla.model3": {"role_name": "", "ros_name": "vehicle.tesla.model3", "color": "0,0,0"},
    "sensor.camera.rgb": {"role_name": "", "ros_name": "sensor.camera.rgb", "image_size_x": "800",
                          "image_size_y": "600", "fov": "90.0", "sensor_tick": "0.0"},
    "sensor.camera.semantic_segmentation": {"role_name": "", "ros_name": "sensor.camera.semantic_segmentation",
                                            "image_size_x": "800", "image_size_y": "600", "fov": "90.0",
                                            "sensor_tick": "0.0"},
    "sensor.lidar.ray_cast": {"role_name": "", "ros_name": "sensor.lidar.ray_cast", "range": "10.0",
                              "channels": "32", "points_per_second": "56000", "upper_fov": "10.0",
                              "lower_fov": "-30.0", "rotation_frequency": "10.0", "noise_stddev": "0.0",
                              "sensor_tick": "0.0"},
    "sensor.other.radar": {"role_name": "", "ros_name": "sensor.other.radar", "horizontal_fov": "30.0",
                           "vertical_fov": "30.0", "points_per_second": "1500", "range": "100", "sensor_tick": "0.0"},
}


@contextmanager
def blocking_in_cpp():
    """A call of the real client waits inside C++: the calling thread's Python signal handlers wait for
    its end. Holding SIGINT and SIGTERM off this thread for the call does the same (the kernel hands them
    to a thread that takes them, or keeps them pending until the call returns)."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


class Location:
    def __init__(self, x=0.0, y=0.0, z=0.0):
        self.x, self.y, self.z = float(x), float(y), float(z)


class Rotation:
    def __init__(self, pitch=0.0, yaw=0.0, roll=0.0):
        self.pitch, self.yaw, self.roll = float(pitch), float(yaw), float(roll)


class Transform:
    def __init__(self, location=None, rotation=None):
        self.location = location or Location()
        self.rotation = rotation or Rotation()



def pose(transform: Transform) -> tuple:
    """(x, y, z, pitch, yaw, roll) of a transform."""
    loc, rot = transform.location, transform.rotation
    return (loc.x, loc.y, loc.z, rot.pitch, rot.yaw, rot.roll)


class WorldSettings:
    def __init__(self, synchronous_mode=False, fixed_delta_seconds=None, no_rendering_mode=False):
        self.synchronous_mode = synchronous_mode
        self.fixed_delta_seconds = fixed_delta_seconds
        self.no_rendering_mode = no_rendering_mode


class WeatherParameters:
    def __init__(self, name="custom", cloudiness=0.0):
        self.name, self.cloudiness = name, cloudiness


WeatherParameters.ClearNoon = WeatherParameters("ClearNoon", 5.0)
WeatherParameters.WetCloudySunset = WeatherParameters("WetCloudySunset", 60.0)


class ColorConverter:
    Raw = "Raw"
    CityScapesPalette = "CityScapesPalette"


class ActorBlueprint:
    def __init__(self, type_id: str):
        self.id = type_id
        self._attributes = dict(BLUEPRINTS[type_id])

    def has_attribute(self, key: str) -> bool:
        return key in self._attributes

    def set_attribute(self, key: str, value: str) -> None:
        if key not in self._attributes:
            raise IndexError(f"ActorBlueprint: no attribute '{key}'")
        if not isinstance(value, str):
            raise TypeError("set_attribute takes a string")
        self._attributes[key] = value


class BlueprintLibrary:
    def find(self, type_id: str) -> ActorBlueprint:
        if type_id not in BLUEPRINTS:
            raise IndexError(f"blueprint '{type_id}' not found")
        return ActorBlueprint(type_id)

    def filter(self, pattern: str) -> list:
        import fnmatch

        return [ActorBlueprint(t) for t in BLUEPRINTS if fnmatch.fnmatch(t, pattern)]


class Actor:
    def __init__(self, server: "Server", blueprint: ActorBlueprint, transform: Transform, parent):
        self.id = server.next_id()
        self.type_id = blueprint.id
        self.attributes = dict(blueprint._attributes)
        self.parent = parent
        self._transform = transform
        self._server = server

    @property
    def is_alive(self) -> bool:
        return self.id in self._server.actors

    def destroy(self) -> bool:
        self._server.record("destroy", self.attributes.get("role_name"))
        return self._server.actors.pop(self.id, None) is not None


class Vehicle(Actor):
    def set_autopilot(self, enabled=True, tm_port=8000) -> None:
        self._server.record("set_autopilot", enabled, tm_port)
        self._server.autopilot = enabled


class ServerSideSensor(Actor):
    def __init__(self, *args):
        super().__init__(*args)
        self._callback = None

    @property
    def is_listening(self) -> bool:
        return self._callback is not None

    def listen(self, callback) -> None:
        self._server.record("listen", self.attributes["role_name"])
        self._callback = callback

    def stop(self) -> None:
        self._server.record("stop", self.attributes["role_name"])
        self._callback = None

    def enable_for_ros(self) -> None:
        self._server.record("enable_for_ros", self.attributes["role_name"])


class SensorData:
    def __init__(self, frame: int, elapsed: float, raw: bytes):
        self.frame, self.timestamp, self._raw = frame, elapsed, raw

    @property
    def raw_data(self) -> memoryview:
        return memoryview(self._raw)


class Image(SensorData):
    def __init__(self, frame, elapsed, raw, width, height, fov):
        super().__init__(frame, elapsed, raw)
        self.width, self.height, self.fov = width, height, fov

    def convert(self, converter) -> None:
        """As the client converts the semantic camera's tags (red channel) to palette colours."""
        assert converter == ColorConverter.CityScapesPalette
        bgra = np.frombuffer(self._raw, np.uint8).reshape(self.height, self.width, 4).copy()
        tags = bgra[:, :, 2].copy()
        for tag, (r, g, b) in PALETTE.items():
            bgra[tags == tag] = (b, g, r, 255)
        self._raw = bgra.tobytes()


class LidarMeasurement(SensorData):
    pass


class RadarMeasurement(SensorData):
    pass


class Timestamp:
    def __init__(self, frame: int, elapsed_seconds: float, delta_seconds: float):
        self.frame, self.elapsed_seconds, self.delta_seconds = frame, elapsed_seconds, delta_seconds


class WorldSnapshot:
    def __init__(self, timestamp: Timestamp):
        self.frame, self.timestamp = timestamp.frame, timestamp


class Map:
    def __init__(self, name: str):
        self.name = name

    def get_spawn_points(self) -> list:
        return [Transform(Location(10.0 * i, 5.0, 0.3), Rotation(yaw=90.0)) for i in range(4)]


class TrafficManager:
    def __init__(self, server: "Server", port: int):
        self._server, self._port = server, port

    def set_synchronous_mode(self, enabled: bool) -> None:
        self._server.record("tm_synchronous_mode", enabled)
        self._server.tm_synchronous = enabled

    def set_random_device_seed(self, seed: int) -> None:
        self._server.record("tm_seed", seed)

    def get_port(self) -> int:
        return self._port


class World:
    def __init__(self, server: "Server"):
        self._server = server

    def get_settings(self) -> WorldSettings:
        return copy.copy(self._server.settings)

    def apply_settings(self, settings: WorldSettings) -> int:
        self._server.record("apply_settings", settings.synchronous_mode, settings.fixed_delta_seconds)
        self._server.settings = copy.copy(settings)
        return self._server.frame

    def get_weather(self) -> WeatherParameters:
        return self._server.weather

    def set_weather(self, weather: WeatherParameters) -> None:
        self._server.record("set_weather", weather.name)
        self._server.weather = weather

    def get_blueprint_library(self) -> BlueprintLibrary:
        return BlueprintLibrary()

    def get_map(self) -> Map:
        return Map(self._server.town)

    def spawn_actor(self, blueprint, transform, attach_to=None):
        actor = self.try_spawn_actor(blueprint, transform, attach_to)
        if actor is None:
            raise RuntimeError("Spawn failed because of collision at spawn position")
        return actor

    def try_spawn_actor(self, blueprint, transform, attach_to=None):
        server = self._server
        if attach_to is None and pose(transform) in server.occupied:
            return None
        kind = Vehicle if blueprint.id.startswith("vehicle.") else ServerSideSensor
        actor = kind(server, blueprint, transform, attach_to)
        server.actors[actor.id] = actor
        server.record("spawn_actor", blueprint.id, dict(actor.attributes), pose(transform),
                      attach_to.attributes["role_name"] if attach_to else None)
        return actor

    def tick(self, seconds: float = 10.0) -> int:
        with blocking_in_cpp():
            return self._server.tick(seconds)

    def get_snapshot(self) -> WorldSnapshot:
        server = self._server
        return WorldSnapshot(Timestamp(server.frame, server.elapsed, server.settings.fixed_delta_seconds or 0.0))


class Client:
    def __init__(self, host: str = "localhost", port: int = 2000, worker_threads: int = 0):
        self._address = f"{host}:{port}"
        self._timeout = 5.0

    def set_timeout(self, seconds: float) -> None:
        self._timeout = seconds

    def _server(self) -> "Server":
        if SERVER is None:
            raise RuntimeError(f"time-out of {int(self._timeout * 1000)}ms while waiting for the simulator, "
                               f"make sure the simulator is ready and connected to {self._address}")
        return SERVER

    def get_client_version(self) -> str:
        return "0.9.16"

    def get_server_version(self) -> str:
        with blocking_in_cpp():
            return self._server().version

    def get_world(self) -> World:
        return World(self._server())

    def load_world(self, map_name: str, reset_settings: bool = True) -> World:
        with blocking_in_cpp():
            server = self._server()
            server.record("load_world", map_name)
            server.town = map_name
            return World(server)

    def get_trafficmanager(self, client_connection: int = 8000) -> TrafficManager:
        return TrafficManager(self._server(), client_connection)


class Server:
    """What a CARLA server holds, and the scene its sensors see.

    camera_rgb: (H, W, 3) uint8 seen by every RGB camera, rolled 8 px per frame; lidar_points and
    radar_points: (N, 3) points in the sensor's ROS axes (x forward, y left, z up). The LiDAR's
    intensity and the radar's velocity carry the frame number, so a test can tell which frame a
    message holds. Failures: `fail_at` a tick number -> RuntimeError in tick(), `interrupt_at`
    -> KeyboardInterrupt in tick(), `hang_at` -> tick() waits a minute (a hung server), `silent`
    {tick: [sensor role names]} that deliver nothing. `progress_file`: where each tick() writes its
    number as it starts, for a test driving the rig in another process.
    """

    def __init__(self, camera_rgb, lidar_points, radar_points, version="0.9.16", fail_at=None,
                 interrupt_at=None, hang_at=None, silent=None, delay=0.0, start_elapsed=2.0, progress_file=None):
        self.camera_rgb, self.lidar_points, self.radar_points = camera_rgb, lidar_points, radar_points
        self.version, self.fail_at, self.interrupt_at, self.hang_at = version, fail_at, interrupt_at, hang_at
        self.silent, self.progress_file = silent or {}, progress_file
        self.delay = delay  # seconds each tick takes, like a rendering server
        self.settings = WorldSettings(False, None)
        self.weather = WeatherParameters("Default", 20.0)
        self.town = "Town10HD_Opt"
        self.actors: dict[int, Actor] = {}
        self.occupied = {pose(Map("").get_spawn_points()[0])}  # a parked car on the first spawn point
        self.tm_synchronous = False
        self.autopilot = False
        self.frame, self.elapsed, self.ticks = 1000, start_elapsed, 0
        self.calls: list[tuple] = []
        self._ids = 100
        self._rng = random.Random(7)
        self._threads: list[threading.Thread] = []
        self._measured: dict[int, float] = {}  # sensor actor id -> simulation time of its last measurement

    def record(self, *call) -> None:
        self.calls.append(call)

    def called(self, name: str) -> list[tuple]:
        return [c[1:] for c in self.calls if c[0] == name]

    def next_id(self) -> int:
        self._ids += 1
        return self._ids

    def tick(self, timeout: float) -> int:
        if not self.settings.synchronous_mode:
            raise RuntimeError("tick() in asynchronous mode")
        self.ticks += 1
        if self.progress_file:
            with open(self.progress_file, "w") as f:
                f.write(str(self.ticks))
        if self.ticks == self.interrupt_at:
            raise KeyboardInterrupt
        if self.ticks == self.fail_at:
            raise RuntimeError(f"time-out of {int(timeout * 1000)}ms while waiting for the simulator")
        time.sleep(60.0 if self.ticks == self.hang_at else self.delay)
        self.frame += 1
        self.elapsed += self.settings.fixed_delta_seconds  # accumulated as the server does
        self._deliver()
        return self.frame

    def _deliver(self) -> None:
        """The data of each listening sensor that measures in the new frame, on its own thread, after a
        random delay."""
        self._threads = [t for t in self._threads if t.is_alive()]
        silent = self.silent.get(self.ticks, ())
        for actor in list(self.actors.values()):
            if not isinstance(actor, ServerSideSensor) or not self._measures(actor) or actor._callback is None:
                continue
            if actor.attributes["role_name"] in silent:
                continue
            data = self.sensor_data(actor, self.frame, self.elapsed)
            thread = threading.Thread(target=self._call, args=(actor, data, self._rng.random() * 0.004), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _measures(self, actor: Actor) -> bool:
        """A sensor measures on its first tick, then once `sensor_tick` seconds of simulation have passed
        (every tick for 0), as Unreal ticks an actor with a tick interval."""
        period, last = float(actor.attributes["sensor_tick"]), self._measured.get(actor.id)
        if last is not None and self.elapsed < last + period - 1e-6:
            return False
        self._measured[actor.id] = self.elapsed
        return True

    @staticmethod
    def _call(actor, data, delay) -> None:
        time.sleep(delay)
        callback = actor._callback
        if callback is not None:
            callback(data)

    def sensor_data(self, actor: Actor, frame: int, elapsed: float) -> SensorData:
        kind, attributes = actor.type_id, actor.attributes
        if kind.startswith("sensor.camera."):
            width, height = int(attributes["image_size_x"]), int(attributes["image_size_y"])
            bgra = np.zeros((height, width, 4), np.uint8)
            if kind == "sensor.camera.rgb":
                rgb = np.roll(self.camera_rgb, 8 * (frame % 100), axis=1)
                bgra[:, :, :3], bgra[:, :, 3] = rgb[:, :, ::-1], 255
            else:
                bgra[:, :, 2] = semantic_tags(width, height)
            return Image(frame, elapsed, bgra.tobytes(), width, height, float(attributes["fov"]))
        if kind == "sensor.lidar.ray_cast":
            raw = carla_lidar(self.lidar_points, intensity=float(frame))
            return LidarMeasurement(frame, elapsed, raw.tobytes())
        raw = carla_radar(self.radar_points, velocity=-float(frame))
        return RadarMeasurement(frame, elapsed, raw.tobytes())

    def join(self) -> None:
        for thread in self._threads:
            thread.join()


def semantic_tags(width: int, height: int) -> np.ndarray:
    """Sky over a building, road below, a car in the middle (CARLA 0.9.14+ tags)."""
    tags = np.full((height, width), 3, np.uint8)
    tags[: height // 3] = 11
    tags[2 * height // 3:] = 1
    tags[height // 2: 3 * height // 4, width // 3: 2 * width // 3] = 14
    return tags


def carla_lidar(points_ros: np.ndarray, intensity: float) -> np.ndarray:
    """CARLA's raw LiDAR rows: x, y (to the right), z, intensity float32."""
    rows = np.zeros((len(points_ros), 4), np.float32)
    rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3] = points_ros[:, 0], -points_ros[:, 1], points_ros[:, 2], intensity
    return rows


def carla_radar(points_ros: np.ndarray, velocity: float) -> np.ndarray:
    """CARLA's raw radar detections: velocity, azimuth (to the right), altitude, depth float32."""
    depth = np.linalg.norm(points_ros, axis=1)
    azimuth = -np.arctan2(points_ros[:, 1], points_ros[:, 0])
    altitude = np.arcsin(points_ros[:, 2] / depth)
    return np.stack([np.full_like(depth, velocity), azimuth, altitude, depth], axis=1).astype(np.float32)


def module() -> types.ModuleType:
    """This module, under the name `carla`."""
    return sys.modules[__name__]


def install(server: "Server | None", monkeypatch=None) -> types.ModuleType:
    """Make `import carla` give this stand-in, with `server` answering (None: no server)."""
    global SERVER
    SERVER = server
    if monkeypatch is not None:
        monkeypatch.setitem(sys.modules, "carla", module())
    else:
        sys.modules["carla"] = module()
    return module()


# The names the rig may use, per real client class (checked against the real `carla` when installed).
SURFACE = {
    "Client": Client, "World": World, "WorldSettings": WorldSettings, "WeatherParameters": WeatherParameters,
    "ColorConverter": ColorConverter, "ActorBlueprint": ActorBlueprint, "BlueprintLibrary": BlueprintLibrary,
    "Actor": Actor, "Vehicle": Vehicle, "ServerSideSensor": ServerSideSensor, "Image": Image,
    "LidarMeasurement": LidarMeasurement, "RadarMeasurement": RadarMeasurement, "Timestamp": Timestamp,
    "WorldSnapshot": WorldSnapshot, "Map": Map, "TrafficManager": TrafficManager, "Transform": Transform,
    "Location": Location, "Rotation": Rotation,
}
