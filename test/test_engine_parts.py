"""Configuration, schedule, masks and image helpers."""

from pathlib import Path

import numpy as np
import pytest
import torch

from emerdiff_ros.engine import EmerDiffConfig, config_fields
from emerdiff_ros.engine.attention import layer_grid
from emerdiff_ros.engine.imaging import gaussian_blur, processing_size
from emerdiff_ros.engine.labels import label_dtype
from emerdiff_ros.engine.masks import assign_to_centers, kmeans_masks
from emerdiff_ros.engine.schedule import InversionSchedule


def test_paper_defaults_and_carla_preset():
    paper = EmerDiffConfig()
    assert (paper.num_masks, paper.modulation_lambda, paper.modulation_timestep, paper.num_inference_steps) == (
        25, 10.0, 281, 50)
    carla = EmerDiffConfig.from_preset("carla")
    assert carla.num_masks == 15
    assert EmerDiffConfig.from_preset("carla", num_masks=12).num_masks == 12
    for preset in ("paper", "carla"):  # the paper's checkpoint, and driving frames keep their aspect ratio
        config = EmerDiffConfig.from_preset(preset)
        assert config.model == "CompVis/stable-diffusion-v1-4" and config.processing == "keep_aspect"
        # The paper's Sec. 3.3: f(attention) + c M, and the Gaussian filter on the difference map.
        assert (config.modulation_point, config.blur_target) == ("after_projection", "difference_map")
    assert (paper.modulation_point, paper.blur_target) == ("after_projection", "difference_map")
    sd21 = EmerDiffConfig.from_preset("carla", model="stabilityai/stable-diffusion-2-1-base")
    assert sd21.model == "stabilityai/stable-diffusion-2-1-base" and sd21.num_masks == 15


@pytest.mark.parametrize("changes, message", [
    ({"num_masks": 1}, "num_masks must be between"),
    ({"modulation_lambda": -1.0}, "lambda must be between"),
    ({"modulation_timestep": 1000}, "t_m must be between"),
    ({"dtype": "int8"}, "dtype must be one of"),
    ({"num_masks": 2.5}, "num_masks must be int"),
    ({"attention_injection": 1}, "attention_injection must be bool"),
    ({"model": ""}, "model must not be empty"),
    ({"modulation_point": "inside"}, "modulation_point must be one of after_projection, before_projection"),
    ({"processing": "crop"}, "processing must be one of keep_aspect, square, center_crop"),
    ({"blur_target": "latents"}, "blur_target must be one of difference_map, images"),
])
def test_invalid_values_are_rejected_with_the_reason(changes, message):
    with pytest.raises(ValueError, match=message):
        EmerDiffConfig(**changes)


def test_unknown_preset_names_the_choices():
    with pytest.raises(ValueError, match="paper, carla"):
        EmerDiffConfig.from_preset("fast")


def test_external_names_are_unique_and_cover_every_field():
    specs = list(config_fields())
    assert len({s.name for s in specs}) == len(specs)
    params = EmerDiffConfig().as_params()
    assert params["lambda"] == 10.0 and params["t_m"] == 281 and params["num_masks"] == 25
    assert EmerDiffConfig(modulation_lambda=5).modulation_lambda == 5.0  # ints are fine for floats


@pytest.mark.parametrize("size, resolution, expected", [
    ((1024, 256), 512, (1024, 256)),
    ((800, 600), 512, (576, 448)),
    ((512, 512), 512, (512, 512)),
    ((40, 40), 512, (512, 512)),
    ((4000, 30), 256, (2944, 64)),  # the short side stops at 64; the long side keeps the scale
])
def test_processing_size_keeps_aspect_in_multiples_of_64(size, resolution, expected):
    assert processing_size(*size, resolution, "keep_aspect") == expected


@pytest.mark.parametrize("size, resolution, expected", [
    ((1024, 256), 512, (512, 512)),  # stretched, as the paper's 512 x 512 inputs
    ((800, 600), 512, (512, 512)),
    ((40, 40), 256, (256, 256)),
    ((1024, 256), 500, (512, 512)),  # sides stay multiples of 64
])
def test_square_processing_is_resolution_squared(size, resolution, expected):
    assert processing_size(*size, resolution, "square") == expected
    with pytest.raises(ValueError, match="processing"):
        processing_size(*size, resolution, "crop")


