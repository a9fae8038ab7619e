"""Segment the camera frames of a bag into a new rosbag2 holding the node's outputs.

Input: rosbag2 (sqlite3 or MCAP) or ROS 1, read with rosbags. Output: a new rosbag2 with every
input message (ROS 1 messages migrated to ROS 2 definitions by rosbags' converter) and, under the
node's topic names, the labels, overlay, matched and labelled clouds, made by the same runtime code
as the live node, with the same headers.

Surround (settings.cameras): a frame is a surround frame, the cameras' images of one stamp (within
sync_slop of its first), segmented as one job in one label space and tracked as one, as the node does.
Nothing in a bag comes late, so a surround frame lacks a camera only where the bag has no image of it
near that stamp: it is segmented with the cameras it has and counted as partial.

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
from ..engine.surround import SurroundJob
from ..runtime.messages import MessageError, camera_from_info, cloud_from_msg, frame_rgb, stamp_ns
from ..runtime.counters import Count
from ..runtime.outputs import SENSORS, SensorCloud, output_table, output_topic, whose
from ..runtime.pipeline import stable_surround_labels
from ..runtime.projection import CameraModel
from ..runtime.rigging import SINGLE, surround_rig
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
    frames: int = 0  # frames in the bag (surround frames in surround)
    selected: int = 0  # frames to segment (every Nth)
    segmented: int = 0  # segmented in this run
    from_cache: int = 0  # segmented by an interrupted run (--resume)
    bad_images: int = 0
    bad_clouds: int = 0
    labeled_clouds: int = 0
    counts: Counter = field(default_factory=Counter)  # what the frame step counted, and surround frames
    messages_copied: int = 0
    seconds: list[float] = field(default_factory=list)
    smoke_note: str | None = None

    def lines(self, out: Path) -> list[str]:
        lines = [f"frames: {self.frames} in the bag, {self.selected} selected, {self.segmented} segmented now, "
                 f"{self.from_cache} from the interrupted run, {self.bad_images} bad",
                 f"clouds: {self.labeled_clouds} labelled, unmatched lidar {self.counts[Count.UNMATCHED_LIDAR]}, "
                 f"radar {self.counts[Count.UNMATCHED_RADAR]}, bad {self.bad_clouds}",
                 f"messages copied: {self.messages_copied}"]
        if self.counts[Count.SURROUND_COMPLETE] or self.counts[Count.SURROUND_PARTIAL]:
            lines.append(f"surround frames: {self.counts[Count.SURROUND_COMPLETE]} complete, "
                         f"{self.counts[Count.SURROUND_PARTIAL]} partial (a camera without a usable image there)")
        if self.seconds:
            lines.append(f"seconds per frame: {np.mean(self.seconds):.2f}")
        if self.smoke_note:
            lines.append(self.smoke_note)
        return lines + [f"wrote {out}"]


@dataclass(frozen=True)
class _Frame:
    """A frame to segment: one image, or in surround the cameras' images of one stamp."""

    stamp: int  # its first image's: the clouds are matched to it
    images: dict[str, int]  # camera -> the ordinal of its image among that camera's images in the bag


