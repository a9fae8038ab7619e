"""The offline tools on a real local Ray cluster: outputs equal the single-process run's byte for byte,
a killed worker's frames are retried elsewhere, and a killed driver's run is resumed."""

import os
import shutil
import signal
from contextlib import suppress
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import ray
import torch
from PIL import Image
from rosbags.highlevel import AnyReader

from bag_builder import write_bag, write_surround_bag
from emerdiff_ros.cli import main
from emerdiff_ros.distributed import ClusterError, RayRunner
from emerdiff_ros.distributed.pool import plan_workers
from emerdiff_ros.engine import Segmenter
from emerdiff_ros.runtime.settings import StreamSettings
from emerdiff_ros.runtime.rigging import surround_rig
from emerdiff_ros.tools.bag import segment_bag, segment_fleet, work_dir
from emerdiff_ros.tools.bag_options import surround_topics
from emerdiff_ros.tools.images import list_images
from emerdiff_ros.tools.samples import sample_images
from emerdiff_ros.tools.segment import segment_images
from tiny import config, flags

ARGS = ["--preset", "paper", *flags()]
SURROUND_RIG = Path(__file__).resolve().parents[1] / "config" / "carla_surround.json"
CONFIG = config()


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def runner(cluster):
    """Two workers asked for alone on the 2-CPU cluster (`--ray-workers 2` on 2 cores): one CPU each. They
    run this process's torch threads, whatever Ray's OMP_NUM_THREADS."""
    with RayRunner(CONFIG, 2) as pool:
        yield pool


@pytest.fixture(scope="module")
def alone(tiny_model):
    return Segmenter(tiny_model, CONFIG)


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    """Six frames of two sizes: the bundled samples and the same shifted sideways."""
    folder = tmp_path_factory.mktemp("frames")
    for path in sample_images():
        shutil.copy(path, folder / path.name)
        Image.fromarray(np.roll(np.array(Image.open(path).convert("RGB")), 40, axis=1)).save(
            folder / f"{path.stem}_shifted.png")
    return list_images(folder)


@pytest.fixture(scope="module")
def single_process(alone, frames, tmp_path_factory):
    out = tmp_path_factory.mktemp("alone") / "out"
    segment_images(alone, frames, out, progress=False)
    return out


def assert_same_files(expected: Path, got: Path) -> None:
    names = sorted(p.name for p in expected.iterdir())
    assert sorted(p.name for p in got.iterdir()) == names
    for name in names:
        assert (got / name).read_bytes() == (expected / name).read_bytes(), name


def bag_messages(path: Path) -> list[tuple[str, int, bytes]]:
    with AnyReader([path]) as reader:
        return [(conn.topic, timestamp, bytes(raw)) for conn, timestamp, raw in reader.messages()]


def test_a_folder_on_ray_equals_the_single_process_run(runner, frames, single_process, tmp_path):
    out = tmp_path / "out"
    summary = segment_images(runner, frames, out, progress=False)
    assert summary.done == len(frames) and summary.smoke_note
    assert_same_files(single_process, out)
    lines = runner.lines()
    assert lines[0] == (f"workers: 2 on Ray (0 GPU, 1 CPU, {torch.get_num_threads()} torch threads each): the "
                        f"cluster's 2 CPUs split evenly among the 2 workers asked for")
    assert all(f"pid {pid}) " in lines[1] for pid in runner.worker_pids())


def test_consistent_mode_on_ray_fits_the_same_centres_and_labels(runner, alone, frames, tmp_path):
    subset = frames[:4]
    expected, out = tmp_path / "alone", tmp_path / "ray"
    segment_images(alone, subset, expected, consistent=True, progress=False)
    summary = segment_images(runner, subset, out, consistent=True, progress=False)
    assert summary.done == 4 and summary.fit_seconds is not None
    assert_same_files(expected, out)  # emerdiff_centers.npz, the manifest and every PNG


