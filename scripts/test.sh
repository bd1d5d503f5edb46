#!/usr/bin/env bash
# The test suite: set up (with the test extra: pytest, hypothesis, torch for parity tests)
# and run pytest. Extra arguments go to pytest. No GPU needed: CUDA kernels run under
# Numba's simulator; `pytest -m gpu` tests are skipped visibly without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
bash scripts/data.sh  # Fashion-MNIST and the word list, where missing (tests train on them)
# With no arguments, the whole suite in two runs: a pytest-xdist worker a core (at most 4;
# Numba's compiles, most of a fresh run, overlap) for all but the tests that share one
# process's state -- the gradcheck and parity tests and the coverage check that reads what
# they recorded (tests/conftest.py) -- which run after, in one process. With arguments
# (a file, -k, -x ...): one process, as `pytest -q ARGS`.
workers=$(nproc 2>/dev/null || echo 1)
[ "$workers" -le 4 ] || workers=4
if [ $# -gt 0 ] || [ "$workers" -lt 2 ] || ! .venv/bin/python -c "import xdist" 2>/dev/null; then
  exec .venv/bin/python -m pytest -q "$@"
fi
shared=(tests/test_op_gradients.py tests/test_op_parity.py tests/test_function_coverage.py)
rc=0
.venv/bin/python -m pytest -q -n "$workers" --dist loadfile "${shared[@]/#/--ignore=}" || rc=$?
.venv/bin/python -m pytest -q "${shared[@]}" || rc=$?
exit $rc
