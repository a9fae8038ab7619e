"""LiDAR and radar clouds kept by stamp for matching to camera frames, on a timeline that may jump.

Real drives break naive stamp buffers: a bag loops, /clock jumps back, the simulator restarts at 0,
or one sensor sends a stamp far off. All streams share one timeline, the newest stamp of any of
them. The camera is trusted: a frame stamped more than the horizon before the timeline means time
went back, and every buffer starts afresh. A cloud that far off the timeline (before it, or ahead
of it) is held back as an outlier: one bad stamp alone must not move the timeline, but a run of
clouds that agree with each other does (a jump the camera has not confirmed yet, or a camera that
has gone silent while the drive goes on). The frame being segmented holds on to its clouds, those
buffered when the worker took it and those of its tick that arrive while it is segmented, however
long that takes.
"""

from __future__ import annotations

import math
import threading
from enum import Enum
from typing import Generic, Iterable, TypeVar

from .stamps import StampBuffer

T = TypeVar("T")
# The buffers hold horizon x this many clouds per sensor: above any LiDAR or radar rate in use, and what
# bounds memory (horizon x rate x cloud size).
MAX_SENSOR_RATE_HZ = 100
# Clouds off the timeline that agree with each other: this many move it (two sensors' ticks and one more).
CONFIRMING_CLOUDS = 3


class Arrival(Enum):
    KEPT = "kept"
    TIME_JUMP = "time_jump"  # kept, after every buffer was emptied: time went back
    OUTLIER = "outlier"  # held back: far before the timeline, until the camera or more clouds confirm the jump
    FUTURE = "future"  # held back: far ahead of the timeline, until more clouds confirm it
    STALE = "stale"  # rejected: from before time went back, still in flight
    UNSTAMPED = "unstamped"  # rejected: stamp 0 cannot be matched


def buffer_capacity(horizon_ns: int) -> int:
    return max(1, math.ceil(horizon_ns / 1e9 * MAX_SENSOR_RATE_HZ))


class CloudSync(Generic[T]):
    """Per-sensor stamp buffers on one shared timeline (thread-safe)."""

    def __init__(self, sensors: Iterable[str], horizon_ns: int):
        self._lock = threading.Lock()
        self._buffers: dict[str, StampBuffer[T]] = {name: StampBuffer(1, horizon_ns) for name in sensors}
        self._newest: int | None = None  # newest stamp on the timeline, any stream
        self._before_jump: int | None = None  # the newest stamp before time last went back
        self._outliers: list[tuple[str, int, T]] = []  # clouds off the timeline that agree with each other
        self._held: _Held | None = None  # the clouds of the frame in progress
        self.set_horizon(horizon_ns)

    def set_horizon(self, horizon_ns: int) -> None:
        with self._lock:
            self._horizon = horizon_ns
            for buffer in self._buffers.values():
                buffer.capacity, buffer.horizon_ns = buffer_capacity(horizon_ns), horizon_ns

    def frame(self, stamp_ns: int) -> Arrival:
        """Note a camera frame's stamp: the camera sets the timeline."""
        if stamp_ns == 0:
            return Arrival.UNSTAMPED
        with self._lock:
            if self._stale(stamp_ns):
                return Arrival.STALE
            jumped = self._jumps_back(stamp_ns)
            if jumped:
                self._restart(stamp_ns)
            self._newest = stamp_ns if self._newest is None else max(self._newest, stamp_ns)
            self._admit_outliers_on_timeline()
        return Arrival.TIME_JUMP if jumped else Arrival.KEPT

    def add(self, sensor: str, stamp_ns: int, item: T) -> Arrival:
        if stamp_ns == 0:
            return Arrival.UNSTAMPED
        with self._lock:
            if self._stale(stamp_ns):
                return Arrival.STALE
            if self._newest is not None and not self._on_timeline(stamp_ns):
                return self._outlier(sensor, stamp_ns, item)
            self._keep(sensor, stamp_ns, item)
        return Arrival.KEPT

    def hold(self, stamp_ns: int, slop_ns: int) -> None:
        """Start holding the clouds nearest a frame's stamp (within slop): it is being segmented."""
        with self._lock:
            self._held = _Held(stamp_ns, slop_ns)
            for sensor, buffer in self._buffers.items():
                nearest = buffer.nearest(stamp_ns, slop_ns)
                if nearest is not None:
                    self._held.offer(sensor, *nearest)

    def release(self) -> dict[str, T]:
        """The held frame's cloud for each sensor that has one; holding stops."""
        with self._lock:
            held, self._held = self._held, None
        return {} if held is None else {sensor: item for sensor, (_, item) in held.found.items()}

    def __len__(self) -> int:
        return sum(len(buffer) for buffer in self._buffers.values())

    def _on_timeline(self, stamp_ns: int) -> bool:
        return self._newest - self._horizon <= stamp_ns <= self._newest + self._horizon

    def _jumps_back(self, stamp_ns: int) -> bool:
        return self._newest is not None and stamp_ns < self._newest - self._horizon

    def _keep(self, sensor: str, stamp_ns: int, item: T) -> None:
        self._newest = stamp_ns if self._newest is None else max(self._newest, stamp_ns)
        self._buffers[sensor].add(stamp_ns, item)
        if self._held is not None:
            self._held.offer(sensor, stamp_ns, item)

    def _outlier(self, sensor: str, stamp_ns: int, item: T) -> Arrival:
        """Hold back a cloud off the timeline; a run of them that agree moves the timeline to them."""
        if self._outliers and abs(stamp_ns - self._outliers[0][1]) > self._horizon:
            self._outliers.clear()  # it does not agree with the earlier outliers: they were lone ones
        self._outliers.append((sensor, stamp_ns, item))
        if len(self._outliers) < CONFIRMING_CLOUDS:
            return Arrival.FUTURE if stamp_ns > self._newest + self._horizon else Arrival.OUTLIER
        confirmed, self._outliers = self._outliers, []
        jumped = self._jumps_back(stamp_ns)
        if jumped:
            self._restart(min(stamp for _, stamp, _ in confirmed))
        for args in confirmed:
            self._keep(*args)
        return Arrival.TIME_JUMP if jumped else Arrival.KEPT

    def _admit_outliers_on_timeline(self) -> None:
        """After the camera moved the timeline: the held-back clouds it reached are kept."""
        waiting, self._outliers = self._outliers, []
        for sensor, stamp, item in waiting:
            if self._on_timeline(stamp):
                self._keep(sensor, stamp, item)
            else:
                self._outliers.append((sensor, stamp, item))

    def _restart(self, stamp_ns: int) -> None:
        """Time went back to stamp_ns: every buffer empties."""
        for buffer in self._buffers.values():
            buffer.clear()
        self._before_jump, self._newest = self._newest, stamp_ns

    def _stale(self, stamp_ns: int) -> bool:
        """A message of the timeline time went back from, arriving late: it must not drag time forward again."""
        return (self._before_jump is not None and stamp_ns > self._newest + self._horizon
                and abs(stamp_ns - self._before_jump) <= self._horizon)


