"""Counters the node keeps, and the /diagnostics message built from them."""

from __future__ import annotations

import math
import threading
from collections import Counter
from dataclasses import dataclass, field

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from ..engine import FrameStats
from ..runtime.counters import FRAME_COUNTS, LIVE_COUNTS, SURROUND_COUNTS, CameraCount, Count
from ..runtime.livescore import LiveScore


@dataclass
class NodeHealth:
    """Everything /diagnostics reports; updated from callbacks and the worker (thread-safe)."""

    counts: Counter = field(default_factory=Counter)
    last_stats: FrameStats | None = None
    last_latency_s: float | None = None
    last_error: str | None = None
    # Seconds a frame waited for the worker, and the worker spent on it (segmenting and publishing).
    timings: dict[str, float] = field(default_factory=lambda: dict.fromkeys(
        ("wait_s", "max_wait_s", "worker_s", "max_worker_s"), 0.0))
    # surround: seconds per stage of each camera's last segmented frame
    camera_seconds: dict[str, dict[str, float]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, counter: Count, n: int = 1) -> None:
        with self.lock:
            self.counts[Count(counter).value] += n  # by its key: an enum member and its text are one counter

    def count_camera(self, camera: str, counter: CameraCount, n: int = 1) -> None:
        with self.lock:
            self.counts[counter.of(camera)] += n

    def camera_done(self, camera: str, stats: FrameStats) -> None:
        with self.lock:
            self.counts[CameraCount.SEGMENTED.of(camera)] += 1
            self.camera_seconds[camera] = {**stats.stage_seconds, "frame": stats.seconds}

    def frame_done(self, stats: FrameStats, latency_s: float | None, wait_s: float, worker_s: float) -> None:
        with self.lock:
            self.counts[Count.FRAMES_PROCESSED.value] += 1
            self.last_stats, self.last_latency_s = stats, latency_s
            self.timings.update(wait_s=wait_s, max_wait_s=max(self.timings["max_wait_s"], wait_s),
                                worker_s=worker_s, max_worker_s=max(self.timings["max_worker_s"], worker_s))
            self.last_error = None  # a frame went through: the failure is history (still counted)

    def failed(self, reason: str) -> None:
        with self.lock:
            self.counts[Count.PROCESSING_ERRORS.value] += 1
            self.last_error = reason


def diagnostics_message(health: NodeHealth, stamp, *, name: str, hardware_id: str, state: str, method: str,
                        input_rate: float, processed_rate: float, dropped: int, smoke_note: str | None,
                        live: dict[str, LiveScore] | None = None, cameras: tuple[str, ...] = ()) -> DiagnosticArray:
    """cameras: the surround cameras, each with its own counts and seconds per stage (none for one camera);
    live: each camera's live score ("" the single camera's)."""
    with health.lock:
        counts, stats, latency, error = dict(health.counts), health.last_stats, health.last_latency_s, health.last_error
        timings, camera_seconds = dict(health.timings), dict(health.camera_seconds)
    values = {
        "state": state,
        "method": method,
        "input_rate_hz": f"{input_rate:.2f}",
        "processed_rate_hz": f"{processed_rate:.2f}",
        "dropped_frames": str(dropped),
        "stamp_to_publish_latency_s": "" if latency is None else f"{latency:.3f}",
        **{key: f"{seconds:.3f}" for key, seconds in timings.items()},
    }
    for counter in FRAME_COUNTS + (SURROUND_COUNTS if cameras else ()):
        values[counter.value] = str(counts.get(counter.value, 0))
    for camera in cameras:
        values.update({counter.of(camera): str(counts.get(counter.of(camera), 0)) for counter in CameraCount})
        values.update({f"{camera}/seconds_{stage}": f"{s:.3f}" for stage, s in camera_seconds.get(camera, {}).items()})
    if stats is not None:
        values.update({f"seconds_{stage}": f"{s:.3f}" for stage, s in stats.stage_seconds.items()})
        values.update(seconds_per_frame=f"{stats.seconds:.3f}", unet_sample_evals=str(stats.unet_sample_evals),
                      sequential_unet_calls=str(stats.sequential_unet_calls), vae_decodes=str(stats.vae_decodes),
                      peak_memory_mb=f"{stats.peak_memory_mb:.0f}", masks=str(stats.masks))
    if state != "active":
        level, message = DiagnosticStatus.OK, f"{state}: not segmenting"
    elif error is not None:
        level, message = DiagnosticStatus.ERROR, f"last frame failed: {error}"
    elif smoke_note:
        level, message = DiagnosticStatus.WARN, smoke_note
    elif input_rate > 0 and processed_rate == 0 and counts.get("frames_processed", 0) == 0:
        level, message = DiagnosticStatus.WARN, "frames arrive but none has been segmented yet"
    else:
        level, message = DiagnosticStatus.OK, "segmenting"
    status = DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id,
                              values=[KeyValue(key=k, value=v) for k, v in values.items()])
    array = DiagnosticArray(status=[status])
    for camera, score in (live or {}).items():
        title = f"{name.split(':')[0]}: live score" + (f" {camera}" if camera else "")
        array.status.append(_live_status(score, counts, name=title, hardware_id=hardware_id))
    array.header.stamp = stamp
    return array


def _live_status(live: LiveScore, counts: dict, *, name: str, hardware_id: str) -> DiagnosticStatus:
    values = {"ground_truth_format": live.fmt.name, "classes": str(len(live.fmt.classes)),
              "drive_protocol": live.protocol,
              **{key: "" if math.isnan(value) else f"{value:.2f}" for key, value in live.values().items()},
              **{counter.value: str(counts.get(counter.value, 0)) for counter in LIVE_COUNTS}}
    if counts.get("scored_frames", 0):
        level, message = DiagnosticStatus.OK, (f"drive mIoU {values['drive_miou']} % ({live.protocol}) over "
                                               f"{counts['scored_frames']} frames")
    elif counts.get("frames_processed", 0):
        level, message = DiagnosticStatus.WARN, "frames are segmented but none has been scored: no ground truth " \
                                                "matched (is the semantic camera publishing on `ground_truth`?)"
    else:
        level, message = DiagnosticStatus.OK, "waiting for frames"
    return DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id,
                            values=[KeyValue(key=k, value=v) for k, v in values.items()])
