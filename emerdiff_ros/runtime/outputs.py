"""One segmented camera frame to every output, and the name of every input and output topic.

The node and `emerdiff bag` both turn a frame into outputs here, so a live recording and a
segmented bag hold the same messages. Outputs are plain layouts (see runtime.messages); each side
wraps them in its own message classes. Only the outputs asked for are computed (the node asks for
those with subscribers), and one sensor's trouble never costs another sensor or the frame its
outputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Collection, Sequence

import numpy as np

from .clouds import NO_LABEL, Cloud, CloudError
from .messages import cloud_layout, image_layout
from .palette import overlay, palette
from .projection import CameraModel, fused_labels, labels_and_offsets, project, sensor_to_optical
from .rigging import Rigging
from .settings import StreamSettings

NODE_NAME = "emerdiff"
SENSORS = ("lidar", "radar")
IMAGE = "sensor_msgs/msg/Image"
CLOUD = "sensor_msgs/msg/PointCloud2"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
# Input name (the topic the node subscribes to, relative: remap it) -> message type.
INPUTS: dict[str, str] = {
    "image": IMAGE,  # or sensor_msgs/CompressedImage on image/compressed with image_transport: compressed
    "camera_info": CAMERA_INFO,  # not subscribed to while camera_fov is set
    **{sensor: CLOUD for sensor in SENSORS},
    "ground_truth": IMAGE,  # the semantic camera, for live scoring only
}
LABELS, OVERLAY, PROJECTION = "labels", "overlay", "projection"
# Output name (the topic under the node's name) -> message type.
OUTPUTS: dict[str, str] = {
    LABELS: IMAGE,  # mono8/mono16 label values, the camera frame's header
    OVERLAY: IMAGE,  # rgb8: the frame blended with the label colours
    PROJECTION: IMAGE,  # rgb8: the clouds' points in their label colours over the frame (checks extrinsics)
    **{f"{sensor}/{kind}": CLOUD for sensor in SENSORS for kind in ("points", "labeled")},
}
# Surround (parameter `cameras`): these inputs and outputs exist once per camera, under its id.
CAMERA_INPUTS = ("image", "camera_info", "ground_truth")
CAMERA_OUTPUTS = (LABELS, OVERLAY, PROJECTION)


def camera_topic(camera: str, name: str) -> str:
    """One camera's input or output (a name of CAMERA_INPUTS or CAMERA_OUTPUTS): the name itself for the
    single camera (camera ""), `<camera>/<name>` in surround."""
    return f"{camera}/{name}" if camera else name


def whose(camera: str) -> str:
    """"rgb_left's " in a message about one of the surround cameras; nothing for the single camera."""
    return f"{camera}'s " if camera else ""


FLOAT = "std_msgs/msg/Float32"
# Live scoring against ground truth (only with ground_truth_format): percentages a plotting tool graphs.
SCORES: dict[str, str] = {f"score/{name}": FLOAT for name in ("frame_miou", "frame_pixel_accuracy", "drive_miou",
                                                                "drive_pixel_accuracy")}
POINT_RADIUS = {"lidar": 1, "radar": 3}  # pixels; radar detections are few and matter


def output_topic(name: str, namespace: str = "") -> str:
    """The absolute topic of an output of the node (default name) in a namespace."""
    prefix = "/" + namespace.strip("/") if namespace.strip("/") else ""
    return f"{prefix}/{NODE_NAME}/{name}"


@dataclass(frozen=True)
class SensorCloud:
    """A matched cloud and what its message said about itself."""

    cloud: Cloud
    frame_id: str
    is_dense: bool = False


@dataclass
class Output:
    name: str  # a key of the output table (output_table)
    layout: dict  # image_layout or cloud_layout fields
    frame_id: str | None = None  # None: the camera frame's; clouds keep their sensor's frame
    camera: str = ""  # whose frame's header a camera output carries (surround); "" for the single camera


@dataclass(frozen=True)
class CameraView:
    """One camera's part of a frame: what it saw (rgb may be None: no overlay then), its labels, and its
    camera model (None: no camera_info yet, its points are not labelled)."""

    rgb: np.ndarray | None
    labels: np.ndarray
    camera: CameraModel | None


@dataclass
class OutputReport:
    nan_points: dict[str, int] = field(default_factory=dict)
    inf_points: dict[str, int] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # sensor -> why its outputs are missing
    without_camera: list[str] = field(default_factory=list)  # cameras whose points are not labelled: no model


def output_table(cameras: Sequence[str] = ()) -> dict[str, str]:
    """Output name -> message type: OUTPUTS for the single camera; with cameras (surround) each camera's
    images under its id and the clouds once, labelled by every camera."""
    if not cameras:
        return OUTPUTS
    return {**{camera_topic(camera, name): OUTPUTS[name] for camera in cameras for name in CAMERA_OUTPUTS},
            **{name: kind for name, kind in OUTPUTS.items() if name not in CAMERA_OUTPUTS}}


def frame_outputs(views: dict[str, CameraView], clouds: dict[str, SensorCloud], rigging: Rigging,
                  settings: StreamSettings, wanted: Collection[str]) -> tuple[list[Output], OutputReport]:
    """The wanted outputs of one frame: each camera's labels, overlay and projection (these two need rgb),
    and for each matched cloud the cloud itself and the cloud with a `label` field (surround: and a
    `camera` field, the label taken from the camera where the point lands nearest the image centre)."""
    outputs, report = [], OutputReport()
    for camera, view in views.items():
        if camera_topic(camera, LABELS) in wanted:
            outputs.append(Output(camera_topic(camera, LABELS), image_layout(view.labels), camera=camera))
        if camera_topic(camera, OVERLAY) in wanted and view.rgb is not None:
            outputs.append(Output(camera_topic(camera, OVERLAY), image_layout(
                overlay(view.rgb, view.labels, settings.overlay_alpha)), camera=camera))
    projections = {camera: camera_topic(camera, PROJECTION) for camera, view in views.items()
                   if camera_topic(camera, PROJECTION) in wanted and view.rgb is not None and view.camera is not None}
    projected: dict[str, dict] = {camera: {} for camera in projections}
    for sensor, matched in clouds.items():
        if f"{sensor}/points" in wanted:
            outputs.append(Output(f"{sensor}/points", cloud_layout(matched.cloud, matched.is_dense), matched.frame_id))
        if f"{sensor}/labeled" not in wanted and not any(camera_topic(c, PROJECTION) in wanted for c in views):
            continue
        seen = [camera for camera, view in views.items() if view.camera is not None]
        report.without_camera = [camera for camera in views if camera not in seen]
        if not seen:
            continue
        try:
            matched.cloud.check()  # cheap; a cloud that skipped the input checks must not cost the frame
            xyz = matched.cloud.xyz()
            per_camera = {}
            for camera in seen:
                view = views[camera]
                to_optical = sensor_to_optical(rigging.poses[camera], rigging.poses[sensor])
                per_camera[camera] = labels_and_offsets(xyz, to_optical, view.camera, view.labels)
                if camera in projections:
                    projected[camera][sensor] = (xyz, to_optical, per_camera[camera][0])
            if f"{sensor}/labeled" in wanted:
                labeled = _labelled_cloud(matched.cloud, per_camera, rigging)  # every point kept: is_dense holds
                outputs.append(Output(f"{sensor}/labeled", cloud_layout(labeled, matched.is_dense), matched.frame_id))
        except CloudError as exc:  # one sensor's bad cloud must not cost the frame its other outputs
            report.failed[sensor] = str(exc)
            continue
        report.nan_points[sensor] = int(np.isnan(xyz).any(axis=1).sum())
        report.inf_points[sensor] = int(np.isinf(xyz).any(axis=1).sum())
    for camera, name in projections.items():
        view = views[camera]
        outputs.append(Output(name, image_layout(projection_image(view.rgb, view.labels, view.camera,
                                                                  projected[camera])), camera=camera))
    return outputs, report


def _labelled_cloud(cloud: Cloud, per_camera: dict[str, tuple[np.ndarray, np.ndarray]], rigging: Rigging) -> Cloud:
    """The cloud with each point's label; surround: also the index of the camera that gave it."""
    if not rigging.surround:
        (labels, _), = per_camera.values()
        return cloud.with_labels(labels)
    labels, cameras = fused_labels({rigging.cameras.index(camera): found for camera, found in per_camera.items()},
                                   cloud.size)
    return cloud.with_labels(labels, cameras)


def projection_image(rgb: np.ndarray, labels: np.ndarray, camera: CameraModel,
                     projected: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> np.ndarray:
    """The frame, dimmed, with each labelled point drawn in its label's colour where it projects.

    A wrong camera or sensor pose shows at once: points of the road land on cars, of cars on the sky.
    """
    height, width = labels.shape
    camera = camera.resized(width, height)
    image = (rgb.astype(np.uint16) * 2 // 5).astype(np.uint8)
    colours = palette(65536 if labels.dtype.itemsize > 1 else 256)
    for sensor, (xyz, to_optical, point_ids) in projected.items():
        pixels, inside = project(xyz, to_optical, camera)
        inside &= point_ids != NO_LABEL
        u, v, ids = pixels[inside, 0], pixels[inside, 1], point_ids[inside]
        radius = POINT_RADIUS.get(sensor, 1)
        for du in range(-radius, radius + 1):
            for dv in range(-radius, radius + 1):
                image[np.clip(v + dv, 0, height - 1), np.clip(u + du, 0, width - 1)] = colours[ids]
    return image