@dataclass
class _Index:
    frames: list[_Frame]  # in the bag's order
    of_image: dict[tuple[str, int], int]  # (camera, image ordinal) -> the frame it is in
    camera_infos: dict[str, list[tuple[int, CameraModel]]]  # camera -> (stamp, model), by stamp
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
    step = FrameStep(settings, surround_rig(settings))
    with AnyReader([src]) as reader:
        _check_topics(reader, topics, settings.cameras)
        index = _index(reader, topics, step, every, summary)
        _segment(reader, topics, runner, step, method, index, every, work, summary, progress)
        # Written inside the work folder under the final name, so the storage file inside it (and
        # metadata.yaml's reference to it) is <name>.mcap, not a hidden temporary name.
        writing = work / "output" / dst.name
        shutil.rmtree(writing, ignore_errors=True)
        _write(reader, topics, step, index, every, work, writing, STORAGES[storage], summary, progress,
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


def _check_topics(reader: AnyReader, topics: BagTopics, cameras: tuple[str, ...]) -> None:
    by_topic = {c.topic: c.msgtype for c in reader.connections}
    images = sorted(t for t, kind in by_topic.items() if kind in IMAGE_TYPES)
    for camera, inputs in topics.cameras().items():
        if by_topic.get(inputs["image"]) not in IMAGE_TYPES:
            hint = f"camera {camera}'s topic in the rig" if camera else "use --image-topic"
            raise BagError(f"no sensor_msgs/Image or CompressedImage topic {inputs['image']!r} in the bag; its image "
                           f"topics: {', '.join(images) or 'none'} ({hint})")
    taken = sorted(t for t in by_topic if t in {output_topic(name) for name in output_table(cameras)})
    if taken:
        raise BagError(f"the bag already has {', '.join(taken)}: it looks segmented already")


def _connections(reader: AnyReader, topic: str) -> list:
    return [c for c in reader.connections if c.topic == topic]


def _camera_of(reader: AnyReader, topics: BagTopics, kind: str) -> dict[int, str]:
    """Connection id -> the camera whose `kind` input (image, camera_info) it carries."""
    return {c.id: camera for camera, inputs in topics.cameras().items() for c in _connections(reader, inputs[kind])}


def _index(reader: AnyReader, topics: BagTopics, step: FrameStep, every: int, summary: BagSummary) -> _Index:
    """Frames (surround: the cameras' images grouped by stamp), camera infos, and which cloud matches
    which selected frame."""
    image_of, info_of = _camera_of(reader, topics, "image"), _camera_of(reader, topics, "camera_info")
    sensor_of = {c.id: name for name in SENSORS for c in _connections(reader, getattr(topics, name))}
    images: list[tuple[int, str, int]] = []  # (stamp, camera, image ordinal), in the bag's order
    camera_infos: dict[str, list[tuple[int, CameraModel]]] = {camera: [] for camera in step.rigging.cameras}
    buffers = {name: StampBuffer(capacity=2**31, horizon_ns=2**62) for name in SENSORS}
    image_ordinals, ordinals = Counter(), dict.fromkeys(SENSORS, 0)
    wanted = {**image_of, **info_of, **sensor_of}
    for conn, _, raw in reader.messages(connections=[c for c in reader.connections if c.id in wanted]):
        msg = reader.deserialize(raw, conn.msgtype)
        if conn.id in image_of:
            camera = image_of[conn.id]
            images.append((stamp_ns(msg.header.stamp), camera, image_ordinals[camera]))
            image_ordinals[camera] += 1
        elif conn.id in info_of:
            camera = info_of[conn.id]
            if camera in step.rigging.fovs:  # the intrinsics come from the field of view: camera_info is not used
                continue
            try:
                camera_infos[camera].append((stamp_ns(msg.header.stamp), camera_from_info(msg)))
            except MessageError as exc:
                log.warning("ignoring %scamera_info: %s", whose(camera), exc)
        else:
            name = sensor_of[conn.id]
            try:
                cloud_from_msg(msg)
                buffers[name].add(stamp_ns(msg.header.stamp), ordinals[name])
            except MessageError as exc:
                summary.bad_clouds += 1
                log.warning("skipping %s cloud: %s", name, exc)
            ordinals[name] += 1
    frames = _frames(images, int(step.settings.sync_slop * 1e9))
    summary.frames = len(frames)
    selected = range(0, len(frames), every)
    summary.selected = len(selected)
    matches: dict[tuple[str, int], list[int]] = {}
    slop = int(step.settings.sync_slop * 1e9)
    for name in SENSORS:
        for i in selected:
            found = buffers[name].nearest(frames[i].stamp, slop)
            if found is not None:
                matches.setdefault((name, found[1]), []).append(i)
    for infos in camera_infos.values():
        infos.sort(key=lambda item: item[0])
    of_image = {(camera, ordinal): i for i, frame in enumerate(frames) for camera, ordinal in frame.images.items()}
    return _Index(frames, of_image, camera_infos, matches)


def _frames(images: list[tuple[int, str, int]], slop_ns: int) -> list[_Frame]:
    """The images grouped in the bag's order (as the node met them; a bag that loops keeps its loops apart):
    an image joins the latest frame when it is within sync_slop of that frame's stamp and that frame has no
    image of its camera yet (so one camera's images are each a frame of their own)."""
    frames: list[_Frame] = []
    for stamp, camera, ordinal in images:
        if frames and abs(stamp - frames[-1].stamp) <= slop_ns and camera not in frames[-1].images:
            frames[-1].images[camera] = ordinal
        else:
            frames.append(_Frame(stamp, {camera: ordinal}))
    return frames


def _frame_file(work: Path, ordinal: int) -> Path:
    return work / "frames" / f"{ordinal:08d}.npz"


def _labels_key(camera_index: int) -> str:
    """A camera's labels in a frame file, by its place in `cameras`."""
    return f"labels{camera_index}"


def _segment(reader, topics, runner: FrameRunner, step: FrameStep, method: str, index: _Index, every: int,
             work: Path, summary: BagSummary, progress: bool) -> None:
    """Segment every selected frame not cached yet; track and cache them in order, continuing the
    tracker where it stopped."""
    settings, cameras = step.settings, step.rigging.cameras
    selected = range(0, len(index.frames), every)
    done = [i for i in selected if _frame_file(work, i).exists()]
    summary.from_cache = len(done)
    if len(done) == len(selected):
        return
    tracker = LabelTracker(settings.track_smoothing)
    if done:
        with np.load(_frame_file(work, done[-1])) as cached:
            tracker.restore(cached["tracker"])

    with tqdm(total=len(selected), initial=len(done), desc="segment", unit="frame", disable=not progress) as bar:
        jobs = _jobs(reader, topics, index, [i for i in selected if i not in done], cameras, method)
        for (ordinal, segmented, bad), segmentation in runner.run(jobs):
            if segmentation is None:
                result = {"bad": bad}
            else:
                results = segmentation if step.rigging.surround else [segmentation]
                labels = stable_surround_labels(tracker, results, settings.track_labels)
                result = {_labels_key(cameras.index(camera)): frame_labels
                          for camera, frame_labels in zip(segmented, labels)}
                summary.segmented += 1
                summary.seconds.append(sum(one.stats.seconds for one in results))
            partial = work / "frames" / f".{ordinal:08d}.npz"
            with open(partial, "wb") as f:  # written whole, then renamed: a crash never leaves half a frame
                np.savez(f, tracker=tracker.state(), **result)
            os.replace(partial, _frame_file(work, ordinal))
            bar.update()


def _jobs(reader, topics: BagTopics, index: _Index, wanted: list[int], cameras: tuple[str, ...], method: str):
    """((frame ordinal, cameras segmented, why none was), job) of each wanted frame, in frame order: one
    image, or a surround frame's images as one job (the node segments them together), in the order of
    `cameras` as the node has them (k-means depends on the order of its samples). A frame waits here until
    the bag has given all its images, so a camera logged late costs memory, not the order."""
    image_of = _camera_of(reader, topics, "image")
    waiting = {i: dict.fromkeys(index.frames[i].images) for i in wanted}  # camera -> its RGB, or why not
    unread = {i: len(index.frames[i].images) for i in wanted}
    next_wanted = iter(wanted)
    ordinals = Counter()
    ahead = next(next_wanted, None)
    for conn, _, raw in reader.messages(connections=[c for c in reader.connections if c.id in image_of]):
        camera = image_of[conn.id]
        i = index.of_image[(camera, ordinals[camera])]
        ordinals[camera] += 1
        if i not in waiting:
            continue
        try:
            waiting[i][camera] = frame_rgb(reader.deserialize(raw, conn.msgtype))
        except MessageError as exc:
            log.warning("skipping %simage of frame %d: %s", whose(camera), i, exc)
            waiting[i][camera] = str(exc)
        unread[i] -= 1
        while ahead is not None and not unread[ahead]:
            images = waiting.pop(ahead)
            rgbs = {camera: images[camera] for camera in cameras
                    if camera in images and not isinstance(images[camera], str)}
            if rgbs:
                job = (SegmentJob(*rgbs.values(), method) if cameras == (SINGLE,)
                       else SurroundJob(tuple(rgbs.values()), method))
                yield (ahead, tuple(rgbs), None), job
            else:
                yield (ahead, (), "; ".join(images.values())), None
            ahead = next(next_wanted, None)


@dataclass
class _Pending:
    """A selected frame whose outputs wait for the last of its inputs (its images and matched clouds)."""

    labels: dict[str, np.ndarray]  # camera -> its labels, for the cameras segmented
    cameras: set[str]  # segmented cameras whose image is not read yet
    sensors: set[str]  # matched sensors not read yet
    headers: dict[str, object] = field(default_factory=dict)  # camera -> its image's header, once read
    rgbs: dict[str, np.ndarray] = field(default_factory=dict)
    clouds: dict[str, SensorCloud] = field(default_factory=dict)


def _write(reader, topics, step: FrameStep, index: _Index, every: int, work: Path, out: Path, storage, summary,
           progress, carla_version: str | None, ids_consistent: bool):
    """Copy every message and add each frame's outputs (as the node makes them) after its last input."""
    store = get_typestore(Stores.ROS2_KILTED)
    cameras, table = step.rigging.cameras, output_table(step.settings.cameras)
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
                   for name, msgtype in table.items()}
        image_of = _camera_of(reader, topics, "image")
        sensor_of = {c.id: name for name in SENSORS for c in _connections(reader, getattr(topics, name))}
        image_ordinals, ordinals = Counter(), dict.fromkeys(SENSORS, 0)
        matched_sensors: dict[int, set[str]] = {}
        for (sensor, _), frames in index.matches.items():
            for i in frames:
                matched_sensors.setdefault(i, set()).add(sensor)
        pending: dict[int, _Pending] = {}
        done_frames: set[int] = set()  # written, or without an image that could be segmented

        def frame(i: int) -> _Pending | None:
            """The frame's pending outputs; None for a frame written already or of which no image could be
            segmented (a bad image that comes after its frame's outputs changes nothing)."""
            if i not in pending and i not in done_frames:
                with np.load(_frame_file(work, i)) as data:
                    labels = {camera: data[_labels_key(k)] for k, camera in enumerate(cameras)
                              if _labels_key(k) in data}
                summary.bad_images += len(index.frames[i].images) - len(labels)
                if labels:
                    pending[i] = _Pending(labels, set(labels), set(matched_sensors.get(i, ())))
                else:
                    done_frames.add(i)
            return pending.get(i)

        def emit_when_complete(i: int, timestamp: int) -> None:
            waiting = pending[i]
            if waiting.cameras or waiting.sensors:
                return
            del pending[i]
            done_frames.add(i)
            infos = {camera: _camera_for(index, camera, stamp_ns(header.stamp))
                     for camera, header in waiting.headers.items()}
            result = step.surround({camera: (waiting.rgbs[camera], waiting.labels[camera]) for camera in cameras
                                    if camera in waiting.labels}, waiting.clouds, infos, table)
            for output in result.outputs:
                if output.frame_id is None:  # a camera's output: its image's header
                    camera_header = waiting.headers[output.camera]
                    header = _header(store, stamp_ns(camera_header.stamp), camera_header.frame_id)
                else:  # a cloud: the frame's stamp (its first image's) and the sensor's frame
                    header = _header(store, index.frames[i].stamp, output.frame_id)
                msgtype = table[output.name]
                writer.write(outputs[output.name], timestamp,
                             store.serialize_cdr(_message(store, msgtype, output.layout, header), msgtype))
            summary.labeled_clouds += sum(output.name.endswith("/labeled") for output in result.outputs)
            summary.counts.update(result.counts)
            if step.rigging.surround:
                complete = len(waiting.labels) == len(cameras)
                summary.counts[Count.SURROUND_COMPLETE if complete else Count.SURROUND_PARTIAL] += 1
            for problem in result.problems:
                log.warning("frame %d: %s", i, problem.message)

        for conn, timestamp, raw in tqdm(reader.messages(), total=reader.message_count, desc="write",
                                         unit="msg", disable=not progress, mininterval=1.0):
            writer.write(connmap[(conn.id, conn.owner)], timestamp, convmap[conn.msgtype](raw))
            summary.messages_copied += 1
            if conn.id in image_of:
                camera = image_of[conn.id]
                i = index.of_image[(camera, image_ordinals[camera])]
                image_ordinals[camera] += 1
                waiting = None if i % every else frame(i)
                if waiting is None or camera not in waiting.labels:
                    continue
                msg = reader.deserialize(raw, conn.msgtype)
                waiting.headers[camera], waiting.rgbs[camera] = msg.header, frame_rgb(msg)
                waiting.cameras.discard(camera)
                emit_when_complete(i, timestamp)
            elif conn.id in sensor_of:
                name = sensor_of[conn.id]
                j = ordinals[name]
                ordinals[name] += 1
                frames = [i for i in index.matches.get((name, j), []) if frame(i) is not None]
                if not frames:
                    continue
                msg = reader.deserialize(raw, conn.msgtype)
                cloud = SensorCloud(cloud_from_msg(msg), msg.header.frame_id, bool(msg.is_dense))
                for i in frames:
                    waiting = pending[i]
                    waiting.clouds[name] = cloud
                    waiting.sensors.discard(name)
                    emit_when_complete(i, timestamp)
    finally:
        writer.close()


def _camera_for(index: _Index, camera: str, stamp: int) -> CameraModel | None:
    """The camera's model of its latest camera_info at or before the frame (the first one if none is)."""
    infos = index.camera_infos[camera]
    if not infos:
        return None
    return infos[max(bisect.bisect_right(infos, stamp, key=lambda item: item[0]) - 1, 0)][1]


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
