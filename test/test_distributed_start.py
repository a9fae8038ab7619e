"""Ray workers that cannot start at once: a cluster busy with another job, a model a worker's machine lacks.
A cluster of its own (2 CPUs), so that what holds its CPUs is known."""

import logging
import threading
import time

import pytest
import ray

from emerdiff_ros.cli import main
from emerdiff_ros.distributed import RayRunner, pool
from emerdiff_ros.engine import EmerDiffConfig
from emerdiff_ros.tools.samples import sample_images
from tiny import flags

ARGS = flags()


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


@ray.remote
class Hog:
    """Another job's actor, holding CPUs of the cluster until it is killed."""

    def ready(self) -> bool:
        return True


def test_a_busy_cluster_is_waited_for_and_the_wait_is_explained(cluster, monkeypatch, caplog):
    monkeypatch.setattr(pool, "START_NOTICE_S", 0.5)
    hog = Hog.options(num_cpus=2).remote()
    assert ray.get(hog.ready.remote())
    config = EmerDiffConfig.from_preset("paper", model="tiny-random", device="cpu", resolution=128, num_masks=4)
    started = []
    starting = threading.Thread(target=lambda: started.append(RayRunner(config, 1, cpus_per_worker=1)), daemon=True)
    # what Ray reports free lags behind on a busy machine: the notice is checked up to those numbers
    notice = ("1 of 1 Ray workers not started after 0 s: loading the model, or waiting for room on the cluster "
              "(each needs 0 GPU and 1 CPU; free now:")
    with caplog.at_level(logging.WARNING, logger=pool.__name__):
        starting.start()
        deadline = time.monotonic() + 60
        while notice not in caplog.text and time.monotonic() < deadline:
            starting.join(timeout=0.1)
        assert notice in caplog.text
        assert starting.is_alive() and not started  # queued by Ray behind the other job, not failed
    ray.kill(hog)  # the other job ends: the worker starts and the command goes on
    starting.join(timeout=600)  # a worker process loads torch and the model: minutes on a busy machine
    assert started, "the worker never started after the CPUs were free"
    with started[0] as runner:
        assert len(runner.worker_pids()) == 1


def test_a_model_a_worker_cannot_load_stops_the_command_with_what_to_do(cluster, tmp_path, capsys):
    missing = tmp_path / "only-on-the-driver"
    image = str(sample_images()[0])
    # the cluster this process is connected to is used as it is
    status = main(["segment", image, "--out", str(tmp_path / "out"), "--ray", "local", "--ray-workers", "1",
                   "--ray-cpus-per-worker", "1", *ARGS, "--model", str(missing)])
    err = capsys.readouterr().err
    assert status == 2 and "Traceback" not in err
    # what the command printed, without the lines Ray forwards from workers' logs (this test's or earlier ones')
    printed = "\n".join(line for line in err.splitlines() if "(SegmentWorker pid=" not in line)
    assert printed.startswith(f"Could not load the Stable Diffusion checkpoint '{missing}': a Ray worker could not "
                              "load it") and "no such folder" in printed
    assert ray.is_initialized()
