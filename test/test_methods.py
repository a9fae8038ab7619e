"""The study's other methods (dino, segformer) on the tiny random models, and `emerdiff compare`."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from emerdiff_ros.cli import main
from emerdiff_ros.engine import CheckpointError, Segmentation, load_segmenter
from emerdiff_ros.engine.stats import FrameStats
from emerdiff_ros.runtime.pipeline import stable_labels
from emerdiff_ros.runtime.tracker import LabelTracker
from emerdiff_ros.scoring import (SEGMENT_MANIFEST, bag_custom_data, bag_ids_consistent, ground_truth_format,
                                  read_label_image)
from emerdiff_ros.tools.compare import compare_methods
from emerdiff_ros.tools.images import read_rgb
from emerdiff_ros.tools.samples import sample_images
from bag_builder import read_back, write_bag
from test_evaluate import SHARED, needs_shared
from tiny import config, flags

CONFIG = config()
PALETTE = SHARED / "carla_cityscapes_palette"
CARLA_095 = ["nikos134_town03_00183310", "nikos134_town03_00183311"]  # frames of CARLA 0.9.5 (its README)


@pytest.fixture(scope="module")
def dino():
    return load_segmenter(CONFIG, "dino")


@pytest.fixture(scope="module")
def segformer():
    return load_segmenter(CONFIG, "segformer")


@pytest.fixture(scope="module")
def street():
    return read_rgb(sample_images()[0])


@pytest.mark.parametrize("method", ["dino", "segformer"])
@pytest.mark.parametrize("processing", ["keep_aspect", "center_crop"])
@pytest.mark.parametrize("shape", [(90, 200), (257, 131)])
def test_labels_come_at_the_input_size(method, processing, shape, request):
    segmenter = request.getfixturevalue(method).with_config(processing=processing)
    image = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    result = segmenter.segment(image, method=method)
    assert result.labels.shape == shape and result.labels.dtype == np.uint8
    assert result.smoke_note and "SMOKE RUN" in result.smoke_note
    if processing == "center_crop":  # outside the centred square: no label
        assert (result.labels == 255).any() and (result.labels != 255).any()


def test_dino_gives_at_most_k_clusters_with_their_centres(dino, street):
    for k in (2, 4, 7):
        result = dino.with_config(num_masks=k).segment(street)
        used = np.unique(result.labels)
        assert len(used) <= k and used.max() < k and result.masks.num_masks <= k
        assert result.stats.masks == len(result.masks.present())


def test_dino_labels_are_stable_over_a_shifted_sequence_with_tracking(dino, street):
    """Frames panning over a street: where consecutive frames overlap, the tracked labels agree, and the
    tracking (cluster centres in feature space) is what makes them agree: per-frame numbering does not."""
    shift, width = 24, street.shape[1] - 200
    results = [dino.segment(street[:, i * shift:i * shift + width]) for i in range(4)]

    def agreement(track: bool) -> list[float]:
        tracker = LabelTracker()
        frames = [stable_labels(tracker, result, track) for result in results]
        return [(before[:, shift:] == after[:, :-shift]).mean() for before, after in zip(frames, frames[1:])]

    tracked, untracked = agreement(True), agreement(False)
    assert min(tracked) > 0.8 and np.mean(tracked) > np.mean(untracked) + 0.2, (tracked, untracked)


def test_segformer_labels_are_cityscapes_train_ids_and_need_no_tracking(segformer, street):
    result = segformer.segment(street)
    assert result.masks is None and result.labels.max() <= 18 and result.labels.min() >= 0
    assert (stable_labels(LabelTracker(), result, track=True) == result.labels).all()
    assert (segformer.segment(street).labels == result.labels).all()  # class ids: the same every time


def test_a_method_runs_only_on_its_own_segmenter(dino):
    with pytest.raises(Exception, match="runs dino, not 'segformer'"):
        dino.segment(np.zeros((64, 64, 3), np.uint8), method="segformer")


def test_local_folders_load_dino_v1_and_segformer_checkpoints(tmp_path, segformer, street):
    """A transformers folder loads as the hub's would: a DINO v1 ViT (CLS token only, position embeddings
    interpolated), and the tiny SegFormer saved and loaded back labels exactly as before."""
    from transformers import ViTConfig, ViTModel

    ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, patch_size=8,
                       image_size=64), add_pooling_layer=False).save_pretrained(tmp_path / "vit")
    segformer.model.network.save_pretrained(tmp_path / "segformer")
    config = CONFIG.replace(dino_model=str(tmp_path / "vit"), segformer_model=str(tmp_path / "segformer"))
    vit = load_segmenter(config, "dino")
    result = vit.segment(street)
    assert result.labels.shape == street.shape[:2] and len(np.unique(result.labels)) <= CONFIG.num_masks
    assert result.smoke_note is None  # loaded weights, whatever they are
    loaded = load_segmenter(config, "segformer").segment(street)
    assert (loaded.labels == segformer.segment(street).labels).all()


def test_missing_checkpoints_say_what_to_do(tmp_path):
    for setting, method in (("dino_model", "dino"), ("segformer_model", "segformer")):
        with pytest.raises(CheckpointError) as error:
            load_segmenter(CONFIG.replace(**{setting: str(tmp_path / "absent")}), method)
        flag = "--" + setting.replace("_", "-")
        assert "no such folder" in str(error.value) and f"{flag} tiny-random" in str(error.value)
        assert f"{setting}:=tiny-random" in error.value.for_ros()


# --- the offline tools ---------------------------------------------------------------------------------


def test_segment_with_segformer_records_its_class_ids_as_consistent(tmp_path):
    image = sample_images()[0]
    out = tmp_path / "out"
    assert main(["segment", str(image), "--out", str(out), "--method", "segformer", *flags()]) == 0
    with Image.open(image) as source, Image.open(out / f"{image.stem}_labels.png") as labels:
        assert labels.size == source.size and np.array(labels).max() <= 18
    manifest = json.loads((out / SEGMENT_MANIFEST).read_text())
    assert manifest["label_ids"] == "consistent" and manifest["method"] == "segformer"
    assert manifest["model"] == "tiny-random"
    with pytest.raises(SystemExit):  # shared centres are EmerDiff's features' only
        main(["segment", str(image), "--out", str(out), "--method", "dino", "--consistent", *flags()])


def test_sweep_with_dino_sweeps_what_dino_reads(tmp_path, capsys):
    image = sample_images()[0]
    # K is swept here, not set
    assert main(["sweep", str(image), "--out", str(tmp_path), "--method", "dino", *flags("num_masks")]) == 0
    swept = {setting for point in json.loads((tmp_path / "sweep.json").read_text())["points"]
             for setting in point["setting"]}
    assert swept == {"K", "processing"}  # as the table names them


@pytest.mark.parametrize("method", ["dino", "segformer"])
def test_bag_segments_with_either_method(tmp_path, carla_frame, method):
    source = write_bag(tmp_path / "in", carla_frame, frames=2)
    assert main(["bag", str(source), str(tmp_path / "out"), "--method", method, *flags()]) == 0
    labels = read_back(tmp_path / "out")["/emerdiff/labels"]
    assert len(labels) == 2 and all((m.width, m.height) == (800, 600) for m in labels)
    assert bag_ids_consistent(bag_custom_data(tmp_path / "out"))  # tracked clusters (dino) or class ids (segformer)


# --- emerdiff compare --------------------------------------------------------------------------------


@pytest.fixture
def labelled(tmp_path):
    """Two CARLA 0.9.5 frames of the shared palette set at a quarter of their size (ground truth: nearest)."""
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir(), labels.mkdir()
    for stem in CARLA_095:
        with Image.open(PALETTE / "images" / f"{stem}.png") as image, \
                Image.open(PALETTE / "labels" / f"{stem}.png") as label:
            size = (image.width // 4, image.height // 4)
            image.convert("RGB").resize(size, Image.BILINEAR).save(images / f"{stem}.png")
            label.resize(size, Image.NEAREST).save(labels / f"{stem}.png")
    return images, labels


def compare_args(images, labels, out, *extra):
    return ["compare", str(images), "--gt", str(labels), "--gt-format", "carla-palette", "--carla-version", "0.9.5",
            "--out", str(out), *flags(), *extra]


@needs_shared
def test_compare_scores_all_four_methods_and_resumes_without_segmenting_again(labelled, tmp_path, capsys,
                                                                               monkeypatch):
    images, labels = labelled
    out = tmp_path / "compare"
    assert main(compare_args(images, labels, out)) == 0
    table = capsys.readouterr().out
    report = json.loads((out / "compare.json").read_text())
    assert list(report["methods"]) == ["emerdiff", "lowres", "dino", "segformer"]
    for method, scores in report["methods"].items():
        assert set(scores["protocols"]) == {"per-image", "whole-set", "diffseg"}
        assert 0 <= scores["miou"] <= 1 and 0 <= scores["pixel_accuracy"] <= 1
        assert scores["seconds_per_frame"] > 0 and scores["peak_memory_mb"] > 0
        assert scores["frames_segmented_with_timing"] == 2 and "SMOKE RUN" in scores["smoke_run"]
        assert sorted(scores["per_image_miou"]) == CARLA_095
        assert (out / method / f"{CARLA_095[0]}_labels.png").exists()
        assert f"{method} " in table
    # segformer's ids are classes: eval scores them as consistent (whole-set), the others per image
    assert report["methods"]["segformer"]["headline"] == "whole-set"
    assert report["methods"]["dino"]["headline"] == "per-image"
    assert report["methods"]["segformer"]["supervised"] and "supervised" in table
    with Image.open(out / "compare.png") as figure:
        assert figure.width > figure.height  # a row per frame, six panels wide

    def no_model(method):
        raise AssertionError(f"{method} loaded its model again")

    monkeypatch.setattr("emerdiff_ros.engine.load_segmenter", no_model)
    assert main(compare_args(images, labels, out, "--resume")) == 0
    again = json.loads((out / "compare.json").read_text())
    assert again["methods"]["dino"]["miou"] == report["methods"]["dino"]["miou"]
    assert again["methods"]["dino"]["seconds_per_frame"] == report["methods"]["dino"]["seconds_per_frame"]


class GroundTruthRunner:
    """A 'method' whose prediction is the ground truth's own class ids."""

    config = CONFIG
    smoke_note = None

    def __init__(self, labels, fmt):
        self.labels, self.fmt = labels, fmt

    def run(self, items):
        for (path, rgb), _ in items:
            ids = self.fmt.decode(read_label_image(self.labels / path.name, self.fmt.encoding)).astype(np.uint8)
            yield (path, rgb), Segmentation(ids, None, FrameStats(), None)

    def lines(self):
        return []


@needs_shared
def test_the_ground_truth_as_a_prediction_scores_100_under_every_protocol(labelled, tmp_path):
    images, labels = labelled
    fmt = ground_truth_format("carla-palette", "0.9.5")
    results = compare_methods(lambda method: GroundTruthRunner(labels, fmt), ["segformer"], sorted(images.iterdir()),
                              labels, fmt, tmp_path / "out", progress=False)
    protocols = results[0].evaluation.drive.protocols()
    assert {name: round(100 * p.miou, 6) for name, p in protocols.items()} == dict.fromkeys(protocols, 100.0)


def test_compare_errors_are_one_line(tmp_path, capsys):
    shutil.copy(sample_images()[0], tmp_path / "frame.png")
    with pytest.raises(SystemExit) as exit_:
        main(["compare", str(tmp_path / "frame.png"), "--gt", str(tmp_path / "no-gt"), "--gt-format", "cityscapes-ids",
              "--out", str(tmp_path / "out"), "--methods", "dino", *flags()])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1 and err[0].startswith("emerdiff compare: error: ")
    assert "no-gt" in err[0]
