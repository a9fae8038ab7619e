"""The node runs every method live over DDS: the study's baselines beside EmerDiff, scored against CARLA's
ground truth, and a method switched while the node runs, its model loaded by the worker."""

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.parameter import Parameter

from ros_harness import running
from test_node import image_array, publish_frame
from test_node_score import PALETTE_SET, palette_frames, send
from test_evaluate import SHARED


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared label sets not present")
@pytest.mark.parametrize("method", ["dino", "segformer"])
def test_a_baseline_runs_live_and_is_scored_against_the_ground_truth(method):
    stem = palette_frames()[0]
    with running(method=method, ground_truth_format="carla-palette", carla_version="0.9.5") as (node, bridge):
        send(bridge, PALETTE_SET / "images" / f"{stem}.png", PALETTE_SET / "labels" / f"{stem}.png", 10.0)
        labels = image_array(bridge.out["labels"].wait(1)[0])
        scores = bridge.out["score/frame_miou"].wait(1)
        health = bridge.diagnostics_when(lambda values: values["frames_processed"] == "1")
    assert labels.shape == (540, 960)  # the frame's size
    if method == "segformer":
        assert labels.max() < 19  # Cityscapes train ids, stable by construction
    else:
        assert len(np.unique(labels)) <= 4  # at most K clusters of DINO features
    assert len(scores) == 1 and 0 <= scores[0].data <= 100
    assert health["method"] == method and health["unet_sample_evals"] == "0"  # no diffusion ran


def test_a_method_switched_at_run_time_runs_from_the_next_frame(carla_frame):
    with running() as (node, bridge):
        publish_frame(bridge, carla_frame, 1.0)
        bridge.out["labels"].wait(1)
        before = bridge.diagnostics_when(lambda values: values["frames_processed"] == "1")
        assert node.set_parameters([Parameter("method", value="segformer")])[0].successful  # no load here
        publish_frame(bridge, carla_frame, 2.0)
        labels = image_array(bridge.out["labels"].wait(2)[1])
        after = bridge.diagnostics_when(lambda values: values["frames_processed"] == "2")
    assert before["method"] == "emerdiff" and before["unet_sample_evals"] != "0"
    assert after["method"] == "segformer" and after["unet_sample_evals"] == "0"
    assert labels.shape == carla_frame.shape[:2] and labels.max() < 19


def test_a_method_whose_weights_are_missing_skips_frames_until_switched_back(carla_frame):
    with running(dino_model="/no/such/dino") as (node, bridge):
        assert node.set_parameters([Parameter("method", value="dino")])[0].successful
        publish_frame(bridge, carla_frame, 1.0)
        failing = bridge.diagnostics_when(lambda values: values["processing_errors"] == "1")
        assert node.set_parameters([Parameter("method", value="emerdiff")])[0].successful
        publish_frame(bridge, carla_frame, 2.0)
        labels = bridge.out["labels"].wait(1)
        recovered = bridge.diagnostics_when(lambda values: values["frames_processed"] == "1")
    assert failing["level"] == DiagnosticStatus.ERROR and "method dino: no such folder" in failing["message"]
    assert failing["frames_processed"] == "0"
    assert len(labels) == 1 and recovered["level"] != DiagnosticStatus.ERROR
