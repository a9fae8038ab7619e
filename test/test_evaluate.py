"""Scoring against ground truth: known answers on hand-made cases, and every shared label set decoded."""

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from emerdiff_ros.cli import main
from emerdiff_ros.tools.evaluate import confusion, evaluate, pair_files, score
from emerdiff_ros.tools.groundtruth import FORMATS, UNKNOWN, decode

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "labelled"
CLASSES = np.array([1, 2, 3])


def scores_of(pred, gt):
    return score(confusion(np.asarray(pred), np.asarray(gt), CLASSES), CLASSES)


def test_perfect_and_permuted_predictions_score_one():
    gt = np.array([[1, 1, 2, 2], [3, 3, 3, 2]])
    assert scores_of(gt - 1, gt).miou == 1.0
    permuted = np.choose(gt - 1, [7, 0, 4])  # class 1 -> cluster 7, 2 -> 0, 3 -> 4
    result = scores_of(permuted, gt)
    assert result.miou == 1.0 and result.pixel_accuracy == 1.0
    assert result.matching == {7: 1, 0: 2, 4: 3}


def test_merged_classes():
    gt = np.array([[1, 1, 1, 2]])  # 3 pixels of class 1, 1 of class 2, all in one cluster
    result = scores_of(np.zeros((1, 4), int), gt)
    assert result.iou == {1: 3 / 4, 2: 0.0}
    assert result.miou == pytest.approx(3 / 8) and result.pixel_accuracy == 3 / 4


def test_split_class():
    gt = np.array([[1, 1, 1, 1, 2, 2]])
    pred = np.array([[0, 0, 0, 1, 2, 2]])  # class 1 split 3 + 1; cluster 1 stays unmatched
    result = scores_of(pred, gt)
    assert result.iou == {1: 3 / 4, 2: 1.0}
    assert result.pixel_accuracy == 5 / 6


def test_ignored_pixels_do_not_count():
    gt = np.array([[1, 1, 0, 255, 2]])  # 0 and 255 are not scored classes
    pred = np.array([[0, 0, 1, 1, 1]])
    result = scores_of(pred, gt)
    assert result.iou == {1: 1.0, 2: 1.0} and result.pixel_accuracy == 1.0


def write_pair(folder: Path, name: str, pred: np.ndarray, gt_rgb: np.ndarray):
    (folder / "pred").mkdir(exist_ok=True)
    (folder / "gt").mkdir(exist_ok=True)
    Image.fromarray(pred.astype(np.uint8)).save(folder / "pred" / f"{name}_labels.png")
    Image.fromarray(gt_rgb.astype(np.uint8)).save(folder / "gt" / f"{name}.png")


def test_whole_set_matching_needs_consistent_clusters(tmp_path, capsys):
    tags = np.array([[1, 1, 2, 2]])
    rgb = np.stack([tags, tags * 0, tags * 0], -1)  # carla-tags: the tag in the red channel
    write_pair(tmp_path, "a", np.array([[0, 0, 1, 1]]), rgb)
    write_pair(tmp_path, "b", np.array([[1, 1, 0, 0]]), rgb)  # the clusters swap meaning
    result = evaluate(pair_files(tmp_path / "pred", tmp_path / "gt"), FORMATS["carla-tags"])
    assert [s.miou for s in result.per_image.values()] == [1.0, 1.0]
    assert result.whole_set.miou == pytest.approx(1 / 3)  # IoU 2/6 for each class
    assert main(["eval", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"),
                 "--gt-format", "carla-tags", "--out", str(tmp_path / "report")]) == 0
    output = capsys.readouterr().out.strip().splitlines()
    assert output[-1] == "mIoU: 33.33"
    assert (tmp_path / "report" / "confusion.png").stat().st_size > 1000


def test_missing_predictions_are_an_error(tmp_path):
    tags = np.ones((2, 2), np.uint8)
    write_pair(tmp_path, "a", tags, np.stack([tags] * 3, -1))
    Image.fromarray(np.stack([tags] * 3, -1)).save(tmp_path / "gt" / "b.png")
    with pytest.raises(FileNotFoundError, match="no prediction .* for 1 ground-truth images: b"):
        pair_files(tmp_path / "pred", tmp_path / "gt")


def test_extra_ignore_values(tmp_path):
    tags = np.array([[1, 1, 2, 3]])
    write_pair(tmp_path, "a", np.array([[0, 0, 1, 0]]), np.stack([tags] * 3, -1))
    pairs = pair_files(tmp_path / "pred", tmp_path / "gt")
    assert evaluate(pairs, FORMATS["carla-tags"]).whole_set.miou < 1.0
    assert evaluate(pairs, FORMATS["carla-tags"], ignore={3}).whole_set.miou == 1.0


SHARED_SETS = [("carla_lyft_samples", "carla-tags"), ("carla_cityscapes_palette", "carla-palette"),
               ("real_kitti_semantics_cropped", "cityscapes-ids")]


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"the shared label sets are not at {SHARED}")
@pytest.mark.parametrize("folder, fmt", SHARED_SETS)
def test_every_shared_label_set_decodes_without_unknown_values(folder, fmt):
    gt_format = FORMATS[fmt]
    with open(SHARED / folder / "manifest.csv") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        labels = decode(SHARED / folder / row["label"], gt_format)
        assert labels.shape == (int(row["height"]), int(row["width"]))
        values = set(np.unique(labels).tolist())
        assert UNKNOWN not in values and values <= set(gt_format.classes), (row["stem"], values)
        assert values == {int(v) for v in row["label_values"].split() if int(v) != 255} | (
            {23} if row["stem"] == "jonasdieker_0183" else set())  # its (255,0,0) is CARLA 0.9.14's rider
        converted = SHARED / folder / "labels_ids" / f"{row['stem']}.png"
        if converted.exists():  # the set's own palette inversion agrees wherever it knew the colour
            reference = np.array(Image.open(converted))
            known = reference != 255
            np.testing.assert_array_equal(labels[known], reference[known])
