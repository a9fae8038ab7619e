"""Scoring against ground truth: known answers, every encoding and CARLA version, errors instead of numbers."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from emerdiff_ros import scoring
from emerdiff_ros.cli import main
from emerdiff_ros.scoring import IGNORE, RunningScore, ScoringError, class_map_from_dict, ground_truth_format

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "labelled"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"the shared label sets are not at {SHARED}")
ABC = class_map_from_dict({"encoding": "id", "classes": {1: "a", 2: "b", 3: "c"}, "ignore": [0, 255]})


def frame_scores(pred, gt_values):
    return RunningScore(ABC).add(np.asarray(pred), ABC.decode(np.asarray(gt_values, np.uint8)))


# --- the arithmetic ----------------------------------------------------------------------------------


def test_perfect_and_permuted_predictions_score_one():
    gt = np.array([[1, 1, 2, 2], [3, 3, 3, 2]])
    assert frame_scores(gt - 1, gt).miou == 1.0
    permuted = np.choose(gt - 1, [7, 0, 4])  # class a -> cluster 7, b -> 0, c -> 4
    result = frame_scores(permuted, gt)
    assert result.miou == 1.0 and result.pixel_accuracy == 1.0
    assert result.matching == {7: "a", 0: "b", 4: "c"}


def test_merged_and_split_classes():
    merged = frame_scores(np.zeros((1, 4), int), [[1, 1, 1, 2]])  # a and b in one cluster
    assert merged.iou == {"a": 3 / 4, "b": 0.0} and merged.pixel_accuracy == 3 / 4
    split = frame_scores([[0, 0, 0, 1, 2, 2]], [[1, 1, 1, 1, 2, 2]])  # a split 3 + 1, cluster 1 unmatched
    assert split.iou == {"a": 3 / 4, "b": 1.0} and split.pixel_accuracy == 5 / 6


def test_ignored_values_do_not_count():
    result = frame_scores([[0, 0, 1, 1, 1]], [[1, 1, 0, 255, 2]])  # 0 and 255 are ignored values
    assert result.iou == {"a": 1.0, "b": 1.0} and result.pixel_accuracy == 1.0 and result.pixels == 3


def test_sixteen_bit_predictions_are_compacted_not_huge():
    gt = np.array([[1, 1, 2, 2, 3, 3]], np.uint8)
    pred = np.array([[65534, 65534, 40000, 40000, 0, 0]], np.uint16)
    table = scoring.confusion(pred, ABC.decode(gt), 3)
    assert table.counts.shape == (3, 3) and table.clusters.tolist() == [0, 40000, 65534]
    assert frame_scores(pred, gt).matching == {65534: "a", 40000: "b", 0: "c"}
    with pytest.raises(ScoringError, match="0-65535"):
        frame_scores(np.array([[-1, 0, 0, 0, 0, 0]]), gt)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_pixels_without_a_label_are_left_out_and_counted(dtype):
    # The no-label value is the label dtype's maximum: 255 in uint8 labels, 65535 in uint16 ones.
    missing = np.iinfo(dtype).max
    drive = RunningScore(ABC)
    result = drive.add(np.array([[0, 0, 1, missing, missing, missing]], dtype), ABC.decode(
        np.array([[1, 1, 2, 2, 3, 0]], np.uint8)))  # the last pixel is an ignored value anyway
    assert result.iou == {"a": 1.0, "b": 1.0} and result.pixels == 3
    assert drive.unlabelled_pixels == 2  # the two the ground truth would have scored


def test_three_protocols_known_answers():
    drive = RunningScore(ABC)
    drive.add(np.array([[0, 0, 1, 1]]), ABC.decode(np.array([[1, 1, 2, 2]], np.uint8)))  # perfect
    drive.add(np.ones((1, 8), int), ABC.decode(np.array([[1] * 5 + [2] * 3], np.uint8)))  # all in cluster 1
    p = drive.protocols()
    assert p["per-image"].miou == pytest.approx((1 + 5 / 8 / 2) / 2)
    assert p["per-image"].pixel_accuracy == pytest.approx((1 + 5 / 8) / 2)
    # DiffSeg: a has TP 2+5, FP 0+3; b has TP 2, FN 3
    assert p["diffseg"].iou == pytest.approx({"a": 0.7, "b": 0.4}) and p["diffseg"].pixel_accuracy == 9 / 12
    # whole set: cluster 0 = a:2, cluster 1 = a:5 b:5 -> 0-a, 1-b
    assert p["whole-set"].iou == pytest.approx({"a": 2 / 7, "b": 0.5}) and p["whole-set"].pixel_accuracy == 7 / 12
    assert drive.total().matching == {0: "a", 1: "b"}
    assert drive.headline(False).protocol == "per-image" and drive.headline(True).protocol == "whole-set"


def test_a_class_without_an_overlapping_cluster_counts_no_false_positives():
    """b and c share cluster 2; the class left over overlaps no cluster: nothing of clusters 0 or 1 is its FP."""
    gt = np.array([[1, 1, 1, 1, 2, 2, 3]], np.uint8)
    pred = np.array([[0, 0, 0, 1, 2, 2, 2]])
    drive = RunningScore(ABC)
    frame = drive.add(pred, ABC.decode(gt))
    assert frame.iou == {"a": 3 / 4, "b": 2 / 3, "c": 0.0} and frame.matching == {0: "a", 2: "b"}
    drive.add(np.array([[5, 5]]), ABC.decode(np.array([[3, 3]], np.uint8)))  # c found in the next frame
    # c: TP 2, FN 1, and no FP (cluster 1, which the solver paired with c in frame 1, holds a's pixel)
    assert drive.protocols()["diffseg"].iou == {"a": 3 / 4, "b": 2 / 3, "c": 2 / 3}


def random_drive(rng, frames: int = 6) -> list[tuple[np.ndarray, np.ndarray]]:
    """Frames whose clusters merge some classes and split others, so classes are left without a cluster."""
    drive = []
    for _ in range(frames):
        gt = rng.choice([0, 1, 2, 3], size=(12, 16), p=[0.1, 0.5, 0.25, 0.15]).astype(np.uint8)
        halves = rng.integers(0, 2, size=gt.shape)
        table = rng.integers(0, 5, size=(4, 2))  # (class value, half) -> cluster: few clusters, merges
        drive.append((table[gt, halves], gt))
    return drive


def renumbered(drive, rng) -> list[tuple[np.ndarray, np.ndarray]]:
    """The same clustering with each frame's cluster ids mapped one to one to other ids."""
    ids = rng.permutation(1000)
    return [(ids[pred], gt) for pred, gt in drive]


