"""Segment the camera frames of a bag into a new rosbag2 holding the node's outputs.

Input: rosbag2 (sqlite3 or MCAP) or ROS 1, read with rosbags. Output: a new rosbag2 with every
input message (ROS 1 messages migrated to ROS 2 definitions by rosbags' converter) and, under the
node's topic names, the labels, overlay, matched and labelled clouds, made by the same runtime code
as the live node, with the same headers.

Three passes: index the stamps, segment the frames (each frame's labels and tracker state cached
on disk, which is what --resume continues from), write the output under a temporary name and
rename it at the end. The input is never written to.
"""

from __future__ import annotations

import bisect
import json
import logging
import os
import shutil
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
from rosbags.convert.converter import create_connections_converters
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import Writer
from rosbags.typesys import Stores, get_typestore
from tqdm import tqdm

from ..engine import Segmenter
from ..engine.config import CLASS_ID_METHODS
from ..engine.jobs import FrameRunner, SegmentJob, runner_for
from ..runtime.messages import MessageError, camera_from_info, cloud_from_msg, frame_rgb, stamp_ns
from ..runtime.counters import Count
from ..runtime.outputs import OUTPUTS, SENSORS, SensorCloud, output_topic
from ..runtime.pipeline import stable_labels
from ..runtime.projection import CameraModel
from ..runtime.settings import StreamSettings
from ..runtime.stamps import StampBuffer
from ..runtime.step import FrameStep
from ..runtime.tracker import LabelTracker
from ..scoring import BAG_CARLA_VERSION_KEY, BAG_LABEL_IDS_KEY, BAG_SMOKE_KEY, bag_custom_data, ids_value
from .bag_options import STORAGES, BagTopics
from .errors import BagError

log = logging.getLogger(__name__)
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")


@dataclass
class BagSummary:
    frames: int = 0  # images in the bag
    selected: int = 0  # images to segment (every Nth)
    segmented: int = 0  # segmented in this run
    from_cache: int = 0  # segmented by an interrupted run (--resume)
    bad_images: int = 0
    bad_clouds: int = 0
    labeled_clouds: int = 0
    counts: Counter = field(default_factory=Counter)  # what the frame step counted
    messages_copied: int = 0
    seconds: list[float] = field(default_factory=list)
    smoke_note: str | None = None

    def lines(self, out: Path) -> list[str]:
        lines = [f"frames: {self.frames} in the bag, {self.selected} selected, {self.segmented} segmented now, "
                 f"{self.from_cache} from the interrupted run, {self.bad_images} bad",
                 f"clouds: {self.labeled_clouds} labelled, unmatched lidar {self.counts[Count.UNMATCHED_LIDAR]}, "
                 f"radar {self.counts[Count.UNMATCHED_RADAR]}, bad {self.bad_clouds}",
                 f"messages copied: {self.messages_copied}"]
        if self.seconds:
            lines.append(f"seconds per frame: {np.mean(self.seconds):.2f}")
        if self.smoke_note:
            lines.append(self.smoke_note)
        return lines + [f"wrote {out}"]


@dataclass
class _Index:
    image_stamps: list[int]
    camera_stamps: list[int]  # sorted
    cameras: list[CameraModel]  # in the order of camera_stamps
    matches: dict[tuple[str, int], list[int]]  # (sensor, cloud ordinal) -> frame ordinals it matches


def work_dir(dst: Path) -> Path:
    return dst.parent / f".{dst.name}.partial"


def check_output(src: Path, dst: Path, resume: bool) -> None:
    """The checks that need no reading: run for every bag of a fleet before the first one starts."""
    if not src.exists():
        raise BagError(f"no such bag: {src}")
    if dst == src or src in dst.parents:
        raise BagError(f"the output {dst} must not be the input or inside it")
    if dst.exists():
        raise BagError(f"{dst} exists; emerdiff never overwrites a bag, choose another output")
    if work_dir(dst).exists() and not resume:
        raise BagError(f"an interrupted run left {work_dir(dst)}: pass --resume to finish it, or delete it")


