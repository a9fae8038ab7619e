"""`emerdiff eval --bag`: predictions and ground truth of a segmented bag, paired by header stamp."""

import numpy as np
import pytest
import yaml
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from emerdiff_ros.cli import main
from emerdiff_ros.scoring import BAG_CARLA_VERSION_KEY, BAG_LABEL_IDS_KEY, BAG_SMOKE_KEY
from tiny import flags

STORE = get_typestore(Stores.ROS2_KILTED)
GT = "/carla/ego_vehicle/semantic_segmentation_front/image"
LABELS = "/emerdiff/labels"
CAMERA = "/carla/ego_vehicle/rgb_front/image"
SKY, ROAD, CAR = (70, 130, 180), (128, 64, 128), (0, 0, 142)  # CARLA 0.9.14+ palette


def image_msg(pixels: np.ndarray, stamp: int, encoding: str):
    t = STORE.types
    sec, nanosec = divmod(stamp, 1_000_000_000)
    header = t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec),
                                      frame_id="ego_vehicle/camera")
    if encoding == "bgra8":  # as the CARLA bridge publishes colours
        pixels = np.concatenate([pixels[:, :, ::-1], np.full(pixels.shape[:2] + (1,), 255, np.uint8)], axis=2)
    data = np.ascontiguousarray(pixels).view(np.uint8).reshape(-1)
    step = pixels.shape[1] * (pixels.shape[2] if pixels.ndim == 3 else 1) * pixels.dtype.itemsize
    return t["sensor_msgs/msg/Image"](header=header, height=pixels.shape[0], width=pixels.shape[1], encoding=encoding,
                                      is_bigendian=0, step=step, data=data)


def write(path, messages, custom=None):
    """messages: (topic, pixels, stamp, encoding) in the order they are logged."""
    writer = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP)
    for key, value in (custom or {}).items():
        writer.set_custom_data(key, value)
    writer.open()
    conns = {}
    for i, (topic, pixels, stamp, encoding) in enumerate(messages):
        if topic not in conns:
            conns[topic] = writer.add_connection(topic, "sensor_msgs/msg/Image", typestore=STORE)
        writer.write(conns[topic], stamp + i, STORE.serialize_cdr(image_msg(pixels, stamp, encoding),
                                                                  "sensor_msgs/msg/Image"))
    writer.close()
    return path


def palette(*colours) -> np.ndarray:
    return np.array([list(colours)] * 2, np.uint8)


def stamp(i: int) -> int:
    return 1_000_000_000 * (100 + i) + 50_000_000 * i


def drive_bag(path, custom=None):
    """Frame 0 perfect, frame 1 with the clusters swapped; frame 2 has no labels, frame 3 no ground truth."""
    gt = palette(ROAD, ROAD, CAR, CAR)
    return write(path, [
        (GT, gt, stamp(0), "bgra8"), (LABELS, np.array([[0, 0, 1, 1]] * 2, np.uint8), stamp(0), "mono8"),
        (LABELS, np.array([[1, 1, 0, 0]] * 2, np.uint8), stamp(1), "mono8"),  # before its ground truth
        (GT, gt, stamp(1), "bgra8"), (GT, gt, stamp(2), "bgra8"),
        (LABELS, np.array([[0, 0, 0, 0]] * 2, np.uint8), stamp(3), "mono8"),
    ], custom)


def run_eval(bag, *extra):
    return main(["eval", "--bag", str(bag), "--gt-format", "carla-palette", "--carla-version", "0.9.15", *extra])


def test_frames_pair_by_stamp_and_missing_ones_are_reported(tmp_path, capsys):
    bag = drive_bag(tmp_path / "drive")
    with pytest.raises(SystemExit) as exit_:
        run_eval(bag)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "1 of 3 ground-truth frames" in err and "--allow-missing" in err
    assert run_eval(bag, "--allow-missing") == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert "skipped 1 ground-truth frames without a prediction: 102.100000000" in out
    assert "1 predictions have no ground truth at the same stamp" in out
    assert [line.split()[0] for line in out if line.startswith("10")] == ["100.000000000", "101.050000000"]
    assert out[-1] == "mIoU: 100.00 (per-image mean: cluster ids are not known to be consistent across frames)"


def test_the_bags_record_of_stable_ids_picks_the_headline(tmp_path, capsys):
    bag = drive_bag(tmp_path / "tracked", {BAG_LABEL_IDS_KEY: "consistent"})
    assert run_eval(bag, "--allow-missing") == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == (
        f"mIoU: 33.33 (whole-set matching: cluster ids are consistent across frames (tracked metadata "
        f"{BAG_LABEL_IDS_KEY}))")
    bag = drive_bag(tmp_path / "untracked", {BAG_LABEL_IDS_KEY: "per-frame"})
    assert run_eval(bag, "--allow-missing") == 0
    assert "(per-image mean: cluster ids are numbered per frame" in capsys.readouterr().out.strip().splitlines()[-1]