def all_protocols(drive) -> dict:
    running = RunningScore(ABC)
    for i, (pred, gt) in enumerate(drive):
        running.add(pred, ABC.decode(gt), str(i))
    return {name: (p.miou, p.pixel_accuracy, p.iou) for name, p in running.protocols().items()}


@pytest.mark.parametrize("seed", range(16))
def test_no_protocol_depends_on_how_clusters_are_numbered(seed):
    rng = np.random.default_rng(seed)
    drive = random_drive(rng)
    expected = all_protocols(drive)
    for _ in range(5):
        assert all_protocols(renumbered(drive, rng)) == expected


def test_ignore_mask_takes_the_hood_out():
    """A hood that is 'car' in the ground truth, and a cluster that is just the hood, inflate car IoU."""
    fmt = class_map_from_dict({"encoding": "id", "classes": {1: "road", 2: "car"}, "ignore": [0]})
    gt = np.ones((10, 10), np.uint8)
    gt[7:], gt[2:4, 2:4] = 2, 2  # hood rows 7-9 and a real car of 4 pixels
    pred = np.zeros((10, 10), int)
    pred[7:] = 1  # the cluster finds the hood, not the car
    hood = np.zeros((10, 10), bool)
    hood[7:] = True
    assert RunningScore(fmt).add(pred, fmt.decode(gt)).iou["car"] == pytest.approx(30 / 34)
    masked = RunningScore(fmt, ignore_mask=hood).add(pred, fmt.decode(gt))
    assert masked.iou["car"] == 0.0 and masked.pixels == 70
    with pytest.raises(ScoringError, match="ignore mask is 10x7"):
        RunningScore(fmt, ignore_mask=hood[:7]).add(pred, fmt.decode(gt))


# --- encodings and CARLA versions --------------------------------------------------------------------

CARLA_0_9_14 = ["road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
                "vegetation", "terrain", "sky", "pedestrian", "rider", "car", "truck", "bus", "train", "motorcycle",
                "bicycle", "static", "dynamic", "other", "water", "road line", "ground", "bridge", "rail track",
                "guard rail"]
CARLA_0_9_13 = ["building", "fence", "other", "pedestrian", "pole", "road line", "road", "sidewalk", "vegetation",
                "vehicle", "wall", "traffic sign", "sky", "ground", "bridge", "rail track", "guard rail",
                "traffic light", "static", "dynamic", "water", "terrain"]


def tags_image(tags: np.ndarray) -> np.ndarray:
    return np.stack([tags, np.zeros_like(tags), np.zeros_like(tags)], -1).astype(np.uint8)


