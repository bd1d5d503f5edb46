#!/usr/bin/env bash
# The test suite: set up (with the test extra: pytest, hypothesis, torch for parity tests)
# and run pytest. Extra arguments go to pytest. No GPU needed: CUDA kernels run under
# Numba's simulator; `pytest -m gpu` tests are skipped visibly without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
bash scripts/data.sh  # Fashion-MNIST and the word list, where missing (tests train on them)
# a worker a core, at most 4 (pytest-xdist; tests that share a process's state are grouped
# in tests/conftest.py); `bash scripts/test.sh -n 0` runs in one process
workers=$(nproc 2>/dev/null || echo 2)
[ "$workers" -le 4 ] || workers=4
exec .venv/bin/python -m pytest -q -n "$workers" --dist loadgroup "$@"
