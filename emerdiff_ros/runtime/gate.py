"""The newest frame waits, older ones are dropped; one worker thread processes at a capped rate."""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Generic, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


class LatestFrameGate(Generic[T]):
    """A one-slot mailbox. offer() never waits for processing: a newer item replaces the waiting one."""

    def __init__(self, max_rate_hz: float = 0.0, clock: Callable[[], float] = time.monotonic):
        self._cond = threading.Condition()
        self._pending: T | None = None
        self._pending_since = 0.0
        self._closed = False
        self._clock = clock
        self._last_start = float("-inf")
        self._min_interval = 0.0
        self.set_max_rate(max_rate_hz)
        self.offered = 0
        self.replaced = 0  # frames dropped because a newer one arrived first
        self.last_wait = 0.0  # seconds the item take() last handed over had waited in the slot

    def set_max_rate(self, max_rate_hz: float) -> None:
        """0 means no cap."""
        with self._cond:
            self._min_interval = 1.0 / max_rate_hz if max_rate_hz > 0 else 0.0
            self._cond.notify_all()

    def offer(self, item: T) -> T | None:
        """Wait with item; returns the item it replaced, if one was waiting."""
        with self._cond:
            replaced = self._pending
            if replaced is not None:
                self.replaced += 1
            self._pending, self._pending_since = item, self._clock()
            self.offered += 1
            self._cond.notify_all()
        return replaced

    def take(self, timeout: float | None = None) -> T | None:
        """The newest item once one is waiting and the rate cap allows, or None after timeout.

        After close() the waiting item, if any, is handed over at once, then None.
        """
        deadline = None if timeout is None else self._clock() + timeout
        with self._cond:
            while True:
                now = self._clock()
                ready_at = self._last_start + self._min_interval
                if self._pending is not None and (self._closed or now >= ready_at):
                    item, self._pending = self._pending, None
                    self._last_start = now
                    self.last_wait = now - self._pending_since
                    return item
                if self._closed or deadline is not None and now >= deadline:
                    return None
                waits = [deadline - now] if deadline is not None else []
                if self._pending is not None:
                    waits.append(ready_at - now)
                self._cond.wait(timeout=min(waits) if waits else None)

    @property
    def waiting(self) -> bool:
        """Whether an item waits to be taken."""
        with self._cond:
            return self._pending is not None

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """No more waiting: take() hands over what is left and then returns None."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def reopen(self) -> None:
        """Wait for items again (after close, for a new worker); the counts go on."""
        with self._cond:
            self._closed = False


class FrameWorker(Generic[T]):
    """The one thread that owns the GPU: takes the newest item, processes it, survives any error."""

    def __init__(self, gate: LatestFrameGate[T], process: Callable[[T], None],
                 on_error: Callable[[T, BaseException], None], name: str = "emerdiff-worker"):
        self._gate, self._process, self._on_error = gate, process, on_error
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the item in progress and the one waiting (up to timeout seconds), then end."""
        self._gate.close()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            item = self._gate.take(timeout=0.5)
            if item is None:
                if self._gate.closed:
                    return
                continue
            try:
                self._process(item)
            except Exception as exc:  # the worker must outlive any one frame
                self._on_error(item, exc)
