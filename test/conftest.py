import os
import subprocess
import sys

# One torch thread in the tests and every process they start: on a busy machine (CI beside other jobs) two
# OpenMP threads spin-waiting for each other on two shared cores make each step several times slower, while
# the tiny model gains little from a second thread. Set before torch is imported.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from emerdiff_ros.engine import EmerDiffConfig, Segmenter, load_model  # noqa: E402
from emerdiff_ros.tools.images import read_rgb  # noqa: E402
from emerdiff_ros.tools.samples import sample_dir  # noqa: E402


# Small but real: the tiny random model, few masks, small processing size, few feature draws.
FAST = dict(model="tiny-random", num_masks=6, resolution=128, feature_draws=8, kmeans_restarts=2)


@pytest.fixture(scope="session")
def tiny_model():
    return load_model("tiny-random", device="cpu")


@pytest.fixture
def segmenter(tiny_model):
    return Segmenter(tiny_model, EmerDiffConfig(**FAST))


@pytest.fixture(scope="session")
def cshenron_frame() -> np.ndarray:
    return read_rgb(sample_dir() / "cshenron_000000.png")  # 1024 x 256


@pytest.fixture(scope="session")
def carla_frame() -> np.ndarray:
    return read_rgb(sample_dir() / "carla_800x600_000043.png")  # 800 x 600


# DDS discovery stays on loopback in tests: no traffic leaves this machine.
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(os.getpid() % 200 + 20))


@pytest.fixture
def cpu_hogs():
    """Two busy processes beside the test, as on a loaded CI machine or a car's computer."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    yield
    for hog in hogs:
        hog.kill()
        hog.wait()