def segment_bag(engine: Segmenter | FrameRunner, settings: StreamSettings, src: Path, dst: Path, *,
                topics: BagTopics = BagTopics(), every: int = 1, resume: bool = False, storage: str = "mcap",
                method: str = "emerdiff", progress: bool = True) -> BagSummary:
    """Segment src into the new bag dst, here (a Segmenter) or on a pool of workers (a runner): the
    bags are the same."""
    runner = runner_for(engine)
    ids_consistent = settings.track_labels or method in CLASS_ID_METHODS  # tracked ids and classes are stable
    src, dst = src.resolve(), dst.resolve()
    if every < 1:
        raise BagError(f"--every must be at least 1, got {every}")
    check_output(src, dst, resume)
    work = work_dir(dst)
    job = {"src": str(src), "topics": asdict(topics), "every": every, "method": method,
           "config": runner.config.as_params(), "settings": {k: list(v) if isinstance(v, tuple) else v
                                                             for k, v in asdict(settings).items()}}
    if work.exists():
        if json.loads((work / "job.json").read_text()) != job:
            raise BagError(f"{work} belongs to a run with other inputs or parameters; delete it to start afresh")
    else:
        (work / "frames").mkdir(parents=True)
        (work / "job.json").write_text(json.dumps(job))

    summary = BagSummary(smoke_note=runner.smoke_note)
    with AnyReader([src]) as reader:
        _check_topics(reader, topics)
        index = _index(reader, topics, settings, every, summary)
        _segment(reader, topics, runner, settings, method, index, every, work, summary, progress)
        # Written inside the work folder under the final name, so the storage file inside it (and
        # metadata.yaml's reference to it) is <name>.mcap, not a hidden temporary name.
        writing = work / "output" / dst.name
        shutil.rmtree(writing, ignore_errors=True)
        _write(reader, topics, settings, index, every, work, writing, STORAGES[storage], summary, progress,
               bag_custom_data(src).get(BAG_CARLA_VERSION_KEY), ids_consistent)
    os.replace(writing, dst)
    shutil.rmtree(work)
    return summary


def fleet_outputs(sources: list[Path], out: Path) -> list[Path]:
    """Where each of several input bags goes: OUT/<the rosbag2 folder's name, or the ROS 1 file's stem>."""
    outputs: dict[Path, Path] = {}
    for src in sources:
        dst = out / (src.stem if src.is_file() else src.resolve().name)
        if dst in outputs:
            raise BagError(f"{outputs[dst]} and {src} would both be written to {dst}; segment them in two runs")
        outputs[dst] = src
    return list(outputs)


def segment_fleet(engine: Segmenter | FrameRunner, settings: StreamSettings, sources: list[Path], out: Path, *,
                  resume: bool = False, **options) -> Iterator[tuple[Path, Path, BagSummary | None]]:
    """Each input bag into OUT/<its name>, one after another on the same runner: (input, output, summary),
    the summary None for a bag written whole by an earlier run (--resume)."""
    outputs = fleet_outputs(sources, out)
    finished = {dst for dst in outputs if resume and dst.exists()}  # renamed into place only when whole
    for src, dst in zip(sources, outputs):
        if dst not in finished:
            check_output(src.resolve(), dst.resolve(), resume)
    out.mkdir(parents=True, exist_ok=True)
    for src, dst in zip(sources, outputs):
        if dst in finished:
            shutil.rmtree(work_dir(dst), ignore_errors=True)  # a run stopped between the rename and the clean-up
            yield src, dst, None
        else:
            yield src, dst, segment_bag(engine, settings, src, dst, resume=resume, **options)


def _check_topics(reader: AnyReader, topics: BagTopics) -> None:
    by_topic = {c.topic: c.msgtype for c in reader.connections}
    images = sorted(t for t, kind in by_topic.items() if kind in IMAGE_TYPES)
    if by_topic.get(topics.image) not in IMAGE_TYPES:
        raise BagError(f"no sensor_msgs/Image or CompressedImage topic {topics.image!r} in the bag; its image "
                       f"topics: {', '.join(images) or 'none'} (use --image-topic)")
    taken = sorted(t for t in by_topic if t in {output_topic(name) for name in OUTPUTS})
    if taken:
        raise BagError(f"the bag already has {', '.join(taken)}: it looks segmented already")


def _connections(reader: AnyReader, topic: str) -> list:
    return [c for c in reader.connections if c.topic == topic]


