#!/usr/bin/env bash
# Sets up emerdiff_ros in a virtual environment (.venv) and runs the demo on the bundled CARLA frames.
#   ./bootstrap.sh             set up, then `emerdiff demo --out demo_out`
#   ./bootstrap.sh --no-demo   set up only
# Environment: PYTHON (default python3), TORCH_SPEC (default torch==2.13.0; for a CUDA build use the
# torch index of your choice, e.g. TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu128").
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}

# A venv left without pip (python3-venv was missing when it was made) is made again.
if ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
  if ! "$PYTHON" -m venv --clear .venv; then
    echo "Could not create a virtual environment. On Debian/Ubuntu: sudo apt-get install python3-venv" >&2
    exit 1
  fi
fi
# torch first and on its own: asked for by another package, an unpinned torch pulls GBs of CUDA wheels.
# shellcheck disable=SC2086
.venv/bin/python -m pip install --quiet --disable-pip-version-check $TORCH_SPEC
.venv/bin/python -m pip install --quiet --disable-pip-version-check --use-pep517 -c constraints.txt -e ".[ros,ray,test]"
# The CARLA client (carla_rig) has wheels for some Pythons and platforms only: without it, everything
# else works and carla_rig says what to install.
.venv/bin/python -m pip install --quiet --disable-pip-version-check --use-pep517 -c constraints.txt -e ".[ros,ray,test,carla]" \
  || echo "carla client not installed (wheels: Python 3.10-3.12 on x86-64 Linux with glibc >= 2.31, or Windows)"
echo "emerdiff_ros is set up in .venv (activate it with: source .venv/bin/activate)"

if [ "${1:-}" != "--no-demo" ]; then
  .venv/bin/emerdiff demo --out demo_out
fi
