"""`emerdiff segment` on folders: outputs, smoke-run marking, resume, shared centres, bad files."""

import json
import shutil
import time

import numpy as np
import pytest
from PIL import Image

from emerdiff_ros.cli import main
from emerdiff_ros.engine import Segmenter
from emerdiff_ros.scoring import SEGMENT_MANIFEST
from emerdiff_ros.tools.samples import sample_images
from emerdiff_ros.tools.segment import CENTERS_FILE, FEATURES_DIR, segment_images
from test_evaluate import SHARED
from tiny import config, flags

FAST = flags(num_masks=5)


@pytest.fixture
def frames(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for path in sample_images():
        shutil.copy(path, folder / path.name)
    return folder


def test_folder_outputs_are_full_size_and_marked_as_smoke_runs(frames, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["segment", str(frames), "--out", str(out), *FAST]) == 0
    summary = capsys.readouterr().out
    assert "frames: 3 segmented, 0 already done, 0 failed" in summary and "SMOKE RUN" in summary
    for path in sample_images():
        with Image.open(path) as source, Image.open(out / f"{path.stem}_labels.png") as labels, \
                Image.open(out / f"{path.stem}_overlay.png") as overlay:
            assert labels.size == overlay.size == source.size
            assert labels.mode == "L" and overlay.mode == "RGB"
            assert "SMOKE RUN" in labels.info["Description"]
            values = np.unique(np.array(labels))
            assert values.max() < 5 and len(values) > 1
            banner = np.array(overlay)[:3]
            assert (banner == 0).all(axis=-1).mean() > 0.5  # the black smoke-run banner across the top
    assert not list(out.glob(".*partial"))


def test_resume_redoes_only_missing_frames(frames, tmp_path, capsys):
    out = tmp_path / "out"
    main(["segment", str(frames), "--out", str(out), *FAST])
    first = sample_images()[0].stem
    before = np.array(Image.open(out / f"{sample_images()[1].stem}_labels.png"))
    (out / f"{first}_labels.png").unlink()
    capsys.readouterr()
    assert main(["segment", str(frames), "--out", str(out), "--resume", *FAST]) == 0
    assert "frames: 1 segmented, 2 already done, 0 failed" in capsys.readouterr().out
    assert (out / f"{first}_labels.png").exists()
    np.testing.assert_array_equal(np.array(Image.open(out / f"{sample_images()[1].stem}_labels.png")), before)


def test_consistent_mode_labels_every_frame_with_one_set_of_centres(frames, tmp_path, segmenter):
    out = tmp_path / "out"
    assert main(["segment", str(frames), "--out", str(out), "--consistent", *FAST]) == 0
    with np.load(out / CENTERS_FILE) as saved:
        centers = saved["centers"]
    assert centers.shape[0] == 5
    # every frame's labels are the shared centres' ids: a frame segmented with those centres agrees
    shared = Segmenter(segmenter.model, config(num_masks=5))  # the command's settings
    rgb = np.array(Image.open(sample_images()[2]).convert("RGB"))
    result = shared.segment(rgb, centers=centers)
    np.testing.assert_array_equal(result.masks.centers, centers)
    np.testing.assert_array_equal(np.array(Image.open(out / f"{sample_images()[2].stem}_labels.png")),
                                  result.labels)
    # a resumed run reuses the saved centres; other parameters are refused
    assert main(["segment", str(frames), "--out", str(out), "--consistent", "--resume", *FAST]) == 0
    with pytest.raises(SystemExit):
        main(["segment", str(frames), "--out", str(out), "--consistent", "--resume", *FAST, "--seed", "3"])


def test_unreadable_files_are_reported_and_the_rest_is_done(frames, tmp_path, capsys):
    (frames / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    assert main(["segment", str(frames), "--out", str(out), *FAST]) == 1
    output = capsys.readouterr().out
    assert "frames: 3 segmented, 0 already done, 1 failed" in output and "failed: broken.png" in output


def test_lowres_baseline_from_the_command_line(frames, tmp_path):
    out = tmp_path / "out"
    image = sample_images()[0]
    assert main(["segment", str(frames / image.name), "--out", str(out), "--method", "lowres", *FAST]) == 0
    with Image.open(image) as source, Image.open(out / f"{image.stem}_labels.png") as labels:
        assert labels.size == source.size


def test_missing_input_and_invalid_values_are_usage_errors(tmp_path):
    with pytest.raises(SystemExit):
        main(["segment", str(tmp_path / "nothing"), "--out", str(tmp_path / "out"), *FAST])
    with pytest.raises(SystemExit):
        main(["segment", str(tmp_path), "--out", str(tmp_path / "out"), *FAST, "--num-masks", "1"])


def test_consistent_mode_computes_features_once_and_reports_all_the_time(frames, tmp_path, segmenter, monkeypatch):
    calls = []
    original = Segmenter.features

    def slow_features(self, *args, **kwargs):
        calls.append(1)
        time.sleep(1.0)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Segmenter, "features", slow_features)
    out = tmp_path / "out"
    images = sorted(frames.iterdir())
    summary = segment_images(segmenter, images, out, consistent=True, method="lowres", progress=False)
    assert len(calls) == len(images)  # once per frame: the fitting pass's features label the frame too
    assert summary.done == 3 and min(summary.seconds) >= 1.0  # each frame's seconds include its features
    assert sum(summary.seconds) + summary.fit_seconds <= summary.wall_seconds
    lines = summary.lines()
    assert any(line.startswith("fitting the shared cluster centres") for line in lines)
    assert any(line.startswith("wall time: ") for line in lines)
    assert not (out / FEATURES_DIR).exists()


def test_the_output_folder_records_whether_label_ids_are_shared(frames, tmp_path, capsys):
    out = tmp_path / "out"
    image = str(frames / sample_images()[0].name)
    assert main(["segment", image, "--out", str(out), "--method", "lowres", *FAST]) == 0
    assert json.loads((out / SEGMENT_MANIFEST).read_text())["label_ids"] == "per-frame"
    with pytest.raises(SystemExit) as exit_:  # resuming the other way would mix label meanings
        main(["segment", image, "--out", str(out), "--method", "lowres", "--consistent", "--resume", *FAST])
    assert exit_.value.code == 2 and "segmented without --consistent" in capsys.readouterr().err
    assert main(["segment", image, "--out", str(out), "--method", "lowres", "--consistent", *FAST]) == 0
    assert json.loads((out / SEGMENT_MANIFEST).read_text())["label_ids"] == "consistent"


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared label sets not present")
def test_eval_of_consistent_labels_headlines_the_whole_set_matching(tmp_path, capsys):
    folder = SHARED / "carla_lyft_samples"
    out = tmp_path / "out"
    assert main(["segment", str(folder / "images"), "--out", str(out), "--consistent", "--method", "lowres",
                 *FAST]) == 0
    capsys.readouterr()
    assert main(["eval", "--pred", str(out), "--gt", str(folder / "labels"), "--gt-format", "carla-tags",
                 "--carla-version", "0.8.2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("mIoU: ") and f"(whole-set matching: cluster ids are consistent across frames " \
                                              f"({out / SEGMENT_MANIFEST}))" in lines[-1]
    assert lines[0] == lines[-2] == "SMOKE RUN: 'tiny-random' has random weights; the labels are meaningless"
