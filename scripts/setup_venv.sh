#!/usr/bin/env bash
# Create .venv with everything perception_rl needs, without a ROS install:
# PyTorch (CPU build), ROS 2 Kilted from its PyPI wheels, and this package (editable) with
# its test and benchmark requirements.
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# torch first, pinned: an unpinned torch would pull several GB of CUDA packages, while with
# 2.13.0 installed the package's plain `torch` requirement is already met.
.venv/bin/python -m pip install -q --disable-pip-version-check torch==2.13.0
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[ros,test,bench]'