def test_sd_schedule_has_the_papers_timesteps(tiny_model):
    schedule = InversionSchedule(tiny_model.scheduler, 50)
    assert schedule.timesteps[0] == 981 and schedule.timesteps[-1] == 1
    start = schedule.snap(281)
    assert schedule.timesteps[start] == 281
    assert len(schedule.timesteps) - start == 15  # 15 of the 50 steps are replayed
    assert schedule.timesteps[schedule.snap(290)] == 281
    # the shared scheduler is not changed by building a schedule from it
    InversionSchedule(tiny_model.scheduler, 10)
    assert InversionSchedule(tiny_model.scheduler, 50).timesteps == schedule.timesteps


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_every_prediction_type_recovers_noise_and_clean_latent(tiny_model, prediction_type):
    scheduler = type(tiny_model.scheduler).from_config(tiny_model.scheduler.config, prediction_type=prediction_type)
    schedule = InversionSchedule(scheduler, 50)
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 4, 8, 8, generator=g)
    t = 281
    a = schedule.alpha(t)
    x_t = schedule.add_noise(x0, t, eps)
    output = {"epsilon": eps, "v_prediction": a**0.5 * eps - (1 - a) ** 0.5 * x0, "sample": x0}[prediction_type]
    got_eps, got_x0 = schedule.split(output, x_t, t)
    torch.testing.assert_close(got_eps, eps, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_x0, x0, atol=1e-5, rtol=1e-5)


def test_kmeans_numbers_clusters_in_raster_order_of_first_cell():
    features = np.zeros((2, 3, 2), np.float32)
    features[0, 0] = features[1, 2] = (10, 10)
    features[0, 1] = (-5, 0)
    masks = kmeans_masks(features, num_masks=3, restarts=2, seed=0)
    assert masks.grid[0, 0] == 0 and masks.grid[0, 1] == 1 and masks.grid[0, 2] == 2
    assert masks.grid[1, 2] == 0
    np.testing.assert_allclose(masks.centers[0], (10, 10))


def test_kmeans_lowers_k_to_the_distinct_features():
    features = np.ones((4, 4, 3), np.float32)
    features[2:] = 2
    masks = kmeans_masks(features, num_masks=25, restarts=1, seed=0)
    assert masks.num_masks == 2
    np.testing.assert_array_equal(masks.present(), [0, 1])


def test_kmeans_with_more_than_255_clusters():
    features = np.random.default_rng(0).normal(size=(20, 20, 4)).astype(np.float32)
    masks = kmeans_masks(features, num_masks=300, restarts=1, seed=0)
    assert masks.num_masks == 300 and masks.grid.max() == 299


def test_assign_to_centers_picks_the_nearest():
    centers = np.array([[0, 0], [10, 0]], np.float32)
    features = np.array([[[1, 1], [9, 2], [4, 0]]], np.float32)
    np.testing.assert_array_equal(assign_to_centers(features, centers).grid, [[0, 1, 0]])
    with pytest.raises(ValueError, match="channels"):
        assign_to_centers(features, np.zeros((2, 3), np.float32))


def test_blur_keeps_flat_images_and_total():
    flat = torch.full((1, 3, 9, 11), 2.5)
    torch.testing.assert_close(gaussian_blur(flat, 1.5), flat)
    spike = torch.zeros(1, 1, 21, 21)
    spike[0, 0, 10, 10] = 1
    blurred = gaussian_blur(spike, 1.0)
    assert abs(blurred.sum().item() - 1) < 1e-5 and blurred.max() < 0.2
    assert gaussian_blur(spike, 0) is spike


def test_layer_grid_and_label_dtype():
    assert layer_grid(16, (8, 32)) == (2, 8)
    assert layer_grid(256, (8, 32)) == (8, 32)
    with pytest.raises(ValueError):
        layer_grid(10, (8, 32))
    assert label_dtype(255) == np.uint8 and label_dtype(256) == np.uint16


def test_the_readme_method_table_shows_each_parameters_default_choices_and_description():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for spec in config_fields():
        default = str(spec.default).lower() if spec.type is bool else spec.default
        row = next((line for line in readme.splitlines() if line.startswith(f"| `{spec.name}` | `{default}` |")), None)
        assert row is not None, f"README row of {spec.name} with default {default}"
        assert spec.description in row, spec.name
        if spec.choices:
            assert ", ".join(spec.choices) in row, spec.name