def test_raw_tags_and_sixteen_bit_labels(tmp_path, capsys):
    tags = np.zeros((2, 4, 3), np.uint8)
    tags[:, :, 0] = [[1, 1, 14, 14], [11, 11, 14, 14]]  # road, car, sky in the red channel
    labels = np.array([[7, 7, 300, 300], [9000, 9000, 300, 300]], np.uint16)
    bag = write(tmp_path / "tags", [(GT, tags, stamp(0), "bgra8"), (LABELS, labels, stamp(0), "mono16")])
    assert main(["eval", "--bag", str(bag), "--gt-format", "carla-tags-0.9.14", "--out", str(tmp_path / "r")]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("mIoU: 100.00")
    assert (tmp_path / "r" / "confusion.png").exists()


def test_bag_errors_are_one_line(tmp_path, capsys):
    bag = drive_bag(tmp_path / "drive")
    cases = [
        (["--gt-topic", "/semantic"], f"no sensor_msgs/Image topic /semantic in {bag}; its image topics: "
                                      f"{GT}, {LABELS} (use --gt-topic)"),
        (["--gt-format", "carla-tags-0.9.14"], f"{GT} at 100.000000000: carla-tags-0.9.14 labels carry the tag in "
                                               f"the red channel"),
    ]
    for extra, error in cases:
        with pytest.raises(SystemExit) as exit_:
            main(["eval", "--bag", str(bag), "--gt-format", "carla-palette-0.9.14", "--allow-missing", *extra])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and error in err and len(err.strip().splitlines()) == 1, err
    (tmp_path / "junk").mkdir()
    with pytest.raises(SystemExit):
        run_eval(tmp_path / "junk")
    assert "cannot read bag" in capsys.readouterr().err
    twice = write(tmp_path / "twice", [(GT, palette(ROAD), stamp(0), "bgra8"), (GT, palette(ROAD), stamp(0), "bgra8"),
                                       (LABELS, np.zeros((2, 1), np.uint8), stamp(0), "mono8")])
    with pytest.raises(SystemExit):
        run_eval(twice)
    assert "share the header stamp 100.000000000" in capsys.readouterr().err


FAST = [*flags(), "--method", "lowres"]


def camera_bag(path, rgb: np.ndarray, frames: int = 2):
    """A camera and the CARLA bridge's semantic camera (palette colours), the same stamp per tick, recorded
    from CARLA 0.9.15 (as carla_rig --record notes it)."""
    semantic = np.zeros_like(rgb)
    semantic[: rgb.shape[0] // 2], semantic[rgb.shape[0] // 2:] = SKY, ROAD
    semantic[400:500, 300:500] = CAR
    messages = []
    for i in range(frames):
        messages += [(CAMERA, np.roll(rgb, 8 * i, axis=1), stamp(i), "bgra8"), (GT, semantic, stamp(i), "bgra8")]
    return write(path, messages, {BAG_CARLA_VERSION_KEY: "0.9.15"})


@pytest.mark.parametrize("tracking, headline", [("--track-labels", "whole-set matching"),
                                                ("--no-track-labels", "per-image mean")])
def test_a_bag_segmented_by_emerdiff_bag_scores_with_its_record(tmp_path, carla_frame, capsys, tracking, headline):
    source = camera_bag(tmp_path / "in", carla_frame)
    out = tmp_path / "out"
    assert main(["bag", str(source), str(out), tracking, *FAST]) == 0
    # the storage file is named after the bag, not a hidden temporary name, and metadata.yaml says so
    assert sorted(p.name for p in out.iterdir()) == ["metadata.yaml", "out.mcap"]
    metadata = yaml.safe_load((out / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert metadata["relative_file_paths"] == ["out.mcap"] and metadata["files"][0]["path"] == "out.mcap"
    smoke = "SMOKE RUN: 'tiny-random' has random weights; the labels are meaningless"
    assert metadata["custom_data"] == {BAG_LABEL_IDS_KEY: "consistent" if tracking == "--track-labels" else "per-frame",
                                       BAG_SMOKE_KEY: smoke, BAG_CARLA_VERSION_KEY: "0.9.15"}
    capsys.readouterr()
    assert main(["eval", "--bag", str(out), "--gt-format", "carla-palette"]) == 0  # the release the bag records
    output = capsys.readouterr().out.strip().splitlines()
    assert f"({headline}: " in output[-1] and output[0] == output[-2] == smoke
    assert f"CARLA version 0.9.15 (recorded in out metadata {BAG_CARLA_VERSION_KEY})" in output
    assert sum(line.startswith("10") for line in output) == 2  # both frames paired


def test_the_carla_release_comes_from_the_bags_record_and_skipped_ground_truth_is_checked(tmp_path, capsys):
    bag = drive_bag(tmp_path / "drive", {BAG_CARLA_VERSION_KEY: "0.9.16"})
    assert main(["eval", "--bag", str(bag), "--gt-format", "carla-palette", "--allow-missing"]) == 0
    assert "ground truth: carla-palette-0.9.14" in capsys.readouterr().out
    gt = palette(ROAD, CAR)
    unknown = palette(ROAD, (1, 2, 3))  # a colour no palette has, in the frame without a prediction
    bag = write(tmp_path / "skipped", [(GT, gt, stamp(0), "bgra8"), (LABELS, np.zeros((2, 2), np.uint8), stamp(0),
                                                                       "mono8"), (GT, unknown, stamp(1), "bgra8")])
    with pytest.raises(SystemExit) as exit_:
        run_eval(bag, "--allow-missing")
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert f"{GT} at 101.050000000: colours carla-palette-0.9.14 does not know: (1, 2, 3)" in err