def test_a_fleet_of_bags_on_ray_equals_the_single_process_command(runner, tmp_path, carla_frame, capsys):
    sources = [write_bag(tmp_path / "drive_a", carla_frame, frames=3),
               write_bag(tmp_path / "drive_b.bag", np.roll(carla_frame, 100, axis=0), frames=2, kind="ros1")]
    # one process, through the command: several inputs, OUT a folder of bags named after them
    assert main(["bag", *map(str, sources), str(tmp_path / "alone"), *ARGS]) == 0
    printed = capsys.readouterr().out
    assert "bags: 2 written now, 0 by an earlier run" in printed and "jobs per worker" not in printed
    written = list(segment_fleet(runner, StreamSettings(), sources, tmp_path / "ray", progress=False))
    assert [dst.name for _, dst, _ in written] == ["drive_a", "drive_b"]
    for name, frames in (("drive_a", 3), ("drive_b", 2)):
        expected, got = bag_messages(tmp_path / "alone" / name), bag_messages(tmp_path / "ray" / name)
        assert sum(topic == "/emerdiff/labels" for topic, _, _ in got) == frames
        assert got == expected, name  # every message, topic, stamp and byte, in the same order
    # resumed, a fleet skips the bags already written
    again = list(segment_fleet(runner, StreamSettings(), sources, tmp_path / "ray", resume=True, progress=False))
    assert [summary for _, _, summary in again] == [None, None]


def test_a_surround_bag_on_ray_is_one_job_per_surround_frame_and_equals_one_process(runner, alone, tmp_path,
                                                                                    carla_frame):
    cameras = ("rgb_front", "rgb_left")
    settings = StreamSettings(cameras=cameras, rig_file=str(SURROUND_RIG), fov_from_rig=True)
    topics = surround_topics(surround_rig(settings), settings)
    source = write_surround_bag(tmp_path / "in", np.roll(carla_frame, 60, axis=1), cameras,
                                np.array([[12.0, 0.0, -0.4], [0.0, 11.0, -0.4]]), frames=3)
    jobs_before = runner.jobs_done
    segment_bag(alone, settings, source, tmp_path / "alone", topics=topics, progress=False)
    segment_bag(runner, settings, source, tmp_path / "ray", topics=topics, progress=False)
    assert runner.jobs_done - jobs_before == 3  # a surround frame per job, not a camera
    assert bag_messages(tmp_path / "ray") == bag_messages(tmp_path / "alone")


def test_fleet_outputs_need_distinct_names_and_never_overwrite(tmp_path, carla_frame, capsys):
    first = write_bag(tmp_path / "a" / "drive", carla_frame, frames=1)
    second = write_bag(tmp_path / "b" / "drive", carla_frame, frames=1)
    with pytest.raises(SystemExit) as exit_:
        main(["bag", str(first), str(second), str(tmp_path / "out"), *ARGS])
    assert exit_.value.code == 2 and "would both be written to" in capsys.readouterr().err
    (tmp_path / "out" / "drive").mkdir(parents=True)
    with pytest.raises(SystemExit):  # checked for every input before the first is segmented
        main(["bag", str(first), str(write_bag(tmp_path / "other", carla_frame, frames=1)), str(tmp_path / "out"),
              *ARGS])
    assert "exists; emerdiff never overwrites a bag" in capsys.readouterr().err
    assert not work_dir(tmp_path / "out" / "other").exists()


def test_a_killed_worker_has_its_frames_retried_elsewhere(runner, frames, single_process, tmp_path):
    out = tmp_path / "out"
    victim = runner.worker_pids()[0]
    retried_before = runner.retried

    def kill_after_the_first_frame():
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not list(out.glob("*_labels.png")):
            time.sleep(0.02)
        os.kill(victim, signal.SIGKILL)

    killer = threading.Thread(target=kill_after_the_first_frame, daemon=True)
    killer.start()
    summary = segment_images(runner, frames, out, progress=False)
    killer.join()
    assert summary.done == len(frames)
    assert runner.retried > retried_before
    assert victim not in runner.worker_pids()  # replaced by a new worker
    lines = runner.lines()
    assert "(replaced 1x)" in lines[1] and lines[2] == f"frames retried after a lost worker: {runner.retried}"
    assert_same_files(single_process, out)  # nothing lost, nothing written twice, the same bytes


