"""Whole frames through the engine: sizes, determinism, what it leaves behind, bad input."""

import numpy as np
import pytest
import torch

from emerdiff_ros.engine import LowResMasks
from emerdiff_ros.engine.attention import attention_processors


@pytest.mark.parametrize("fixture, shape", [("cshenron_frame", (256, 1024)), ("carla_frame", (600, 800))])
def test_non_square_frames_get_labels_at_input_size(segmenter, request, fixture, shape):
    image = request.getfixturevalue(fixture)
    result = segmenter.segment(image)
    assert result.labels.shape == shape
    assert result.labels.dtype == np.uint8
    used = np.unique(result.labels)
    assert set(used) <= set(range(segmenter.config.num_masks))
    assert len(used) > 1
    width, height = result.stats.processing_size
    assert width % 64 == 0 and height % 64 == 0
    assert abs(width / height - shape[1] / shape[0]) < 0.35  # aspect ratio kept


def test_square_processing_stretches_and_labels_come_back_at_input_size(segmenter, cshenron_frame):
    square = segmenter.with_config(processing="square")
    result = square.segment(cshenron_frame)
    assert result.stats.processing_size == (128, 128)  # resolution x resolution, the 4:1 frame stretched
    assert result.labels.shape == (256, 1024)
    assert len(np.unique(result.labels)) > 1
    # The baseline shows the stretch undone: a 4 x 4 feature grid, so 256 x 64 pixel cells on the frame.
    baseline = square.segment(cshenron_frame, method="lowres")
    assert baseline.masks.grid.shape == (4, 4)
    cell = baseline.masks.grid[0, 0]
    assert (baseline.labels[8:56, 16:240] == cell).all()
    np.testing.assert_array_equal(baseline.masks.grid, result.masks.grid)


def test_same_seed_same_labels_other_seed_other_labels(segmenter, cshenron_frame):
    first = segmenter.segment(cshenron_frame).labels
    segmenter.segment(cshenron_frame[:, ::-1].copy())  # something else in between
    again = segmenter.segment(cshenron_frame).labels
    np.testing.assert_array_equal(first, again)
    other = segmenter.with_config(seed=7).segment(cshenron_frame).labels
    assert (other != first).mean() > 0.01


def test_unet_behaves_normally_after_a_segmentation(segmenter, cshenron_frame):
    unet = segmenter.model.unet
    before = {name: type(p) for name, p in unet.attn_processors.items()}
    x = torch.randn(1, 4, 8, 16, generator=torch.Generator().manual_seed(0))
    context = segmenter.model.prompt_embedding

    def output():
        with torch.no_grad():
            return unet(x, 500, encoder_hidden_states=context).sample

    reference = output()
    segmenter.segment(cshenron_frame)
    assert {name: type(p) for name, p in unet.attn_processors.items()} == before
    torch.testing.assert_close(output(), reference)


def test_processors_are_restored_when_a_step_fails(segmenter):
    unet = segmenter.model.unet
    before = dict(unet.attn_processors)
    with pytest.raises(RuntimeError, match="boom"):
        with attention_processors(unet, {segmenter.config.feature_layer: object()}):
            raise RuntimeError("boom")
    assert unet.attn_processors == before


def test_k_above_255_gives_16_bit_labels(segmenter, cshenron_frame):
    frame = segmenter.encode(cshenron_frame)
    grid = np.zeros((2, 8), np.int64)
    grid[:, 4:] = 299  # two of 300 clusters present: the dtype follows K, the values the ids
    labels = segmenter.refine(frame, LowResMasks(grid=grid, centers=np.zeros((300, 1), np.float32)))
    assert labels.dtype == np.uint16
    assert set(np.unique(labels)) == {0, 299}


def test_tiny_inputs_lower_k_to_the_cells_available(segmenter):
    image = np.zeros((40, 40, 3), np.uint8)
    image[:, 20:] = 255
    result = segmenter.with_config(resolution=64).segment(image)  # 64 x 64: a 2 x 2 feature grid
    assert result.labels.shape == (40, 40)
    assert result.stats.masks <= 4


@pytest.mark.parametrize("bad, message", [
    (np.zeros((0, 10, 3), np.uint8), "empty"),
    (np.zeros((10, 10, 3), np.float32), "uint8"),
    (np.zeros((10, 10, 5), np.uint8), "shape"),
    ([[1, 2]], "numpy array"),
])
def test_bad_images_get_clear_errors(segmenter, bad, message):
    with pytest.raises((TypeError, ValueError), match=message):
        segmenter.segment(bad)


def test_grey_and_rgba_frames_are_accepted(segmenter, cshenron_frame):
    rgba = np.concatenate([cshenron_frame, np.full(cshenron_frame.shape[:2] + (1,), 255, np.uint8)], 2)
    np.testing.assert_array_equal(segmenter.segment(rgba).labels, segmenter.segment(cshenron_frame).labels)
    assert segmenter.segment(cshenron_frame[:, :, 1]).labels.shape == (256, 1024)


def test_stats_count_what_ran(segmenter, cshenron_frame):
    stats = segmenter.segment(cshenron_frame).stats
    cfg = segmenter.config
    steps = len(segmenter.schedule.timesteps) - segmenter.schedule.snap(cfg.modulation_timestep)
    assert stats.modulation_timestep == 281
    assert stats.vae_decodes == 2 * stats.masks
    assert stats.sequential_unet_calls == 1 + steps  # one feature call, one call per step
    assert stats.unet_sample_evals == cfg.feature_draws + steps * (1 + 2 * stats.masks)
    assert all(seconds >= 0 for seconds in stats.stage_seconds.values())
    assert stats.seconds >= sum(stats.stage_seconds.values()) * 0.99
    assert stats.peak_memory_mb > 0


def test_lowres_baseline_upsamples_the_same_masks(segmenter, cshenron_frame):
    baseline = segmenter.segment(cshenron_frame, method="lowres")
    full = segmenter.segment(cshenron_frame)
    np.testing.assert_array_equal(baseline.masks.grid, full.masks.grid)  # same features and k-means
    assert baseline.labels.shape == full.labels.shape == (256, 1024)
    assert baseline.stats.vae_decodes == 0 and baseline.stats.sequential_unet_calls == 1  # features only
    # Away from cell borders, the baseline is the cell's cluster (an 8 x 2 grid: 128 x 128 pixel cells).
    cell = baseline.masks.grid[0, 0]
    assert (baseline.labels[4:28, 4:28] == cell).all()
    with pytest.raises(ValueError, match="method"):
        segmenter.segment(cshenron_frame, method="best")