def names(fmt, ids):
    return [fmt.classes[i] if i != IGNORE else None for i in np.ravel(ids)]


def test_carla_tags_follow_the_release():
    assert [scoring.carla_table(v) for v in ("0.8.4", "0.9.5", "0.9.6", "0.9.13", "0.9.14", "0.9.15", "0.9.16")] == \
        ["0.9.5", "0.9.5", "0.9.13", "0.9.13", "0.9.14", "0.9.14", "0.9.14"]
    with pytest.raises(ScoringError, match="carla-tags needs the CARLA release .*pass --carla-version"):
        ground_truth_format("carla-tags")  # no silent default: the numberings share values 0-12
    default = ground_truth_format("carla-tags", "0.9.16")  # the rig's CARLA 0.9.15/0.9.16
    assert default.name == "carla-tags-0.9.14" and list(default.classes) == CARLA_0_9_14
    assert list(ground_truth_format("carla-tags", "0.9.13").classes) == CARLA_0_9_13
    assert ground_truth_format("carla-tags", "0.8.4").classes == tuple(CARLA_0_9_13[:12])
    frame = tags_image(np.array([[14, 28, 11, 1, 0]]))  # 0.9.14: car, guard rail, sky, road, unlabeled
    assert names(default, default.decode(frame)) == ["car", "guard rail", "sky", "road", None]
    frame_0_9_13 = tags_image(np.array([[13, 22, 17, 10]]))
    assert names(ground_truth_format("carla-tags-0.9.13"), ground_truth_format("carla-tags-0.9.13").decode(
        frame_0_9_13)) == ["sky", "terrain", "guard rail", "vehicle"]
    with pytest.raises(ScoringError, match="0.9.5 does not know: 13"):  # 0.9.6+ tags in a 0.9.5 decode
        ground_truth_format("carla-tags-0.9.5").decode(frame_0_9_13)
    for bad in ("1.0", "0.9.x", "carla"):
        with pytest.raises(ScoringError, match="CARLA version"):
            ground_truth_format("carla-palette", bad)


def test_palette_and_tags_of_one_release_name_the_same_classes():
    for table in scoring.CARLA_TABLES:
        assert ground_truth_format(f"carla-palette-{table}").classes == ground_truth_format(
            f"carla-tags-{table}").classes, table


def test_a_0_9_14_frame_scores_cars_and_the_new_classes(tmp_path, capsys):
    tags = np.array([[1, 1, 14, 14, 11, 28]] * 2, np.uint8)  # road, car, sky, guard rail
    pred = np.array([[0, 0, 1, 1, 2, 3]] * 2, np.uint8)
    write_pair(tmp_path, "a", pred, tags_image(tags))
    assert main(["eval", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"), "--gt-format", "carla-tags",
                 "--carla-version", "0.9.16", "--out", str(tmp_path / "report")]) == 0
    out = capsys.readouterr().out
    assert "ground truth: carla-tags-0.9.14" in out and out.strip().splitlines()[-1].startswith("mIoU: 100.00")
    report = json.loads((tmp_path / "report" / "scores.json").read_text())
    assert set(report["class_pixels"]) == {"road", "car", "sky", "guard rail"}


def test_camvid_and_selma_ids_are_refused_as_cityscapes_and_read_with_their_maps():
    camvid = np.zeros((6, 10), np.uint8)  # sky, buildings, road; a fence, a car, a pedestrian
    camvid[:2], camvid[2:4], camvid[4:] = 0, 1, 3
    camvid[3, 0:3], camvid[5, 4:7], camvid[5, 8] = 7, 8, 9
    with pytest.raises(ScoringError, match=r"88% of the pixels are values cityscapes-ids does not score"):
        ground_truth_format("cityscapes-ids").decode(camvid)
    fmt = ground_truth_format("camvid-11")
    assert names(fmt, fmt.decode(camvid))[30:33] == ["fence"] * 3 and names(fmt, fmt.decode(camvid))[54] == "car"
    selma = np.array([[13, 13, 7, 7, 100, 100, 40, 6]], np.uint8)  # sky, road, car, person, road line
    with pytest.raises(ScoringError, match=r"100 \(25% .*40 \(12% .*the frame fits selma-ids"):
        ground_truth_format("cityscapes-ids").decode(selma)
    fmt = ground_truth_format("selma-ids")
    assert names(fmt, fmt.decode(selma)) == ["sky", "sky", "road", "road", "car", "car", "person", "road"]


