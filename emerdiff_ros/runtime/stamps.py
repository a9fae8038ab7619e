"""Recent messages indexed by stamp, and arrival-rate meters."""

from __future__ import annotations

import bisect
import threading
import time
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class StampBuffer(Generic[T]):
    """The most recent items by stamp (nanoseconds), bounded by count and by age relative to the newest."""

    def __init__(self, capacity: int = 100, horizon_ns: int = 10_000_000_000):
        self._lock = threading.Lock()
        self._stamps: list[int] = []
        self._items: list[T] = []
        self.capacity, self.horizon_ns = capacity, horizon_ns

    def __len__(self) -> int:
        return len(self._stamps)

    def clear(self) -> None:
        with self._lock:
            self._stamps.clear()
            self._items.clear()

    def add(self, stamp_ns: int, item: T) -> None:
        with self._lock:
            at = bisect.bisect_right(self._stamps, stamp_ns)
            self._stamps.insert(at, stamp_ns)
            self._items.insert(at, item)
            oldest_kept = self._stamps[-1] - self.horizon_ns
            drop = max(len(self._stamps) - self.capacity, bisect.bisect_left(self._stamps, oldest_kept))
            del self._stamps[:drop], self._items[:drop]

    def nearest(self, stamp_ns: int, slop_ns: int) -> tuple[int, T] | None:
        """(stamp, item) nearest to stamp_ns within slop_ns, or None."""
        with self._lock:
            at = bisect.bisect_left(self._stamps, stamp_ns)
            candidates = [i for i in (at - 1, at) if 0 <= i < len(self._stamps)]
            if not candidates:
                return None
            best = min(candidates, key=lambda i: abs(self._stamps[i] - stamp_ns))
            if abs(self._stamps[best] - stamp_ns) > slop_ns:
                return None
            return self._stamps[best], self._items[best]


class RateMeter:
    """Events per second over a sliding window (thread-safe, bounded memory)."""

    def __init__(self, window_s: float = 5.0, clock=time.monotonic):
        self._lock = threading.Lock()
        self._times: deque[float] = deque()
        self._window, self._clock = window_s, clock

    def tick(self) -> None:
        with self._lock:
            now = self._clock()
            self._times.append(now)
            self._trim(now)

    def rate(self) -> float:
        with self._lock:
            now = self._clock()
            self._trim(now)
            return len(self._times) / self._window

    def _trim(self, now: float) -> None:
        while self._times and self._times[0] < now - self._window:
            self._times.popleft()
