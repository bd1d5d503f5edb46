#!/usr/bin/env bash
# On a machine with a CUDA GPU, from the source tree:  bash benchmarks/gpu_check.sh
# Built for a first GPU session of a few minutes: every part has its own time limit
# (9.5 minutes if every part ran to its limit), a failing part never stops the others,
# and everything -- logs included -- lands in benchmarks/results/<date>-<gpu>/ (commit
# that folder).
#   0. nvidia-smi, library versions
#   1. resources: ptxas sm_90 registers / spills / smem / occupancy of every kernel
#   2. pytest -m gpu: every kernel at large sizes against the float64 reference
#   3. ladder: each GEMM rung and our TF32 kernel at 4096^3 vs cuBLAS FP32 and TF32
#   4. conv: ResNet-18 CIFAR layers, forward + both gradients, vs cuDNN (TF32 off)
#   5. pool: max-pool forward/backward vs copy bandwidth of the same bytes
#   6. train: LeNet-5 training step at batch 256 vs PyTorch eager (separate processes)
#   7. the kernel suite of python -m benchmarks --device cuda (one round)
#   8. sweep: the production GEMM at each tile of kernels.cuda.TILE_CANDIDATES
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
export NUMBA_ENABLE_CUDASIM=0
PY="${PYTHON:-python3}"
gpu=$("$PY" -c "import cupy; n=cupy.cuda.runtime.getDeviceProperties(0)['name']; n=n.decode() if isinstance(n, bytes) else n; print(n.replace(' ', '-'))" 2>/dev/null) || gpu="unknown-gpu"
out="${GPU_CHECK_OUT:-benchmarks/results/$(date +%F)-${gpu}}"
mkdir -p "$out"
echo "== $gpu -> $out"
failed=()
part() {  # part NAME SECONDS command...
  local name=$1 secs=$2; shift 2
  echo "== $name (limit ${secs}s)"
  local t0=$SECONDS
  timeout --kill-after=5 "$secs" "$@" > "$out/$name.log" 2>&1
  local rc=$?
  tail -n 25 "$out/$name.log"
  echo "== $name: exit $rc after $((SECONDS - t0)) s" | tee -a "$out/parts.txt"
  [ $rc -eq 0 ] || failed+=("$name")
}
part env 20 bash -c "nvidia-smi; $PY -c 'import cupy, numba, numpy, sys; print(sys.version); print(\"cupy\", cupy.__version__, \"numba\", numba.__version__, \"numpy\", numpy.__version__)'; $PY -c 'import torch; print(\"torch\", torch.__version__, torch.version.cuda)'"
part resources 60 "$PY" -m benchmarks.resources --out "$out"
part pytest-gpu 90 "$PY" -m pytest -m gpu -q -p no:cacheprovider -rs -x
part ladder 100 "$PY" -m benchmarks.gpu_parts ladder --out "$out"
part conv 70 "$PY" -m benchmarks.gpu_parts conv --out "$out"
part pool 30 "$PY" -m benchmarks.gpu_parts pool --out "$out"
part train 90 "$PY" -m benchmarks.gpu_parts train --out "$out"
part kernels 40 "$PY" -m benchmarks --device cuda --suite kernels --pairs 1 --repeats 5 --out "$out/kernels"
part sweep 65 "$PY" -m benchmarks.gpu_parts sweep --out "$out"
echo "== results in $out; failed parts: ${failed[*]:-none}"
[ ${#failed[@]} -eq 0 ]
