"""The method itself: inversion, modulation, attention injection, batching, against a plain path."""

from contextlib import nullcontext
from functools import partial

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from emerdiff_ros.engine import FrameStats, LowResMasks
from emerdiff_ros.engine.attention import SharedAttention
from emerdiff_ros.engine.config import BLUR_TARGETS, MODULATION_POINTS
from emerdiff_ros.engine.imaging import difference_map
from emerdiff_ros.engine.labels import no_label
from emerdiff_ros.engine.prefix import prefix_flop_share, shared_prefix
from emerdiff_ros.tools.bench import benchmark, format_report
from plain_emerdiff import plain_emerdiff


@pytest.mark.parametrize("point", MODULATION_POINTS)
@pytest.mark.parametrize("blur_target", BLUR_TARGETS)
def test_batched_path_matches_plain_one_mask_at_a_time(segmenter, cshenron_frame, point, blur_target):
    segmenter = segmenter.with_config(modulation_point=point, blur_target=blur_target)
    frame = segmenter.encode(cshenron_frame)
    masks = segmenter.cluster(segmenter.features(frame))
    ids = masks.present()
    assert len(ids) == segmenter.config.num_masks

    reconstruction, plain_latents, plain_maps = plain_emerdiff(segmenter, frame, masks.grid, ids)
    # Replaying the stored noise maps reconstructs the encoded latent.
    torch.testing.assert_close(reconstruction, frame.latent[0], atol=1e-5, rtol=1e-5)

    latents = segmenter.modulated_latents(frame, masks.grid, ids)
    torch.testing.assert_close(latents, plain_latents, atol=1e-4, rtol=1e-4)
    maps = segmenter.difference_maps(latents)
    # The latents agree to about 2e-6; the decoder amplifies that to about 1.6e-4 in maps of scale 4 (measured:
    # 1.0e-4 with the whole step-t_m batch through the UNet, 1.6e-4 with its prefix computed once).
    torch.testing.assert_close(maps, plain_maps, atol=5e-4, rtol=1e-4)
    # The modulation did something, so the comparison above is not between two zero maps.
    assert plain_maps.mean() > 1e-3

    labels = segmenter.refine(frame, masks)
    plain_labels = torch.nn.functional.interpolate(plain_maps[None], size=labels.shape, mode="bilinear",
                                                   align_corners=False)[0].argmax(0).numpy()
    assert (labels == ids[plain_labels]).mean() > 0.999


@pytest.mark.parametrize("target, sign", [("difference_map", 1.0), ("images", -1.0)])
def test_the_blur_filters_the_difference_map_or_the_rgb_difference(target, sign):
    # Opposite colour changes in two neighbouring pixels: (+1, -1, 0) at (4, 4), (-1, +1, 0) at (4, 5).
    # The map d is sqrt 2 at both, so its filtered value at (4, 4) is sqrt 2 k0 (k0 + k1); filtering the
    # RGB difference first lets the two pixels cancel: sqrt 2 k0 (k0 - k1). k: the 7-tap kernel of sigma 0.8.
    plus = torch.zeros(1, 3, 9, 9)
    plus[0, :2, 4, 4] = torch.tensor([1.0, -1.0])
    plus[0, :2, 4, 5] = torch.tensor([-1.0, 1.0])
    taps = torch.exp(-0.5 * (torch.arange(-3.0, 4.0) / 0.8) ** 2)
    k0, k1 = taps[3] / taps.sum(), taps[4] / taps.sum()
    maps = difference_map(plus, torch.zeros_like(plus), 0.8, target)
    assert maps.shape == (1, 9, 9)
    torch.testing.assert_close(maps[0, 4, 4], 2**0.5 * k0 * (k0 + sign * k1))