def test_sixteen_bit_ground_truth_never_wraps():
    wide = np.array([[7 + 256, 7, 26, 26]], np.uint16)  # 263 became road through astype(uint8)
    with pytest.raises(ScoringError, match="263 .*16-bit"):
        ground_truth_format("cityscapes-ids").decode(wide)
    fmt = ground_truth_format("cityscapes-ids")
    assert names(fmt, fmt.decode(np.array([[7, 26]], np.uint16))) == ["road", "car"]


def test_photos_are_not_carla_tags(carla_frame):
    with pytest.raises(ScoringError, match="green or blue"):
        ground_truth_format("carla-tags", "0.9.15").decode(carla_frame)


def test_class_map_files(tmp_path):
    (tmp_path / "mine.yaml").write_text("encoding: colour\nclasses:\n  '#ff0000': car\n  0,255,0: tree\n"
                                        "  0 0 255: sky\nignore: ['0,0,0']\n")
    fmt = ground_truth_format(tmp_path / "mine.yaml")
    pixels = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [0, 0, 0]]], np.uint8)
    assert fmt.name == "mine" and names(fmt, fmt.decode(pixels)) == ["car", "tree", "sky", None]
    (tmp_path / "ids.json").write_text(json.dumps({"encoding": "id", "classes": {"1": "x", "2": "x", "5": "y"},
                                                   "ignore": [0]}))
    merged = ground_truth_format(tmp_path / "ids.json")
    assert merged.classes == ("x", "y") and names(merged, merged.decode(np.array([[1, 2, 5]], np.uint8))) == \
        ["x", "x", "y"]
    assert merged.ignoring(["y"]).classes == ("x",)
    for text, error in (("encoding: rgb\nclasses: {1: a}", "encoding must be"),
                        ("encoding: id\nclasses: {1: a}\nignored: [0]", "unknown field"),
                        ("encoding: colour\nclasses: {'300,0,0': a}", "not a colour"),
                        ("encoding: id\nclasses: {1: a}\nignore: [1]", "both named and ignored"),
                        ("encoding: id\nclasses: [a, b]", "classes must map"),
                        ("classes: {1: a\n", "not valid YAML")):
        (tmp_path / "bad.yaml").write_text(text)
        with pytest.raises(ScoringError, match=error):
            ground_truth_format(tmp_path / "bad.yaml")
    with pytest.raises(ScoringError, match="unknown ground-truth format 'kitti'"):
        ground_truth_format("kitti")


# --- `emerdiff eval` on folders ----------------------------------------------------------------------


def write_pair(folder: Path, name: str, pred: np.ndarray, gt: np.ndarray):
    (folder / "pred").mkdir(exist_ok=True)
    (folder / "gt").mkdir(exist_ok=True)
    Image.fromarray(pred).save(folder / "pred" / f"{name}_labels.png")
    Image.fromarray(gt.astype(np.uint8)).save(folder / "gt" / f"{name}.png")


def swapped_pair_set(folder: Path) -> None:
    tags = tags_image(np.array([[1, 1, 14, 14]]))
    write_pair(folder, "a", np.array([[0, 0, 1, 1]], np.uint8), tags)
    write_pair(folder, "b", np.array([[1, 1, 0, 0]], np.uint8), tags)  # the clusters swap meaning


def eval_args(folder: Path, *extra: str) -> list[str]:
    return ["eval", "--pred", str(folder / "pred"), "--gt", str(folder / "gt"), "--gt-format", "carla-tags",
            "--carla-version", "0.9.15", *extra]


def test_the_headline_follows_whether_ids_are_consistent(tmp_path, capsys):
    swapped_pair_set(tmp_path)
    assert main(eval_args(tmp_path)) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1] == "mIoU: 100.00 (per-image mean: cluster ids are not known to be consistent across frames)"
    assert any(line.startswith("whole-set     33.33") for line in out)
    assert any(line.startswith("diffseg      100.00") for line in out)
    scoring.write_segment_manifest(tmp_path / "pred", consistent=True)
    assert main(eval_args(tmp_path)) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith(
        "mIoU: 33.33 (whole-set matching: cluster ids are consistent across frames")
    scoring.write_segment_manifest(tmp_path / "pred", consistent=False)
    assert main(eval_args(tmp_path, "--consistent-ids")) == 0
    assert "(whole-set matching" in capsys.readouterr().out.strip().splitlines()[-1]