def _index(reader: AnyReader, topics: BagTopics, settings: StreamSettings, every: int,
           summary: BagSummary) -> _Index:
    """Stamps of frames, camera infos and clouds, and which cloud matches which selected frame."""
    image_conns = _connections(reader, topics.image)
    info_conns = _connections(reader, topics.camera_info)
    cloud_conns = {name: _connections(reader, getattr(topics, name)) for name in SENSORS}
    sensor_of = {c.id: name for name, conns in cloud_conns.items() for c in conns}
    image_stamps, cameras = [], []
    buffers = {name: StampBuffer(capacity=2**31, horizon_ns=2**62) for name in SENSORS}
    ordinals = dict.fromkeys(SENSORS, 0)
    wanted = image_conns + info_conns + [c for conns in cloud_conns.values() for c in conns]
    for conn, _, raw in reader.messages(connections=wanted):
        msg = reader.deserialize(raw, conn.msgtype)
        if conn in image_conns:
            image_stamps.append(stamp_ns(msg.header.stamp))
        elif conn in info_conns:
            if settings.camera_fov:  # the intrinsics come from the field of view: camera_info is not used
                continue
            try:
                cameras.append((stamp_ns(msg.header.stamp), camera_from_info(msg)))
            except MessageError as exc:
                log.warning("ignoring camera_info: %s", exc)
        else:
            name = sensor_of[conn.id]
            try:
                cloud_from_msg(msg)
                buffers[name].add(stamp_ns(msg.header.stamp), ordinals[name])
            except MessageError as exc:
                summary.bad_clouds += 1
                log.warning("skipping %s cloud: %s", name, exc)
            ordinals[name] += 1
    summary.frames = len(image_stamps)
    selected = range(0, len(image_stamps), every)
    summary.selected = len(selected)
    matches: dict[tuple[str, int], list[int]] = {}
    slop = int(settings.sync_slop * 1e9)
    for name in SENSORS:
        for i in selected:
            found = buffers[name].nearest(image_stamps[i], slop)
            if found is not None:
                matches.setdefault((name, found[1]), []).append(i)
    cameras.sort(key=lambda item: item[0])
    return _Index(image_stamps, [s for s, _ in cameras], [camera for _, camera in cameras], matches)


def _frame_file(work: Path, ordinal: int) -> Path:
    return work / "frames" / f"{ordinal:08d}.npz"


def _segment(reader, topics, runner: FrameRunner, settings: StreamSettings, method: str, index: _Index, every: int,
             work: Path, summary: BagSummary, progress: bool) -> None:
    """Segment every selected frame not cached yet; track and cache them in order, continuing the
    tracker where it stopped."""
    selected = range(0, len(index.image_stamps), every)
    done = [i for i in selected if _frame_file(work, i).exists()]
    summary.from_cache = len(done)
    if len(done) == len(selected):
        return
    tracker = LabelTracker(settings.track_smoothing)
    if done:
        with np.load(_frame_file(work, done[-1])) as cached:
            tracker.restore(cached["tracker"])

    def jobs():
        for ordinal, (conn, _, raw) in enumerate(reader.messages(connections=_connections(reader, topics.image))):
            if ordinal % every or _frame_file(work, ordinal).exists():
                continue
            try:
                rgb = frame_rgb(reader.deserialize(raw, conn.msgtype))
            except MessageError as exc:
                log.warning("skipping frame %d: %s", ordinal, exc)
                yield (ordinal, str(exc)), None
            else:
                yield (ordinal, None), SegmentJob(rgb, method)

    with tqdm(total=len(selected), initial=len(done), desc="segment", unit="frame", disable=not progress) as bar:
        for (ordinal, bad), segmentation in runner.run(jobs()):
            if segmentation is None:
                result = {"bad": bad}
            else:
                result = {"labels": stable_labels(tracker, segmentation, settings.track_labels)}
                summary.segmented += 1
                summary.seconds.append(segmentation.stats.seconds)
            partial = work / "frames" / f".{ordinal:08d}.npz"
            with open(partial, "wb") as f:  # written whole, then renamed: a crash never leaves half a frame
                np.savez(f, tracker=tracker.state(), **result)
            os.replace(partial, _frame_file(work, ordinal))
            bar.update()


@dataclass
class _Pending:
    """A selected frame whose outputs wait for the last of its inputs (its image and matched clouds)."""

    sensors: set[str]  # matched sensors not read yet
    header: object = None  # the camera frame's header, once its image is read
    rgb: np.ndarray | None = None
    clouds: dict[str, SensorCloud] = field(default_factory=dict)