class _Held(Generic[T]):
    def __init__(self, stamp_ns: int, slop_ns: int):
        self.stamp, self.slop = stamp_ns, slop_ns
        self.found: dict[str, tuple[int, T]] = {}

    def offer(self, sensor: str, stamp_ns: int, item: T) -> None:
        gap = abs(stamp_ns - self.stamp)
        if gap <= self.slop and (sensor not in self.found or gap < abs(self.found[sensor][0] - self.stamp)):
            self.found[sensor] = (stamp_ns, item)


class FrameCompanions(Generic[T]):
    """Messages that each belong to one camera frame (the semantic camera's ground truth), kept only while
    their frame can still be segmented: a few recent ones, and those of the frames waiting or in progress.

    Unlike clouds, these are full images: a horizon's worth would cost hundreds of MB, and only the frames
    the worker takes need theirs.
    """

    RECENT = 8  # companions kept for frames not seen yet (a tick's messages come in any order)
    FRAMES = 3  # newest frames kept waiting for their companion

    def __init__(self, slop_ns: int):
        self._lock = threading.Lock()
        self.slop = slop_ns
        self._recent: list[tuple[int, T]] = []
        self._frames: dict[int, _Held] = {}  # frame stamp -> its companion so far, newest frames last
        self._held: _Held | None = None

    def frame(self, stamp_ns: int) -> None:
        """A camera frame was offered for segmentation."""
        with self._lock:
            slot = self._frames.pop(stamp_ns, None) or self._seeded(stamp_ns)
            self._frames[stamp_ns] = slot
            while len(self._frames) > self.FRAMES:
                del self._frames[next(iter(self._frames))]

    def add(self, stamp_ns: int, item: T) -> None:
        with self._lock:
            self._recent = [*self._recent[-(self.RECENT - 1):], (stamp_ns, item)]
            for slot in (*self._frames.values(), self._held):
                if slot is not None:
                    slot.offer("", stamp_ns, item)

    def hold(self, stamp_ns: int) -> None:
        """The worker took the frame: its companion, if any yet, and any that comes, stay until release()."""
        with self._lock:
            self._held = self._frames.pop(stamp_ns, None) or self._seeded(stamp_ns)

    def release(self) -> T | None:
        with self._lock:
            held, self._held = self._held, None
        found = None if held is None else held.found.get("")
        return None if found is None else found[1]

    def _seeded(self, stamp_ns: int) -> "_Held":
        slot = _Held(stamp_ns, self.slop)
        for stamp, item in self._recent:
            slot.offer("", stamp, item)
        return slot
