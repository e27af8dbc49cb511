#!/usr/bin/env bash
# Create .venv (if missing) and install recircuit with its dev tools.
# torch: the CPU build on machines without an NVIDIA GPU, the default CUDA build where one is present.
set -euo pipefail
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip"
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    $PIP install "torch>=2.4"
  else
    # 2.13.0 is the version the test suite is checked with. Set
    # PIP_INDEX_URL=https://download.pytorch.org/whl/cpu to get the CPU-only build.
    $PIP install "torch==2.13.0" || $PIP install "torch>=2.4"
  fi
fi
$PIP install -q -e ".[dev]"