def _write(reader, topics, settings, index: _Index, every: int, work: Path, out: Path, storage, summary, progress,
           carla_version: str | None, ids_consistent: bool):
    """Copy every message and add each frame's outputs (as the node makes them) after its last input."""
    store = get_typestore(Stores.ROS2_KILTED)
    step = FrameStep(settings)
    writer = Writer(out, version=9, storage_plugin=storage)
    writer.set_custom_data(BAG_LABEL_IDS_KEY, ids_value(ids_consistent))
    if summary.smoke_note:
        writer.set_custom_data(BAG_SMOKE_KEY, summary.smoke_note)
    if carla_version:  # what made the ground truth in the bag, so eval decodes it with the right numbering
        writer.set_custom_data(BAG_CARLA_VERSION_KEY, carla_version)
    writer.open()
    try:
        connmap, convmap = create_connections_converters(reader.connections, None, reader, writer)
        outputs = {name: writer.add_connection(output_topic(name), msgtype, typestore=store)
                   for name, msgtype in OUTPUTS.items()}
        image_ids = {c.id for c in _connections(reader, topics.image)}
        sensor_of = {c.id: name for name in SENSORS for c in _connections(reader, getattr(topics, name))}
        ordinals = {"image": 0, **dict.fromkeys(SENSORS, 0)}
        matched_sensors: dict[int, set[str]] = {}
        for (sensor, _), frames in index.matches.items():
            for i in frames:
                matched_sensors.setdefault(i, set()).add(sensor)
        pending: dict[int, _Pending] = {}
        bad_frames: set[int] = set()

        def frame(i: int) -> _Pending:
            return pending.setdefault(i, _Pending(set(matched_sensors.get(i, ()))))

        def emit_when_complete(i: int, timestamp: int) -> None:
            waiting = pending[i]
            if waiting.header is None or waiting.sensors:
                return
            del pending[i]
            with np.load(_frame_file(work, i)) as data:
                labels = data["labels"]
            stamp = stamp_ns(waiting.header.stamp)
            result = step(waiting.rgb, labels, waiting.clouds, _camera_for(index, stamp))
            for output in result.outputs:
                header = _header(store, stamp, output.frame_id or waiting.header.frame_id)
                msgtype = OUTPUTS[output.name]
                writer.write(outputs[output.name], timestamp,
                             store.serialize_cdr(_message(store, msgtype, output.layout, header), msgtype))
            summary.labeled_clouds += sum(output.name.endswith("/labeled") for output in result.outputs)
            summary.counts.update(result.counts)
            for problem in result.problems:
                log.warning("frame %d: %s", i, problem.message)

        for conn, timestamp, raw in tqdm(reader.messages(), total=reader.message_count, desc="write",
                                         unit="msg", disable=not progress, mininterval=1.0):
            writer.write(connmap[(conn.id, conn.owner)], timestamp, convmap[conn.msgtype](raw))
            summary.messages_copied += 1
            if conn.id in image_ids:
                i = ordinals["image"]
                ordinals["image"] += 1
                if i % every:
                    continue
                with np.load(_frame_file(work, i)) as data:
                    bad = "labels" not in data
                if bad:
                    summary.bad_images += 1
                    bad_frames.add(i)
                    pending.pop(i, None)
                    continue
                msg = reader.deserialize(raw, conn.msgtype)
                waiting = frame(i)
                waiting.header, waiting.rgb = msg.header, frame_rgb(msg)
                emit_when_complete(i, timestamp)
            elif conn.id in sensor_of:
                name = sensor_of[conn.id]
                j = ordinals[name]
                ordinals[name] += 1
                frames = index.matches.get((name, j), [])
                if not frames:
                    continue
                msg = reader.deserialize(raw, conn.msgtype)
                cloud = SensorCloud(cloud_from_msg(msg), msg.header.frame_id, bool(msg.is_dense))
                for i in frames:
                    if i in bad_frames:
                        continue
                    waiting = frame(i)
                    waiting.clouds[name] = cloud
                    waiting.sensors.discard(name)
                    emit_when_complete(i, timestamp)
    finally:
        writer.close()


def _camera_for(index: _Index, stamp: int) -> CameraModel | None:
    """The camera model of the latest camera_info at or before the frame (the first one if none is)."""
    if not index.cameras:
        return None
    return index.cameras[max(bisect.bisect_right(index.camera_stamps, stamp) - 1, 0)]


def _header(store, stamp: int, frame_id: str):
    sec, nanosec = divmod(stamp, 1_000_000_000)
    types = store.types
    return types["std_msgs/msg/Header"](stamp=types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec),
                                        frame_id=frame_id)


def _message(store, msgtype: str, layout: dict, header):
    """A rosbags message of a runtime layout (an Image or a PointCloud2)."""
    types = store.types
    layout = {**layout, "data": np.frombuffer(layout["data"], dtype=np.uint8)}
    if "fields" in layout:
        layout["fields"] = [types["sensor_msgs/msg/PointField"](name=n, offset=o, datatype=d, count=c)
                            for n, o, d, c in layout["fields"]]
    return types[msgtype](header=header, **layout)