def test_chunked_batches_give_the_same_latents(segmenter, cshenron_frame):
    frame = segmenter.encode(cshenron_frame)
    masks = segmenter.cluster(segmenter.features(frame))
    ids = masks.present()
    whole_stats, chunked_stats = FrameStats(), FrameStats()
    whole = segmenter.modulated_latents(frame, masks.grid, ids, whole_stats)
    chunked = segmenter.with_config(max_batch=3, max_decode_batch=2)  # one +/- pair per call
    parts = chunked.modulated_latents(frame, masks.grid, ids, chunked_stats)
    torch.testing.assert_close(parts, whole, atol=1e-5, rtol=1e-5)
    steps = len(segmenter.schedule.timesteps) - segmenter.schedule.snap(segmenter.config.modulation_timestep)
    assert whole_stats.sequential_unet_calls == steps  # every mask in one batch per step
    assert whole_stats.unet_sample_evals == steps * (1 + 2 * len(ids))
    assert chunked_stats.sequential_unet_calls == steps * len(ids)
    # Each step-t_m call computes the prefix once: every modulated sample shares it, whole or chunked.
    assert whole_stats.unet_prefix_shared == chunked_stats.unet_prefix_shared == 2 * len(ids)
    # Float sums reorder with the batch size; the maps agree to well below their scale.
    torch.testing.assert_close(chunked.difference_maps(parts), segmenter.difference_maps(whole), atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("point", MODULATION_POINTS)
def test_zero_lambda_reconstructs_and_gives_zero_differences(segmenter, cshenron_frame, point):
    still = segmenter.with_config(modulation_lambda=0.0, modulation_point=point)
    frame = still.encode(cshenron_frame)
    masks = still.cluster(still.features(frame))
    latents = still.modulated_latents(frame, masks.grid, masks.present())
    # Every sample replays the stored noise maps unmodulated: it lands back on the encoded latent.
    torch.testing.assert_close(latents, frame.latent.expand_as(latents), atol=1e-5, rtol=1e-5)
    assert still.difference_maps(latents).abs().max() < 1e-5


@pytest.mark.parametrize("point", MODULATION_POINTS)
def test_modulation_changes_mostly_the_pixels_under_the_mask(segmenter, carla_frame, point):
    # A known layout of four quadrant masks on the 8 x 8 feature grid of a 256 x 256 frame.
    seg = segmenter.with_config(resolution=256, modulation_point=point)
    frame = seg.encode(carla_frame[:512, :512])
    grid = np.zeros((8, 8), dtype=np.int64)
    grid[:4, 4:], grid[4:, :4], grid[4:, 4:] = 1, 2, 3
    labels = seg.refine(frame, LowResMasks(grid=grid, centers=np.zeros((4, 1), np.float32)))
    layout = np.kron(grid, np.ones((64, 64), dtype=np.int64))
    agreement = (labels == layout).mean()
    # Measured with the tiny random model over seeds 0-2: 0.739-0.756 before the projection, 0.767-0.792
    # after it. Scoring the same labels against the transposed layout gives 0.40-0.43, chance is 0.25.
    assert agreement > 0.70, agreement


def test_the_two_modulation_points_give_different_maps(segmenter, cshenron_frame):
    frame = segmenter.encode(cshenron_frame)
    masks = segmenter.cluster(segmenter.features(frame))
    maps = {}
    for point in MODULATION_POINTS:
        seg = segmenter.with_config(modulation_point=point)
        maps[point] = seg.difference_maps(seg.modulated_latents(frame, masks.grid, masks.present()))
    before, after = maps["before_projection"], maps["after_projection"]
    assert before.mean() > 1e-3 and after.mean() > 1e-3
    # Measured with the tiny model: the maps differ by 0.62-0.68 of their norm (seeds 0-2, two frames).
    assert (before - after).norm() > 0.3 * after.norm()


@pytest.mark.parametrize("inject", [True, False])
def test_the_offset_before_the_projection_is_c_times_the_projected_ones_vector(segmenter, inject):
    # f(a + c M) = f(a) + c W_o 1 on masked tokens; after the projection every channel gets c. The
    # reference (sample 0, offset 0) is unchanged either way.
    unet = segmenter.model.unet
    attn = unet.get_submodule(segmenter.config.modulation_layer)
    latent_hw = (8, 32)  # the 16x16 block of SD runs on 1/4 of the latent: 2 x 8 tokens here
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(1, 16, attn.to_q.in_features, generator=g).expand(3, -1, -1)
    context = segmenter.model.prompt_embedding.expand(3, -1, -1)
    mask = torch.zeros(2, 8)
    mask[:, :3] = 1
    offsets = torch.stack([0 * mask, 10 * mask, -10 * mask])
    with torch.no_grad():
        outputs = {}
        for before in (True, False, None):
            processor = SharedAttention(inject, latent_hw, before_projection=bool(before))
            processor.offsets = None if before is None else offsets
            outputs[before] = processor(attn, hidden, context)
        projected_ones = attn.to_out[0].weight.sum(1)
    plain = outputs[None]
    expected_before = offsets.reshape(3, 16, 1) * projected_ones
    torch.testing.assert_close(outputs[True] - plain, expected_before, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(outputs[False] - plain, offsets.reshape(3, 16, 1).expand_as(plain), atol=1e-4,
                               rtol=1e-4)
    torch.testing.assert_close(outputs[True][0], plain[0])


def test_injection_off_still_runs_and_differs(segmenter, cshenron_frame):
    frame = segmenter.encode(cshenron_frame)
    masks = segmenter.cluster(segmenter.features(frame))
    injected = segmenter.modulated_latents(frame, masks.grid, masks.present())
    free = segmenter.with_config(attention_injection=False).modulated_latents(frame, masks.grid, masks.present())
    assert free.shape == injected.shape
    assert not torch.allclose(free, injected, atol=1e-4)


@pytest.mark.parametrize("resolution", [64, 128])
@pytest.mark.parametrize("method", ["emerdiff", "lowres"])
def test_center_crop_labels_the_central_square_and_nothing_else(segmenter, cshenron_frame, resolution, method):
    # The CARLA study's input: columns 384:640 of a 1024 x 256 frame, resized to resolution x resolution.
    seg = segmenter.with_config(processing="center_crop", resolution=resolution)
    result = seg.segment(cshenron_frame, method=method)
    labels = result.labels
    assert labels.shape == (256, 1024) and labels.dtype == np.uint8
    assert result.stats.processing_size == (resolution, resolution)
    outside = np.ones(labels.shape, dtype=bool)
    outside[:, 384:640] = False
    assert (labels[outside] == no_label(np.uint8)).all()
    assert labels[~outside].max() < seg.config.num_masks
    assert len(np.unique(labels[~outside])) > 1


def test_center_crop_sees_only_the_crop(segmenter, cshenron_frame):
    # The same square given alone, as a 256 x 256 image, gives the same labels inside the crop.
    seg = segmenter.with_config(processing="center_crop")
    square = np.ascontiguousarray(cshenron_frame[:, 384:640])
    np.testing.assert_array_equal(seg.segment(cshenron_frame).labels[:, 384:640], seg.segment(square).labels)


def test_the_shared_prefix_runs_the_unet_before_the_layer_once_and_changes_nothing(segmenter):
    # Five equal samples, as at step t_m: with the prefix shared, the modules before the modulated layer see
    # one sample, those after it all five, the output is the unsplit one, and the counted FLOPs drop by
    # exactly four prefixes (share p of one evaluation F_1): 5 F_1 - 4 p F_1.
    unet, layer = segmenter.model.unet, segmenter.config.modulation_layer
    x = torch.randn(1, 4, 8, 16, generator=torch.Generator().manual_seed(0)).expand(5, -1, -1, -1)
    context = segmenter.model.prompt_embedding.expand(5, -1, -1)

    def run(batch=5):
        return unet(x[:batch], 500, encoder_hidden_states=context[:batch], return_dict=False)[0]

    def batch_seen(name, module, args, kwargs):
        seen[name] = (args[0] if args else kwargs["hidden_states"]).shape[0]

    seen = {}
    watched = ("down_blocks.0", "up_blocks.1.resnets.2", "up_blocks.1.upsamplers.0", "up_blocks.2")
    with torch.no_grad():
        unsplit = run()
        with shared_prefix(unet, layer, 5):  # the watchers run after the prefix's own hooks
            hooks = [unet.get_submodule(name).register_forward_pre_hook(partial(batch_seen, name), with_kwargs=True)
                     for name in watched]
            shared = run()
            for hook in hooks:
                hook.remove()
        share = prefix_flop_share(unet, layer, lambda: run(1))
        flops = {}
        for name, context_manager in (("unsplit", nullcontext()), ("shared", shared_prefix(unet, layer, 5))):
            counter = FlopCounterMode(display=False)
            with counter, context_manager:
                run()
            flops[name] = counter.get_total_flops()
        single = FlopCounterMode(display=False)
        with single:
            run(1)
    assert seen == {"down_blocks.0": 1, "up_blocks.1.resnets.2": 1, "up_blocks.1.upsamplers.0": 5, "up_blocks.2": 5}
    torch.testing.assert_close(shared, unsplit, atol=1e-5, rtol=1e-5)
    assert 0.3 < share < 0.95
    assert flops["unsplit"] == 5 * single.get_total_flops()
    assert flops["shared"] == pytest.approx(flops["unsplit"] - 4 * share * single.get_total_flops(), rel=1e-9)


def test_the_bench_counts_the_shared_prefix(segmenter):
    # One step-t_m call of 2K + 1 samples: the 2K modulated ones share the reference's prefix.
    report = benchmark(segmenter.with_config(feature_draws=2), (128, 128), frames=1, warmup=0)
    masks = report["num_masks"]
    steps = len(segmenter.schedule.timesteps) - segmenter.schedule.snap(segmenter.config.modulation_timestep)
    assert report["unet_prefix_shared"] == 2 * masks
    assert report["denoise_sample_evals"] == steps * (1 + 2 * masks) == report["unet_sample_evals"] - 2
    assert 0.3 < report["prefix_flop_share"] < 0.95
    assert report["unet_evals_saved"] == pytest.approx(2 * masks * report["prefix_flop_share"])
    lines = format_report(report)
    assert any(line.startswith("step t_m: the UNet's work before the modulated layer") for line in lines)
