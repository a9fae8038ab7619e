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
from .outputs import OUTPUTS, SENSORS, Output, SensorCloud, frame_outputs
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
    """Outputs of one segmented frame, as the node publishes them and the bag tool writes them."""

    def __init__(self, settings: StreamSettings):
        self.settings = settings

    def camera(self, width: int, height: int, camera_info: CameraModel | None) -> CameraModel | None:
        """The camera model for a frame of this size: from camera_fov when set (CARLA's own camera_info is
        wrong), else camera_info's, else none."""
        if self.settings.camera_fov:
            return CameraModel.from_fov(width, height, self.settings.camera_fov)
        return camera_info

    def __call__(self, rgb: np.ndarray | None, labels: np.ndarray, clouds: dict[str, SensorCloud],
                 camera_info: CameraModel | None, wanted: Collection[str] = tuple(OUTPUTS)) -> StepResult:
        height, width = labels.shape
        camera = self.camera(width, height, camera_info)
        outputs, report = frame_outputs(rgb, labels, clouds, camera, self.settings, wanted)
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
        if report.without_camera:
            result.add(Problem(Count.CLOUDS_WITHOUT_CAMERA_INFO, "without_camera",
                               "no camera_info yet: clouds are not labelled (or set camera_fov)"))
        if camera is camera_info and camera is not None and _aspects_differ(camera, width, height):
            result.add(Problem(Count.MISMATCHED_CAMERA_INFO, "camera_info_aspect",
                               f"camera_info is {camera.width}x{camera.height} but frames are {width}x{height}: its "
                               "intrinsics are scaled unevenly to fit (is it this camera's camera_info?)"))
        return result


def _aspects_differ(camera: CameraModel, width: int, height: int) -> bool:
    return abs(camera.width / camera.height - width / height) > ASPECT_TOLERANCE * width / height
