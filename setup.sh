#!/usr/bin/env bash
# Set up LungGAN in ./.venv: PyTorch first (the CPU build where one is on disk;
# pip would otherwise pull a multi-GB CUDA build), then the package and test tools.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==${LUNGGAN_TORCH_VERSION:-2.13.0}"
.venv/bin/python -m pip install -q -e ".[test]"
echo "LungGAN is set up in $(pwd)/.venv"
