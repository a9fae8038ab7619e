"""The code passes the linter CI runs (ruff: pyflakes and pycodestyle, ruff.toml), as ROS packages run flake8."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_code_passes_the_linter():
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "emerdiff_ros", "test", "bench",
                           "launch", "setup.py"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
