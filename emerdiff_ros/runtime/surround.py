"""Surround frames: the cameras' frames of one stamp, gathered without letting a silent camera stall the rest.

A surround frame is the frames of one stamp, within sync_slop of the first frame's (CARLA's synchronous
mode gives them one stamp). It goes out as soon as every camera has sent its frame, or after
surround_timeout with the cameras it has: a camera missing then counts as silent and is not waited for
until it sends again, so a dead camera costs the others one timeout, not one per frame. A newer surround
frame that goes out gives up the older ones still gathering (their frames count as dropped), and a frame
whose surround frame already went out comes too late. Stamps before the last surround frame's (a bag that
loops, a simulator restart) start surround frames of their own, as one camera's frames are all segmented.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Generic, Sequence, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class SurroundFrame(Generic[T]):
    stamp: int  # ns: its first frame's, the one its clouds are matched to
    frames: dict[str, T]  # camera -> its frame, cameras in their configured order
    missing: tuple[str, ...] = ()  # cameras without a frame in it

    @property
    def complete(self) -> bool:
        return not self.missing


@dataclass
class Gathered(Generic[T]):
    """What one frame's arrival (or the passing of time) did."""

    ready: SurroundFrame[T] | None = None  # a surround frame to segment
    dropped: Counter = field(default_factory=Counter)  # camera -> frames given up with an older surround frame
    late: bool = False  # the frame's surround frame had gone out already: dropped
    returned: bool = False  # the frame's camera was silent: it is waited for again from the next surround frame
    silenced: tuple[str, ...] = ()  # cameras that just timed out: not waited for until they send again


@dataclass
class _Forming(Generic[T]):
    stamp: int
    opened: float  # clock() when its first frame came
    frames: dict[str, T] = field(default_factory=dict)


class SurroundGatherer(Generic[T]):
    """Gathers the cameras' frames into surround frames (thread-safe)."""

    def __init__(self, cameras: Sequence[str], slop_ns: int, timeout_s: float,
                 clock: Callable[[], float] = time.monotonic):
        self.cameras = tuple(cameras)
        self.slop_ns, self.timeout_s = slop_ns, timeout_s
        self._clock = clock
        self._lock = threading.Lock()
        self._forming: list[_Forming[T]] = []  # in the order they opened: after a loop, stamps are not
        self._silent: set[str] = set()
        self._last_out: int | None = None  # stamp of the last surround frame that went out

    @property
    def silent(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._silent)

    def add(self, camera: str, stamp: int, frame: T) -> Gathered[T]:
        out: Gathered[T] = Gathered()
        with self._lock:
            out.returned = camera in self._silent
            self._silent.discard(camera)
            if self._last_out is not None and abs(stamp - self._last_out) <= self.slop_ns:
                out.late = True
                return out
            forming = next((f for f in self._forming if abs(stamp - f.stamp) <= self.slop_ns), None)
            if forming is None:
                forming = _Forming(stamp, self._clock())
                self._forming.append(forming)
            if camera in forming.frames:  # the same camera twice within sync_slop: the newer frame counts
                out.dropped[camera] += 1
            forming.frames[camera] = frame
            if set(self.cameras) - self._silent <= set(forming.frames):
                out.ready = self._send(forming, out)
        return out

    def poll(self) -> Gathered[T]:
        """Send the newest surround frame that has waited surround_timeout, with the cameras it has."""
        out: Gathered[T] = Gathered()
        with self._lock:
            now = self._clock()
            expired = [f for f in self._forming if now - f.opened >= self.timeout_s]
            if expired:
                newest = expired[-1]
                later = {camera for f in self._forming[self._forming.index(newest) + 1 :] for camera in f.frames}
                # A camera that sent a newer frame is behind, not silent.
                missing = [camera for camera in self.cameras if camera not in newest.frames and camera not in later]
                out.silenced = tuple(camera for camera in missing if camera not in self._silent)
                self._silent.update(missing)
                out.ready = self._send(newest, out)
        return out

    def flush(self) -> Gathered[T]:
        """No more frames will come (the node stops): send the newest surround frame still gathering, with
        the cameras it has, so no frame accepted is lost without a word."""
        out: Gathered[T] = Gathered()
        with self._lock:
            if self._forming:
                out.ready = self._send(self._forming[-1], out)
        return out

    def _send(self, forming: _Forming[T], out: Gathered[T]) -> SurroundFrame[T]:
        """Take it, and give up every surround frame that opened before it and is still gathering."""
        index = self._forming.index(forming)
        for older in self._forming[:index]:
            out.dropped.update(older.frames.keys())
        del self._forming[: index + 1]
        self._last_out = forming.stamp
        frames = {camera: forming.frames[camera] for camera in self.cameras if camera in forming.frames}
        return SurroundFrame(forming.stamp, frames, tuple(c for c in self.cameras if c not in forming.frames))
