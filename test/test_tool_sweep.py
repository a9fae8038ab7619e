"""`emerdiff sweep`: figures and scores, with work reused across settings where it stays valid."""

import json

import numpy as np
import pytest

from emerdiff_ros.cli import main
from emerdiff_ros.engine import Segmenter
from emerdiff_ros.scoring import confusion, ground_truth_format, match
from emerdiff_ros.tools.samples import sample_dir
from emerdiff_ros.tools.sweep import run_sweep, settings
from test_evaluate import SHARED

FAST = ["--model", "tiny-random", "--device", "cpu", "--resolution", "128", "--feature-draws", "4",
        "--kmeans-restarts", "1"]


CARLA_08 = ground_truth_format("carla-tags", "0.8.2")


def two_class_gt(shape, split: int) -> np.ndarray:
    """Vegetation above row `split`, road below, as raw CARLA 0.8 tags decoded for scoring."""
    tags = np.zeros((*shape[:2], 3), np.uint8)
    tags[:split, :, 0], tags[split:, :, 0] = 9, 7
    return CARLA_08.decode(tags)


def count_calls(monkeypatch, names):
    calls = dict.fromkeys(names, 0)
    for name in names:
        original = getattr(Segmenter, name)

        def counted(self, *args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(Segmenter, name, counted)
    return calls


def test_features_once_and_kmeans_once_per_k(segmenter, carla_frame, monkeypatch):
    calls = count_calls(monkeypatch, ("features", "cluster"))
    gt = two_class_gt(carla_frame.shape, 300)
    points = run_sweep(segmenter, carla_frame, {"num_masks": [3, 5], "modulation_lambda": [1.0, 10.0],
                                                "modulation_timestep": [81, 281]},
                       gt=gt, gt_format=CARLA_08)
    assert calls == {"features": 1, "cluster": 3}  # K = 3, 5 and the config's 6 for the other sweeps
    assert [p.setting for p in points][:3] == [{"num_masks": 3}, {"num_masks": 5}, {"modulation_lambda": 1.0}]
    assert all(0 <= p.miou <= 100 and p.labels.shape == gt.shape for p in points)
    # the lambda points share their masks, so a different lambda changes the labels, not the clusters
    assert len(np.unique(points[2].labels)) <= 6


def test_categorical_choices_reuse_what_they_do_not_change(segmenter, cshenron_frame, monkeypatch):
    calls = count_calls(monkeypatch, ("encode", "features", "cluster", "refine"))
    gt = two_class_gt(cshenron_frame.shape, 128)
    points = run_sweep(segmenter, cshenron_frame, {"processing": ["keep_aspect", "square", "center_crop"],
                                                   "modulation_point": ["after_projection", "before_projection"],
                                                   "blur_target": ["difference_map", "images"],
                                                   "attention_injection": [True, False]},
                       gt=gt, gt_format=CARLA_08)
    # The 1024 x 256 frame is 1024 x 256, 128 x 128 squeezed, or its central 256 x 256 square at 128 x 128 to
    # the model: three encodings, features and k-means. The point, the blur and injection reuse the preset's
    # frame and masks; four of the nine settings are the preset itself and run once.
    assert calls == {"encode": 3, "features": 3, "cluster": 3, "refine": 6}
    preset = [p for p in points if p.setting in ({"processing": "keep_aspect"}, {"attention_injection": True},
                                                 {"modulation_point": "after_projection"},
                                                 {"blur_target": "difference_map"})]
    assert len(preset) == 4 and all(p.labels is preset[0].labels for p in preset)
    assert all(p.labels.shape == gt.shape and 0 <= p.miou <= 100 for p in points)
    by_setting = {tuple(p.setting.items())[0]: p.labels for p in points}
    for choice in (("processing", "square"), ("modulation_point", "before_projection"),
                   ("blur_target", "images"), ("attention_injection", False)):
        assert (by_setting[choice] != preset[0].labels).mean() > 0.01, choice
    # center_crop labels only columns 384:640; its mIoU scores those pixels alone.
    cropped = next(p for p in points if p.setting == {"processing": "center_crop"})
    assert (cropped.labels[:, :384] == 255).all() and (cropped.labels[:, 640:] == 255).all()
    inside = cropped.labels[:, 384:640]
    alone = match(confusion(inside, gt[:, 384:640], len(CARLA_08.classes)), CARLA_08.classes).scores.miou
    assert cropped.miou == pytest.approx(100 * alone)


def test_the_command_sweeps_the_papers_choices_one_at_a_time(tmp_path, capsys):
    out = tmp_path / "choices"
    image = str(sample_dir() / "cshenron_000000.png")
    assert main(["sweep", image, "--out", str(out), "--blur-target", "difference_map", "images",
                 "--modulation-point", "after_projection", "before_projection",
                 "--processing", "keep_aspect", "square", "center_crop", *FAST]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines[1:8]] == [
        ["point", "after_projection"], ["point", "before_projection"], ["blur", "difference_map"],
        ["blur", "images"], ["processing", "keep_aspect"], ["processing", "square"], ["processing", "center_crop"]]
    report = json.loads((out / "sweep.json").read_text())
    assert len(report["points"]) == 7 and (out / "sweep_overlays.png").stat().st_size > 10_000


def test_grid_runs_every_combination():
    assert settings({"num_masks": [10, 15], "attention_injection": [True, False]}, grid=True) == [
        {"num_masks": 10, "attention_injection": True}, {"num_masks": 10, "attention_injection": False},
        {"num_masks": 15, "attention_injection": True}, {"num_masks": 15, "attention_injection": False}]
    assert settings({"num_masks": [10, 15], "attention_injection": [False]}) == [
        {"num_masks": 10}, {"num_masks": 15}, {"attention_injection": False}]


def test_the_command_sweeps_categorical_choices_in_a_grid(tmp_path, capsys):
    out = tmp_path / "grid"
    image = str(sample_dir() / "cshenron_000000.png")
    assert main(["sweep", image, "--out", str(out), "--grid", "--num-masks", "3", "4",
                 "--attention-injection", "on", "off", *FAST]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["K", "injection", "seconds", "mIoU", "%"]
    assert [line.split()[:2] for line in lines[1:5]] == [["3", "on"], ["3", "off"], ["4", "on"], ["4", "off"]]
    report = json.loads((out / "sweep.json").read_text())
    assert report["grid"] and report["points"][1]["setting"] == {"K": 3, "injection": False}
    assert (out / "sweep_overlays.png").stat().st_size > 10_000
    for bad in (["--attention-injection", "maybe"], ["--modulation-point", "inside"], ["--grid"]):
        with pytest.raises(SystemExit) as info:
            main(["sweep", image, "--out", str(out), *bad, *FAST])
        assert info.value.code == 2
    assert "--grid combines the values you give" in capsys.readouterr().err


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared label sets not present")
def test_the_command_writes_figures_a_table_and_json(tmp_path, capsys):
    folder = SHARED / "carla_lyft_samples"
    out = tmp_path / "sweep"
    assert main(["sweep", str(folder / "images" / "nikolasent_val_1.png"), "--out", str(out), "--num-masks", "3", "4",
                 "--lambda", "10", "--gt", str(folder / "labels" / "nikolasent_val_1.png"), "--gt-format",
                 "carla-tags", "--carla-version", "0.8.2", *FAST]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["parameter", "value", "seconds", "mIoU", "%"]
    assert [line.split()[:2] for line in lines[1:4]] == [["K", "3"], ["K", "4"], ["lambda", "10"]]
    report = json.loads((out / "sweep.json").read_text())
    assert len(report["points"]) == 3 and "SMOKE RUN" in report["smoke_run"]
    assert (out / "sweep_overlays.png").stat().st_size > 10_000 and (out / "sweep_miou.png").exists()
    with pytest.raises(SystemExit):  # ground truth without its format
        main(["sweep", str(folder / "images" / "nikolasent_val_1.png"), "--out", str(out),
              "--gt", str(folder / "labels" / "nikolasent_val_1.png"), *FAST])