def test_running_score_gives_exactly_evals_numbers(tmp_path):
    """eval and live scoring share RunningScore: the same frames give the same numbers to the last bit."""
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        tags = rng.choice([0, 1, 2, 11, 14], size=(30, 40)).astype(np.uint8)
        write_pair(tmp_path, name, rng.integers(0, 6, size=(30, 40)).astype(np.uint8), tags_image(tags))
    assert main(eval_args(tmp_path, "--out", str(tmp_path / "report"))) == 0
    report = json.loads((tmp_path / "report" / "scores.json").read_text())
    fmt = ground_truth_format("carla-tags", "0.9.15")
    drive = RunningScore(fmt)
    for name in ("a", "b", "c"):
        frame = drive.add(np.array(Image.open(tmp_path / "pred" / f"{name}_labels.png")),
                          fmt.decode(scoring.read_label_image(tmp_path / "gt" / f"{name}.png", fmt.encoding)))
        assert report["per_image"][name] == {"miou": frame.miou, "pixel_accuracy": frame.pixel_accuracy,
                                             "iou": frame.iou}
    for name, p in drive.protocols().items():
        assert report["protocols"][name]["miou"] == p.miou and report["protocols"][name]["iou"] == p.iou
    assert report["protocols"]["whole-set"]["miou"] == drive.total().miou
    assert report["headline"] == "per-image" and report["miou"] == drive.protocols()["per-image"].miou


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_center_crop_labels_score_only_the_crop(tmp_path, capsys, dtype):
    # Labels as processing center_crop gives them for a 1024 x 256 frame: cluster ids in columns 384:640,
    # the no-label value around. Scored, they give exactly the numbers of the crop scored alone.
    rng = np.random.default_rng(0)
    tags = rng.choice([1, 2, 11, 14], size=(256, 1024)).astype(np.uint8)
    labels = np.full((256, 1024), np.iinfo(dtype).max, dtype)
    labels[:, 384:640] = (tags[:, 384:640] // 4 + rng.integers(0, 2, size=(256, 256))).astype(dtype)
    for which in ("full", "crop"):
        (tmp_path / which).mkdir()
    write_pair(tmp_path / "full", "f", labels, tags_image(tags))
    write_pair(tmp_path / "crop", "f", np.ascontiguousarray(labels[:, 384:640]), tags_image(tags[:, 384:640]))
    for which in ("full", "crop"):
        assert main(eval_args(tmp_path / which, "--out", str(tmp_path / which / "report"))) == 0
    lines = capsys.readouterr().out.splitlines()
    full, crop = (json.loads((tmp_path / w / "report" / "scores.json").read_text()) for w in ("full", "crop"))
    assert full["per_image"] == crop["per_image"] and full["protocols"] == crop["protocols"]
    assert full["class_pixels"] == crop["class_pixels"]
    assert (full["unlabelled_pixels"], crop["unlabelled_pixels"]) == (256 * 768, 0)
    assert ("left out: 196608 pixels without a label (the no-label value, e.g. outside a center_crop), "
            "75.0% of the pixels the ground truth scores") in lines


def test_missing_predictions_are_an_error_or_skipped(tmp_path, capsys):
    swapped_pair_set(tmp_path)
    (tmp_path / "pred" / "b_labels.png").unlink()
    with pytest.raises(SystemExit) as exit_:
        main(eval_args(tmp_path))
    assert exit_.value.code == 2 and "1 of 2 ground-truth images (b); pass --allow-missing" in capsys.readouterr().err
    assert main(eval_args(tmp_path, "--allow-missing", "--out", str(tmp_path / "report"))) == 0
    assert "skipped 1 ground-truth frames without a prediction: b" in capsys.readouterr().out
    report = json.loads((tmp_path / "report" / "scores.json").read_text())
    assert report["skipped_without_prediction"] == ["b"] and report["frames"] == 1


def test_predictions_of_another_size_are_refused_unless_resized(tmp_path, capsys):
    gt = np.ones((6, 8), np.uint8)
    gt[4:] = 14
    write_pair(tmp_path, "a", np.zeros((8, 6), np.uint8), tags_image(gt))  # transposed
    with pytest.raises(SystemExit):
        main(eval_args(tmp_path))
    assert "prediction is 6x8, ground truth 8x6 (width x height); pass --resize" in capsys.readouterr().err
    pred = np.zeros((3, 4), np.uint8)
    pred[2:] = 1  # half the size, the same layout
    Image.fromarray(pred).save(tmp_path / "pred" / "a_labels.png")
    assert main(eval_args(tmp_path, "--resize")) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("mIoU: 100.00")


def test_ignore_values_classes_and_mask_from_the_command_line(tmp_path, capsys):
    tags = np.array([[1, 1, 14, 11]] * 4, np.uint8)
    write_pair(tmp_path, "a", np.array([[0, 0, 1, 0]] * 4, np.uint8), tags_image(tags))
    assert main(eval_args(tmp_path)) == 0
    assert not capsys.readouterr().out.strip().splitlines()[-1].startswith("mIoU: 100.00")
    for ignored in ("sky", "11"):
        assert main(eval_args(tmp_path, "--ignore", ignored)) == 0
        assert capsys.readouterr().out.strip().splitlines()[-1].startswith("mIoU: 100.00")
    mask = np.zeros((4, 4), np.uint8)
    mask[:, 3] = 255
    Image.fromarray(mask).save(tmp_path / "hood.png")
    assert main(eval_args(tmp_path, "--ignore-mask", str(tmp_path / "hood.png"))) == 0
    out = capsys.readouterr().out
    assert "ignore mask" in out and out.strip().splitlines()[-1].startswith("mIoU: 100.00")


@needs_shared
def test_a_format_that_decodes_to_nothing_is_an_error_not_nan(tmp_path, capsys):
    folder = SHARED / "carla_lyft_samples"
    pred = tmp_path / "pred"
    pred.mkdir()
    for label in (folder / "labels").glob("*.png"):
        Image.fromarray(np.zeros((600, 800), np.uint8)).save(pred / label.name)
    with pytest.raises(SystemExit) as exit_:  # tags read as palette colours
        main(["eval", "--pred", str(pred), "--gt", str(folder / "labels"), "--gt-format", "carla-palette",
              "--carla-version", "0.9.15"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "colours carla-palette-0.9.14 does not know: (7, 0, 0)" in err
    assert len(err.strip().splitlines()) == 1 and "nan" not in err
    Image.fromarray(np.full((600, 800), 255, np.uint8)).save(tmp_path / "all.png")
    with pytest.raises(SystemExit):  # every pixel under the ignore mask
        main(["eval", "--pred", str(pred), "--gt", str(folder / "labels"), "--gt-format", "carla-tags-0.9.5",
              "--ignore-mask", str(tmp_path / "all.png")])
    assert "nothing to score" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # the photos passed as tags
        main(["eval", "--pred", str(pred), "--gt", str(folder / "images"), "--gt-format", "carla-tags-0.9.5"])
    assert "not a raw semantic image" in capsys.readouterr().err


# --- the shared label sets ----------------------------------------------------------------------------

# set -> its format (the palette set mixes CARLA releases: palette_format)
SHARED_SETS = {"carla_lyft_samples": "carla-tags-0.9.5", "real_kitti_semantics_cropped": "cityscapes-ids",
               "carla_cityscapes_palette": None}


def palette_format(stem: str):
    """nikos134 is CARLA 0.9.5; jonasdieker is 0.9.13 with moving cars painted (255, 0, 0) on top."""
    if stem.startswith("nikos134"):
        return ground_truth_format("carla-palette", "0.9.5"), "0.9.5"
    return ground_truth_format("carla-palette", "0.9.13").ignoring(["255,0,0"]), "0.9.13"


@needs_shared
@pytest.mark.parametrize("folder", sorted(SHARED_SETS))
def test_every_shared_label_set_decodes_to_the_right_names(folder):
    with open(SHARED / folder / "manifest.csv") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        if SHARED_SETS[folder]:
            fmt = ground_truth_format(SHARED_SETS[folder])
        else:
            fmt, version = palette_format(row["stem"])
        ids = fmt.decode(scoring.read_label_image(SHARED / folder / row["label"], fmt.encoding))
        assert ids.shape == (int(row["height"]), int(row["width"]))
        if folder == "carla_cityscapes_palette":  # the set's own palette inversion, in CARLA tag ids
            reference = np.array(Image.open(SHARED / folder / "labels_ids" / f"{row['stem']}.png"))
            tags = ground_truth_format(f"carla-tags-{version}")
        else:
            raw = scoring.read_label_image(SHARED / folder / row["label"], fmt.encoding)
            reference, tags = (raw[:, :, 0] if raw.ndim == 3 else raw), fmt
        expected = np.array([tags.named.get(int(v)) for v in range(256)], dtype=object)[reference]
        decoded = np.array(list(fmt.classes) + [None] * (256 - len(fmt.classes)), dtype=object)[ids]
        known = reference != 255
        assert (decoded[known] == expected[known]).all(), row["stem"]
        assert {int(v) for v in np.unique(reference)} <= {int(v) for v in row["label_values"].split()}


@needs_shared
def test_a_palette_of_another_release_is_named_in_the_error():
    label = SHARED / "carla_cityscapes_palette" / "labels" / "nikos134_town03_00183310.png"
    with pytest.raises(ScoringError, match=r"\(250, 170, 160\).*the frame fits carla-palette-0.9.5"):
        ground_truth_format("carla-palette", "0.9.15").decode(scoring.read_label_image(label, "colour"))


# --- a numbering that fits the values but misnames the classes ----------------------------------------

def carla_0_8_frame() -> np.ndarray:
    """A CARLA 0.8 driving frame's tags: sky unlabeled (0), buildings (1), road (7), sidewalk (8), a car (10),
    a pole (5), a sign (12). Every tag is valid in all three numberings."""
    tags = np.zeros((20, 20), np.uint8)
    tags[5:10], tags[10:], tags[10:, :3] = 1, 7, 8
    tags[12:16, 8:14], tags[6:10, 17], tags[5, 15:18] = 10, 5, 12
    return tags_image(tags)


def test_a_small_class_covering_a_fifth_of_a_frame_is_another_numbering():
    frame = carla_0_8_frame()
    with pytest.raises(ScoringError, match=r"traffic light would cover 36% of the frame under carla-tags-0.9.14.*"
                                           r"the frame fits carla-tags-0.9.13 and carla-tags-0.9.5$"):
        ground_truth_format("carla-tags", "0.9.15").decode(frame)
    fmt = ground_truth_format("carla-tags", "0.8.4")
    assert names(fmt, fmt.decode(frame))[10 * 20 + 5] == "road"
    assert fmt.ignoring(["road"]).decode(frame).shape == (20, 20)  # a class not scored is not checked


@needs_shared
@pytest.mark.parametrize("fmt", [["--gt-format", "carla-tags", "--carla-version", "0.9.14"],
                                 ["--gt-format", "carla-tags-0.9.14"]])
def test_carla_0_8_frames_scored_as_0_9_14_are_an_error_not_a_misnamed_table(tmp_path, capsys, fmt):
    folder = SHARED / "carla_lyft_samples"
    pred = tmp_path / "pred"
    pred.mkdir()
    for label in (folder / "labels").glob("*.png"):
        Image.fromarray(np.zeros((600, 800), np.uint8)).save(pred / label.name)
    with pytest.raises(SystemExit) as exit_:
        main(["eval", "--pred", str(pred), "--gt", str(folder / "labels"), *fmt])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and len(err.splitlines()) == 1
    assert "would cover" in err and err.endswith("the frame fits carla-tags-0.9.13 and carla-tags-0.9.5")


def test_carla_formats_take_the_release_the_frames_record_or_the_flag(tmp_path, capsys):
    write_pair(tmp_path, "a", np.array([[0, 0, 1, 1]], np.uint8), tags_image(np.array([[1, 1, 14, 14]])))
    bare = ["eval", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"), "--gt-format", "carla-tags"]
    with pytest.raises(SystemExit) as exit_:
        main(bare)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and len(err.strip().splitlines()) == 1 and "pass --carla-version" in err
    scoring.write_frames_manifest(tmp_path / "gt", "0.9.15")  # as carla_rig --save-frames writes it
    assert main(bare + ["--out", str(tmp_path / "report")]) == 0
    out = capsys.readouterr().out
    assert "ground truth: carla-tags-0.9.14" in out
    assert f"CARLA version 0.9.15 (recorded in {tmp_path / 'gt' / scoring.FRAMES_MANIFEST})" in out
    assert set(json.loads((tmp_path / "report" / "scores.json").read_text())["class_pixels"]) == {"road", "car"}
    with pytest.raises(SystemExit):
        main(bare + ["--carla-version", "0.9.13"])
    assert "--carla-version 0.9.13 numbers classes otherwise than CARLA 0.9.15" in capsys.readouterr().err


# --- id formats: void and numbering guards, CarlaScapes -------------------------------------------------

def camvid_frame() -> np.ndarray:
    camvid = np.zeros((10, 10), np.uint8)  # sky, trees, road, a car
    camvid[:3], camvid[3:5], camvid[5:], camvid[6:8, 2:5] = 0, 5, 3, 8
    return camvid


def test_camvid_labels_are_refused_as_selma_ids():
    with pytest.raises(ScoringError, match=r"% of the pixels are values selma-ids does not score.*fits camvid-11"):
        ground_truth_format("selma-ids").decode(camvid_frame())
    trees = camvid_frame()
    trees[:3] = 5  # mostly trees: little void left, but selma's 5 is a pole
    with pytest.raises(ScoringError, match=r"pole would cover 50% of the frame under selma-ids.*fits camvid-11"):
        ground_truth_format("selma-ids").decode(trees)


def test_carlascapes_label_ids_are_built_in_and_other_datasets_are_pointed_to_class_maps():
    ids = np.array([[11, 11, 11, 11], [1, 1, 24, 14], [1, 1, 28, 0]], np.uint8)  # sky, road, road line, car, rail
    fmt = ground_truth_format("carlascapes-ids")
    assert names(fmt, fmt.decode(ids)) == ["sky"] * 4 + ["road", "road", "road line", "car", "road", "road",
                                                          "guard rail", None]
    with pytest.raises(ScoringError, match="values cityscapes-ids does not score .*fits carlascapes-ids"):
        ground_truth_format("cityscapes-ids").decode(np.array([[1, 1, 2, 3, 3, 9, 11, 14]], np.uint8))
    with pytest.raises(ScoringError, match=r"does not know: 200 .*write a class map \(encoding: id.*--class-map"):
        ground_truth_format("carlascapes-ids").decode(np.array([[200, 200, 201, 1]], np.uint8))


# --- the report ------------------------------------------------------------------------------------------

def test_a_smoke_run_is_said_at_the_top_and_above_the_headline(tmp_path, capsys):
    swapped_pair_set(tmp_path)
    note = "SMOKE RUN: 'tiny-random' has random weights; the labels are meaningless"
    scoring.write_segment_manifest(tmp_path / "pred", consistent=False, smoke_run=note)  # as segment writes it
    assert main(eval_args(tmp_path, "--out", str(tmp_path / "report"))) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0] == note and out[-2] == note and out[-1].startswith("mIoU: ")
    assert json.loads((tmp_path / "report" / "scores.json").read_text())["smoke_run"] == note


def test_the_confusion_figure_shows_the_headlines_matching(tmp_path):
    from emerdiff_ros.tools.evaluate import confusion_view, evaluate_folders

    swapped_pair_set(tmp_path)  # road and car, the clusters swapping meaning between the frames
    fmt = ground_truth_format("carla-tags", "0.9.15")
    per_image = confusion_view(evaluate_folders(tmp_path / "pred", tmp_path / "gt", fmt))
    assert per_image.title.startswith("per-image matching: mIoU 100.00")
    assert per_image.classes == ["road", "car"] and per_image.columns == ["road", "car", "unmatched"]
    np.testing.assert_array_equal(per_image.matrix, [[1, 0, 0], [0, 1, 0]])
    whole = confusion_view(evaluate_folders(tmp_path / "pred", tmp_path / "gt", fmt, consistent_ids=True))
    assert whole.title.startswith("whole-set matching: mIoU 33.33") and whole.columns == ["0", "1"]
    np.testing.assert_array_equal(whole.matrix, [[0.5, 0.5], [0.5, 0.5]])


def test_consistent_ids_against_a_per_frame_record_is_warned_about(tmp_path, capsys):
    swapped_pair_set(tmp_path)
    scoring.write_segment_manifest(tmp_path / "pred", consistent=False)
    assert main(eval_args(tmp_path, "--consistent-ids")) == 0
    err = capsys.readouterr().err
    assert f"emerdiff eval: warning: --consistent-ids overrides {tmp_path / 'pred' / scoring.SEGMENT_MANIFEST}, " \
           f"which records per-frame cluster ids" in err
    assert main(eval_args(tmp_path)) == 0 and "warning" not in capsys.readouterr().err


def test_frames_without_a_scored_pixel_are_not_counted_as_scored(tmp_path, capsys):
    swapped_pair_set(tmp_path)
    write_pair(tmp_path, "c", np.array([[0, 0, 1, 1]], np.uint8), tags_image(np.zeros((1, 4), np.uint8)))
    assert main(eval_args(tmp_path, "--out", str(tmp_path / "report"))) == 0
    out = capsys.readouterr().out
    assert "; 2 frames scored" in out and "1 frames have no scored pixel (every pixel ignored), not counted: c" in out
    report = json.loads((tmp_path / "report" / "scores.json").read_text())
    assert report["scored_frames"] == 2 and report["frames_without_scored_pixels"] == ["c"]


def test_ground_truth_skipped_for_a_missing_prediction_is_still_checked(tmp_path, capsys):
    swapped_pair_set(tmp_path)
    Image.fromarray(tags_image(np.array([[1, 1, 40, 40]]))).save(tmp_path / "gt" / "c.png")  # 40: no 0.9.14 tag
    with pytest.raises(SystemExit) as exit_:
        main(eval_args(tmp_path, "--allow-missing"))
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and f"{tmp_path / 'gt' / 'c.png'}: values carla-tags-0.9.14 does not know: 40" in err
