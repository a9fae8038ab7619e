"""`emerdiff sweep`: figures and scores, with features once and k-means once per K."""

import json

import numpy as np
import pytest

from emerdiff_ros.cli import main
from emerdiff_ros.engine import Segmenter
from emerdiff_ros.scoring import ground_truth_format
from emerdiff_ros.tools.sweep import run_sweep
from test_evaluate import SHARED

FAST = ["--model", "tiny-random", "--device", "cpu", "--resolution", "128", "--feature-draws", "4",
        "--kmeans-restarts", "1"]


def test_features_once_and_kmeans_once_per_k(segmenter, carla_frame, monkeypatch):
    calls = {"features": 0, "cluster": 0}
    for name in calls:
        original = getattr(Segmenter, name)

        def counted(self, *args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(Segmenter, name, counted)
    tags = np.zeros(carla_frame.shape, np.uint8)
    tags[:300, :, 0], tags[300:, :, 0] = 9, 7  # vegetation above, road below, in CARLA 0.8 tags
    fmt = ground_truth_format("carla-tags", "0.8.2")
    gt = fmt.decode(tags)
    points = run_sweep(segmenter, carla_frame, {"num_masks": [3, 5], "modulation_lambda": [1.0, 10.0],
                                                "modulation_timestep": [81, 281]}, gt=gt, gt_format=fmt)
    assert calls == {"features": 1, "cluster": 3}  # K = 3, 5 and the config's 6 for the other sweeps
    assert [(p.parameter, p.value) for p in points][:3] == [("num_masks", 3), ("num_masks", 5),
                                                           ("modulation_lambda", 1.0)]
    assert all(0 <= p.miou <= 100 and p.labels.shape == gt.shape for p in points)
    # the lambda points share their masks, so a different lambda changes the labels, not the clusters
    assert len(np.unique(points[2].labels)) <= 6


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
