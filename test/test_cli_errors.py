"""Every user error of every command: one line on stderr, exit status 2, never a traceback; a bug keeps its
traceback; --help loads no torch."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from emerdiff_ros.cli import main
from emerdiff_ros.tools.samples import sample_images
from tiny import flags

TINY = flags(num_masks=3, feature_draws=2)


@pytest.fixture
def files(tmp_path):
    """A folder of predictions and one of ground truth that score fine, and bad inputs next to them."""
    for name in ("pred", "gt", "empty", "junkbag", "rgbpred", "brokengt"):
        (tmp_path / name).mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "pred" / "a_labels.png")
    Image.fromarray(np.full((4, 4, 3), [7, 0, 0], np.uint8)).save(tmp_path / "gt" / "a.png")
    Image.fromarray(np.full((4, 4, 3), [9, 8, 7], np.uint8)).save(tmp_path / "rgbpred" / "a_labels.png")
    (tmp_path / "brokengt" / "a.png").write_bytes(b"not a png")
    (tmp_path / "a_file").write_text("not a folder")
    (tmp_path / "bad.yaml").write_text("encoding: id\nclasses: {1: a\n")
    return tmp_path


def eval_cmd(t, *extra, fmt=("--gt-format", "carla-tags-0.9.5")):
    return ["eval", "--pred", str(t / "pred"), "--gt", str(t / "gt"), *fmt, *extra]


CASES = {
    "eval: no such folder": (lambda t: ["eval", "--pred", str(t / "nope"), "--gt", str(t / "gt"), "--gt-format",
                                        "carla-tags-0.9.5"], "does not exist"),
    "eval: a file for a folder": (lambda t: ["eval", "--pred", str(t / "a_file"), "--gt", str(t / "gt"),
                                             "--gt-format", "carla-tags-0.9.5"], "is not a folder"),
    "eval: missing class map": (lambda t: eval_cmd(t, fmt=("--class-map", str(t / "nope.yaml"))),
                                "cannot read class map"),
    "eval: broken class map": (lambda t: eval_cmd(t, fmt=("--class-map", str(t / "bad.yaml"))), "not valid YAML"),
    "eval: unknown CARLA version": (lambda t: eval_cmd(t, "--carla-version", "2.0", fmt=("--gt-format", "carla-tags")),
                                    "CARLA version must look like"),
    "eval: CARLA version for Cityscapes": (lambda t: eval_cmd(t, "--carla-version", "0.9.13",
                                                              fmt=("--gt-format", "cityscapes-ids")),
                                           "applies to carla-tags and carla-palette"),
    "eval: bad ignore value": (lambda t: eval_cmd(t, "--ignore", "999"), "cannot ignore '999'"),
    "eval: missing ignore mask": (lambda t: eval_cmd(t, "--ignore-mask", str(t / "nope.png")),
                                  "cannot read the ignore mask"),
    "eval: output folder is a file": (lambda t: eval_cmd(t, "--out", str(t / "a_file")), "File exists"),
    "eval: unreadable ground truth": (lambda t: ["eval", "--pred", str(t / "pred"), "--gt", str(t / "brokengt"),
                                                 "--gt-format", "carla-tags-0.9.5"], "cannot read"),
    "eval: colour predictions": (lambda t: ["eval", "--pred", str(t / "rgbpred"), "--gt", str(t / "gt"),
                                            "--gt-format", "carla-tags-0.9.5"], "not a single-channel label image"),
    "eval: unknown format": (lambda t: eval_cmd(t, fmt=("--gt-format", "kitti")),
                             "unknown --gt-format 'kitti'; built in: camvid-11, carla-palette"),
    "eval: CARLA release unknown": (lambda t: eval_cmd(t, fmt=("--gt-format", "carla-tags")),
                                    "carla-tags needs the CARLA release that made the frames"),
    "eval: predictions and a bag": (lambda t: eval_cmd(t, "--bag", str(t / "junkbag")),
                                    "eval takes --bag, or --pred and --gt, not both"),
    "eval: no bag": (lambda t: ["eval", "--bag", str(t / "nope"), "--gt-format", "carla-palette-0.9.14"],
                     "no such bag"),
    "eval: not a bag": (lambda t: ["eval", "--bag", str(t / "junkbag"), "--gt-format", "carla-palette-0.9.14"],
                        "cannot read bag"),
    "segment: no input": (lambda t: ["segment", str(t / "nope"), "--out", str(t / "out"), *TINY],
                          "no such image or folder"),
    "segment: no images": (lambda t: ["segment", str(t / "empty"), "--out", str(t / "out"), *TINY], "no images in"),
    "segment: unknown device": (lambda t: ["segment", str(sample_images()[0]), "--out", str(t / "out"), *TINY,
                                           "--device", "tpu"], "device must be"),
    "segment: output is a file": (lambda t: ["segment", str(sample_images()[0]), "--out", str(t / "a_file"), *TINY],
                                  "File exists"),
    "bag: no bag": (lambda t: ["bag", str(t / "nope"), str(t / "out"), *TINY], "no such bag"),
    "bag: not a bag": (lambda t: ["bag", str(t / "junkbag"), str(t / "out"), *TINY], "metadata"),
    "sweep: no image": (lambda t: ["sweep", str(t / "nope.png"), "--out", str(t / "s"), *TINY], "No such file"),
    "sweep: ground truth of another encoding": (
        lambda t: ["sweep", str(sample_images()[0]), "--out", str(t / "s"), "--gt", str(sample_images()[0]),
                   "--gt-format", "cityscapes-ids", *TINY], "cityscapes-ids labels are single-channel"),
    "demo: output is a file": (lambda t: ["demo", "--out", str(t / "a_file"), *TINY], "File exists"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_user_errors_are_one_line_with_status_2(files, capsys, case):
    build, expected = CASES[case]
    with pytest.raises(SystemExit) as exit_:
        main(build(files))
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line and not line.startswith(("WARNING", "INFO"))]
    command = case.split(":")[0]
    assert exit_.value.code == 2 and "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith(f"emerdiff {command}: error: ") and expected in lines[0], err


@pytest.mark.parametrize("args", [["bench", "--frames", "0", *TINY], ["sweep", "x.png", "--out", "o", "--gt", "g.png"],
                                  ["eval", "--pred", "p", "--gt-format", "carla-tags"]])
def test_usage_errors_exit_2_with_usage(args, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(args)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err and "error: " in err.splitlines()[-1]


@pytest.mark.parametrize("bug", [ValueError, RuntimeError, OSError, KeyError])
def test_a_bug_in_a_tool_keeps_its_traceback(files, monkeypatch, capsys, bug):
    """Only the narrow user-error types are one line: a plain ValueError from a bug must not look like one."""
    def broken(*args, **kwargs):
        raise bug("a bug")

    monkeypatch.setattr("emerdiff_ros.cli.evaluate.evaluate_folders", broken)
    with pytest.raises(bug, match="a bug"):
        main(eval_cmd(files))
    assert "error:" not in capsys.readouterr().err


def test_a_plain_value_error_while_loading_the_model_is_a_bug(monkeypatch):
    """The engine's user errors are ConfigError and CheckpointError; any other ValueError is a bug."""
    from emerdiff_ros.engine import Segmenter

    def broken(config):
        raise ValueError("a bug")

    monkeypatch.setattr(Segmenter, "load", broken)
    with pytest.raises(ValueError, match="a bug"):
        main(["bench", "--frames", "1", *TINY])


def test_help_of_every_command_loads_no_torch():
    """`emerdiff --help` and every `emerdiff COMMAND --help` build the flags without loading the model code."""
    check = ("import contextlib, io, sys\n"
             "from emerdiff_ros.cli import COMMANDS, main\n"
             "for argv in [['--help']] + [[name, '--help'] for name in COMMANDS]:\n"
             "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
             "        main(argv)\n"
             "print(' '.join(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "", done.stdout + done.stderr
