#!/usr/bin/env bash
# On a machine with a CUDA GPU, from anywhere:  bash benchmarks/gpu_check.sh
# 1. pytest -m gpu: every kernel of kernels.cuda at large sizes against the float64
#    reference (||out-ref||/||ref|| < 1e-5 in float32; our kernels use no TF32) and every
#    fused CuPy kernel against its NumPy formula, plus a GPU training step vs the CPU;
# 2. python -m benchmarks --device cuda: each kernel timed with CUDA events (warm-up,
#    medians) against cuBLAS (CuPy matmul) and cuDNN (PyTorch, TF32 off), % of the
#    measured peaks (large copy, large cuBLAS product), and training steps vs PyTorch.
# Everything lands in benchmarks/results/<date>-<gpu>/ (commit that folder).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python3}"
gpu=$("$PY" -c "import cupy; n=cupy.cuda.runtime.getDeviceProperties(0)['name']; n=n.decode() if isinstance(n, bytes) else n; print(n.replace(' ', '-'))") || {
  echo "gpu_check: no CUDA GPU usable through CuPy" >&2; exit 2; }
out="benchmarks/results/$(date +%F)-${gpu}"
mkdir -p "$out"
echo "== $gpu -> $out"
status=0
{ "$PY" -m pytest -m gpu -q -p no:cacheprovider -rs &&
  "$PY" -m pytest -q -p no:cacheprovider tests/test_kernels_cuda.py; } 2>&1 \
  | tee "$out/pytest-gpu.txt" || status=1
"$PY" -m benchmarks --device cuda --suite all --out "$out" 2>&1 | tee "$out/benchmark-log.txt" || status=1
echo "== results: $out/results.md"
exit $status
