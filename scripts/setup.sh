#!/usr/bin/env bash
# Set up a virtual environment in .venv with tinygrad_k installed (editable) and the extras
# named in $1 (e.g. "plot" or "test"). Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check)
if [[ "$extras" == *test* ]] && ! .venv/bin/python -c "import torch" 2>/dev/null; then
  # PyTorch is only a test baseline: try the release this project is tested with first
  # (a CPU wheel is often provided locally); the test extra below accepts any >= 2.0.
  "${PIP[@]}" "torch==2.13.0" || echo "[setup] torch 2.13.0 not available; the test extra picks a torch"
fi
# On an Intel CPU the CPU kernels multiply with MKL (kernels/_cpu_blas.py), where its wheel
# is installed: add the mkl extra there (TINYGRAD_K_BLAS=openblas keeps OpenBLAS alone).
if [ "$(uname -s)-$(uname -m)" = "Linux-x86_64" ] && grep -qm1 GenuineIntel /proc/cpuinfo \
   && [ "${TINYGRAD_K_BLAS:-auto}" != openblas ]; then
  extras="${extras:+$extras,}mkl"
fi
spec="."
[ -n "$extras" ] && spec=".[$extras]"
echo "[setup] pip install -e '$spec'"
"${PIP[@]}" -e "$spec"
