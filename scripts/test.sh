#!/usr/bin/env bash
# The test suite: set up (with the test extra: pytest, hypothesis, torch for parity tests)
# and run pytest. Extra arguments go to pytest. No GPU needed: CUDA kernels run under
# Numba's simulator; `pytest -m gpu` tests are skipped visibly without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
bash scripts/words.sh  # (tests/test_charlm.py's word list)
exec .venv/bin/python -m pytest -q "$@"
