"""One segmented frame and its clouds to every output: the step the node and `emerdiff bag` share.

Each side decodes its messages, hands the step the frame, its labels, its matched clouds and the
camera_info it has, and publishes or writes what comes back. The camera model is chosen here
(camera_fov, else camera_info), the clouds are labelled here, and what happened is counted here, so
a live recording and a segmented bag hold the same bytes and report the same numbers.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Collection

import numpy as np

from .counters import Count
from ..rig import Rig
from .outputs import OUTPUTS, SENSORS, CameraView, Output, SensorCloud, frame_outputs
from .rigging import SINGLE, Rigging
from .projection import CameraModel
from .settings import StreamSettings

# Aspect ratios further apart than this mean the camera_info is of another camera or resolution: its
# intrinsics would be stretched unevenly onto the frame.
ASPECT_TOLERANCE = 0.01


@dataclass(frozen=True)
class Problem:
    """Something a user should hear about: counted in `count`, logged (throttled) under `kind`."""

    count: Count
    kind: str  # the input and reason, for throttling: one flood never hides another reason
    message: str


@dataclass
class StepResult:
    outputs: list[Output]
    counts: Counter = field(default_factory=Counter)  # Count -> how many, problems' counts included
    problems: list[Problem] = field(default_factory=list)

    def add(self, problem: Problem) -> None:
        self.counts[problem.count] += 1
        self.problems.append(problem)


class FrameStep:
    """Outputs of one segmented frame (one camera's, or a surround frame's), as the node publishes them and
    the bag tool writes them."""

    def __init__(self, settings: StreamSettings, rig: Rig | None = None):
        self.settings = settings
        self.rigging = Rigging.of(settings, rig)

    def camera(self, name: str, width: int, height: int, camera_info: CameraModel | None) -> CameraModel | None:
        """A camera's model for a frame of this size: from its field of view when one is set (camera_fov, or
        the rig's with fov_from_rig: CARLA's own camera_info is wrong), else its camera_info's, else none."""
        fov = self.rigging.fovs.get(name)
        return CameraModel.from_fov(width, height, fov) if fov else camera_info

    def __call__(self, rgb: np.ndarray | None, labels: np.ndarray, clouds: dict[str, SensorCloud],
                 camera_info: CameraModel | None, wanted: Collection[str] = tuple(OUTPUTS)) -> StepResult:
        """The single camera's frame."""
        return self.surround({SINGLE: (rgb, labels)}, clouds, {SINGLE: camera_info}, wanted)

    def surround(self, frames: dict[str, tuple[np.ndarray | None, np.ndarray]], clouds: dict[str, SensorCloud],
                 camera_infos: dict[str, CameraModel | None], wanted: Collection[str]) -> StepResult:
        """A frame of several cameras (those that sent one): camera -> (rgb, labels), and their camera_info."""
        views = {}
        for name, (rgb, labels) in frames.items():
            height, width = labels.shape
            views[name] = CameraView(rgb, labels, self.camera(name, width, height, camera_infos.get(name)))
        outputs, report = frame_outputs(views, clouds, self.rigging, self.settings, wanted)
        result = StepResult(outputs)
        for sensor in SENSORS:
            if sensor not in clouds:
                result.counts[Count.of("unmatched", sensor)] += 1
        for sensor, points in report.nan_points.items():
            result.counts[Count.of("nan_points", sensor)] += points
        for sensor, points in report.inf_points.items():
            result.counts[Count.of("inf_points", sensor)] += points
        for sensor, reason in report.failed.items():
            result.add(Problem(Count.CLOUD_ERRORS, f"error_{sensor}", f"no labelled {sensor} cloud for this frame: "
                                                                       f"{reason}"))
        for name in report.without_camera:
            message = (f"no {name}'s camera_info yet: clouds are not labelled by it (or set fov_from_rig)" if name
                       else "no camera_info yet: clouds are not labelled (or set camera_fov)")
            result.add(Problem(Count.CLOUDS_WITHOUT_CAMERA_INFO, f"without_camera:{name}", message))
        for name, view in views.items():
            if view.camera is camera_infos.get(name) and view.camera is not None and \
                    _aspects_differ(view.camera, *view.labels.shape[::-1]):
                height, width = view.labels.shape
                result.add(Problem(Count.MISMATCHED_CAMERA_INFO, f"camera_info_aspect:{name}",
                                   f"{name + ' ' if name else ''}camera_info is {view.camera.width}x"
                                   f"{view.camera.height} but frames are {width}x{height}: its intrinsics are scaled "
                                   "unevenly to fit (is it this camera's camera_info?)"))
        return result


def _aspects_differ(camera: CameraModel, width: int, height: int) -> bool:
    return abs(camera.width / camera.height - width / height) > ASPECT_TOLERANCE * width / height