def run_cli(*args: str) -> subprocess.Popen:
    # its own session: after the driver is killed, the rest of the local cluster it started can be ended too
    return subprocess.Popen([sys.executable, "-m", "emerdiff_ros.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def end_session(process: subprocess.Popen) -> None:
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def test_a_killed_driver_is_resumed_without_losing_or_duplicating_frames(alone, tmp_path, carla_frame):
    source = write_bag(tmp_path / "in", carla_frame, frames=6)
    segment_bag(alone, StreamSettings(), source, tmp_path / "whole", progress=False)
    out = tmp_path / "out"
    ray_args = ["--ray", "local", "--ray-workers", "2", "--ray-cpus-per-worker", "1", *ARGS]
    driver = run_cli("bag", str(source), str(out), *ray_args)
    cache = work_dir(out) / "frames"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(list(cache.glob("0*.npz")) if cache.exists() else []) < 2:
        time.sleep(0.02)
    os.kill(driver.pid, signal.SIGKILL)  # a crash, not a polite stop
    driver.wait()
    end_session(driver)  # what is left of the cluster it started
    cached = len(list(cache.glob("0*.npz")))
    assert 2 <= cached < 6 and not out.exists()

    resumed = run_cli("bag", str(source), str(out), "--resume", *ray_args)
    printed, _ = resumed.communicate(timeout=300)
    end_session(resumed)
    assert resumed.returncode == 0, printed
    assert f"{6 - cached} segmented now, {cached} from the interrupted run" in printed
    assert "workers: 2 on Ray" in printed and "frames retried after a lost worker: 0" in printed
    assert bag_messages(out) == bag_messages(tmp_path / "whole")
    assert not work_dir(out).exists()


def test_without_ray_the_flag_says_what_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    image = str(sample_images()[0])
    with pytest.raises(SystemExit) as exit_:
        main(["segment", image, "--out", str(tmp_path / "out"), "--ray", "local", *ARGS])
    assert exit_.value.code == 2
    assert "pip install 'emerdiff_ros[ray]'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["segment", image, "--out", str(tmp_path / "out"), "--ray-workers", "2", *ARGS])
    assert "--ray-workers need --ray ADDRESS" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["segment", image, "--out", str(tmp_path / "out"), "--ray", "local", *ARGS, "--device", "cuda:1"])
    assert "each worker gets its own from Ray" in capsys.readouterr().err


def test_workers_default_to_one_per_gpu_or_per_cpu_slot():
    assert plan_workers({"CPU": 32.0, "GPU": 4.0}, None, None, None, threads=8) == (4, 1.0, 1.0, "")
    assert plan_workers({"CPU": 32.0, "GPU": 4.0}, None, 0.5, None, threads=8) == (8, 0.5, 1.0, "")
    assert plan_workers({"CPU": 16.0}, None, None, None, threads=4) == (4, 0.0, 4.0, "")
    assert plan_workers({"CPU": 2.0}, 2, None, 1, threads=2) == (2, 0.0, 1.0, "")
    with pytest.raises(ClusterError, match="4 workers with 1 GPU and 1 CPU each do not fit"):
        plan_workers({"CPU": 32.0, "GPU": 2.0}, 4, 1, 1, threads=8)
    with pytest.raises(ClusterError, match="do not fit"):
        plan_workers({"CPU": 2.0}, None, None, None, threads=4)


def test_a_number_of_workers_alone_splits_the_cluster_among_them():
    """--ray-workers N without --ray-cpus-per-worker: what a user means by N workers on this cluster."""
    assert plan_workers({"CPU": 2.0}, 2, None, None, threads=2) == (
        2, 0.0, 1.0, "the cluster's 2 CPUs split evenly among the 2 workers asked for")
    assert plan_workers({"CPU": 16.0}, 4, None, None, threads=16)[:3] == (4, 0.0, 4.0)
    assert plan_workers({"CPU": 3.0}, 2, None, None, threads=1)[:3] == (2, 0.0, 1.5)
    assert plan_workers({"CPU": 32.0, "GPU": 2.0}, 4, None, None, threads=8) == (
        4, 0.5, 1.0, "the cluster's 2 GPUs shared evenly among the 4 workers asked for")
    assert plan_workers({"CPU": 32.0, "GPU": 4.0}, 2, None, None, threads=8) == (2, 1.0, 1.0, "")
    with pytest.raises(ClusterError, match="has 2 CPU: 3 workers need at least one CPU each"):
        plan_workers({"CPU": 2.0}, 3, None, None, threads=1)
