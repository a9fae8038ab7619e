"""Warnings throttled per kind: a flood of bad images must not hide the first bad cloud."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Callable


class KindThrottle:
    """Lets one message per kind through every period seconds and says how many were held back."""

    def __init__(self, period_s: float, clock: Callable[[], float] = time.monotonic):
        self._lock = threading.Lock()
        self._period, self._clock = period_s, clock
        self._last: dict[str, float] = {}
        self._held: Counter = Counter()

    def __call__(self, kind: str, message: str) -> str | None:
        """The message to log now (with a note of those held back), or None to stay quiet."""
        with self._lock:
            now = self._clock()
            if now - self._last.get(kind, float("-inf")) < self._period:
                self._held[kind] += 1
                return None
            self._last[kind] = now
            held = self._held.pop(kind, 0)
        return message + (f" ({held} more like it since the last report)" if held else "")
