"""Live scoring against CARLA's ground truth over real DDS, with the shared labelled CARLA frames."""

import json
import time

import numpy as np
import pytest
from std_msgs.msg import Header

from emerdiff_ros.cli import main
from emerdiff_ros.runtime.pipeline import SegmentedFrame
from emerdiff_ros.scoring import ground_truth_format, read_label_image
from emerdiff_ros.tools.images import read_rgb, write_labels
from ros_harness import bgra_image, running, stamp
from test_evaluate import SHARED

pytestmark = pytest.mark.skipif(not SHARED.is_dir(), reason="shared label sets not present")
PALETTE_SET = SHARED / "carla_cityscapes_palette"  # CARLA 0.9.5 palette colours, as the bridge publishes them
TAGS_SET = SHARED / "carla_lyft_samples"  # raw CARLA 0.8 tags in the red channel
LIVE = "emerdiff: live score"


def palette_frames() -> list[str]:
    return sorted(p.stem for p in (PALETTE_SET / "labels").glob("nikos134_*.png"))


def ground_truth_image(path, t: float):
    """The semantic camera's message: bgra8, as the bridge (palette) or CARLA's own ROS 2 (tags) sends it."""
    rgb = read_label_image(path, "colour")[:, :, :3]
    return bgra_image(np.ascontiguousarray(rgb), t, frame_id="ego_vehicle/semantic_segmentation_front")


def send(bridge, image_path, gt_path, t: float, gt_first: bool = True) -> None:
    frame = bgra_image(read_rgb(image_path), t)
    messages = [ground_truth_image(gt_path, t), frame] if gt_first else [frame, ground_truth_image(gt_path, t)]
    (bridge.ground_truth if gt_first else bridge.image).publish(messages[0])
    (bridge.image if gt_first else bridge.ground_truth).publish(messages[1])


def last(collector) -> float:
    return collector.messages[-1].data


@pytest.mark.parametrize("folder, encoding, version", [(PALETTE_SET, "carla-palette", "0.9.5"),
                                                       (TAGS_SET, "carla-tags", "0.9.5")])
def test_a_prediction_equal_to_the_ground_truth_up_to_renaming_scores_100(folder, encoding, version):
    fmt = ground_truth_format(encoding, version)
    stems = palette_frames()[:2] if folder == PALETTE_SET else sorted(p.stem for p in (folder / "labels").iterdir())[:2]
    with running(ground_truth_format=encoding, carla_version=version) as (node, bridge):
        segment = node.pipeline.segment

        def oracle(rgb):  # the real segmentation runs; its labels are replaced by the ground truth, renamed
            result = segment(rgb)
            truth = fmt.decode(read_label_image(folder / "labels" / f"{oracle.stem}.png", fmt.encoding))
            return SegmentedFrame(((truth.astype(np.int64) * 7 + 3) % 256).astype(np.uint8), result.segmentation)

        node.pipeline.segment = oracle
        for i, stem in enumerate(stems):
            oracle.stem = stem
            # a tick's messages come in any order: ground truth before the frame, then after it
            send(bridge, folder / "images" / f"{stem}.png", folder / "labels" / f"{stem}.png", 10.0 + i, i == 0)
            bridge.out["score/drive_miou"].wait(i + 1)
        time.sleep(1.2)
        health = bridge.latest_diagnostics(status=LIVE)
    assert [m.data for m in bridge.out["score/frame_miou"].messages] == [100.0, 100.0]
    assert [m.data for m in bridge.out["score/frame_pixel_accuracy"].messages] == [100.0, 100.0]
    assert last(bridge.out["score/drive_miou"]) == 100.0
    assert health["scored_frames"] == "2" and health["ground_truth_format"] == f"{encoding}-0.9.5"
    assert health["drive_protocol"] == "whole-set"


def test_the_nodes_scores_are_emerdiff_evals_on_the_same_frames(tmp_path):
    stems = palette_frames()
    predictions, truth = tmp_path / "pred", tmp_path / "gt"
    predictions.mkdir()
    truth.mkdir()
    with running(ground_truth_format="carla-palette", carla_version="0.9.5") as (node, bridge):
        bridge.image.publish(bgra_image(read_rgb(PALETTE_SET / "images" / f"{stems[0]}.png"), 5.0))  # no truth
        bridge.out["labels"].wait(1)
        for i, stem in enumerate(stems):
            send(bridge, PALETTE_SET / "images" / f"{stem}.png", PALETTE_SET / "labels" / f"{stem}.png", 20.0 + i)
            bridge.out["score/drive_miou"].wait(i + 1)
            labels = bridge.out["labels"].wait(i + 2)[-1]
            assert labels.header.stamp == stamp(20.0 + i)
            write_labels(predictions / f"{stem}_labels.png",
                         np.frombuffer(bytes(labels.data), np.uint8).reshape(labels.height, labels.width), "")
            (truth / f"{stem}.png").symlink_to(PALETTE_SET / "labels" / f"{stem}.png")
        time.sleep(1.2)
        health = bridge.latest_diagnostics(status=LIVE)
    # Label tracking keeps values stable over the drive, so eval scores the whole set as one matching.
    assert main(["eval", "--pred", str(predictions), "--gt", str(truth), "--gt-format", "carla-palette",
                 "--carla-version", "0.9.5", "--consistent-ids", "--out", str(tmp_path / "eval")]) == 0
    report = json.loads((tmp_path / "eval" / "scores.json").read_text())
    frame_scores = [m.data for m in bridge.out["score/frame_miou"].messages]
    assert len(frame_scores) == len(stems) and health["frames_without_ground_truth"] == "1"
    per_image = [100 * report["per_image"][stem]["miou"] for stem in stems]
    np.testing.assert_allclose(frame_scores, per_image, atol=1e-3)
    np.testing.assert_allclose(last(bridge.out["score/drive_miou"]), 100 * report["protocols"]["whole-set"]["miou"],
                               atol=1e-3)
    assert health["drive_miou"] == f"{100 * report['protocols']['whole-set']['miou']:.2f}"
    assert 0 < frame_scores[0] < 100  # random weights: a real, unremarkable number


def test_ground_truth_that_cannot_be_scored_is_counted_and_the_frame_still_comes_out(carla_frame):
    with running(ground_truth_format="carla-tags") as (node, bridge):
        # the RGB photo sent as ground truth: green and blue are not 0, so these are not CARLA tags
        bridge.ground_truth.publish(bgra_image(carla_frame, 30.0))
        bridge.image.publish(bgra_image(carla_frame, 30.0))
        bridge.out["labels"].wait(1)
        time.sleep(1.2)
        health = bridge.latest_diagnostics(status=LIVE)
    assert health["bad_ground_truth"] == "1" and health["scored_frames"] == "0"
    assert not bridge.out["score/frame_miou"].messages
    assert bridge.out["labels"].messages[0].header == Header(stamp=stamp(30.0), frame_id="ego_vehicle/rgb_front")
