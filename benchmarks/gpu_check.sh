#!/usr/bin/env bash
# On a machine with a CUDA GPU, from the source tree:  bash benchmarks/gpu_check.sh
# Built for a GPU lent for 15 minutes, machine start included: the parts share one budget
# (GPU_CHECK_BUDGET seconds, default 330, so that a fix and a rerun still fit), each part
# also has its own limit, a failing part never stops the others, the measuring parts write
# their tables row by row (a part stopped at its limit keeps what it measured), and
# everything -- logs included -- lands in benchmarks/results/<date>-<gpu>/ (commit that
# folder). Most valuable first:
#   0. env: nvidia-smi, library versions
#   1. resources (in the background, CPU only): ptxas sm_90 registers / spills / smem /
#      occupancy of every kernel; waited for before the first timing
#   2. pytest -m gpu: every kernel at large sizes against the float64 reference
#   3. ladder: each GEMM rung and our TF32 kernel at 4096^3 vs cuBLAS FP32 and TF32
#   3b. tf32: TF32 products at model sizes (x @ w.T), ours vs cuBLAS TF32, GPU time and back
#      to back
#   4. conv: ResNet-18 CIFAR layers, forward + both gradients, vs cuDNN (TF32 off)
#   5. pool: max-pool forward/backward vs copy bandwidth of the same bytes
#   6. train: LeNet-5 training step at batch 256 vs PyTorch eager (separate processes; a
#      limit of 115 s gives it three rounds: one round, on a machine just started, measured
#      0.86x and 2.71x in two runs of the ninth session)
#   7. launch: the host's cost of one GEMM launch, the arguments passed four ways
#   8. sweep: the production GEMM at each tile of kernels.cuda.TILE_CANDIDATES and the
#      layouts beside the default (padding, double buffering, warp layout), then the wide
#      kernel at each of kernels.cuda.WIDE_CANDIDATES
#   9. profile: where LeNet-5's batch-256 step goes on the host, ours and PyTorch's
#  10. kernels: the kernel suite of python -m benchmarks --device cuda (one round)
# Environment:
#   GPU_CHECK_OUT=DIR       results folder (default benchmarks/results/<date>-<gpu>)
#   GPU_CHECK_BUDGET=S      seconds for all parts together (default 330)
#   GPU_CHECK_PARTS="a b"   run only these parts (a rerun after a fix), in the order above
#   GPU_CHECK_ARCHIVE=FILE  after every part, pack the results folder into FILE (.tar.gz),
#                           for runners that return few files (see benchmarks/README.md)
#   PYTHON=python3          the interpreter
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
export NUMBA_ENABLE_CUDASIM=0 PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"
budget="${GPU_CHECK_BUDGET:-330}"
only=" ${GPU_CHECK_PARTS:-} "
archive="${GPU_CHECK_ARCHIVE:-}"
gpu=$("$PY" -c "import cupy; n=cupy.cuda.runtime.getDeviceProperties(0)['name']; n=n.decode() if isinstance(n, bytes) else n; print(n.replace(' ', '-'))" 2>/dev/null) || gpu="unknown-gpu"
out="${GPU_CHECK_OUT:-benchmarks/results/$(date +%F)-${gpu}}"
mkdir -p "$out"
echo "== $gpu -> $out (budget ${budget}s)"
# parts.txt keeps every run's lines (a rerun of some parts appends to the first run's)
echo "== $(date -u +%FT%TZ) gpu_check on $gpu, budget ${budget}s, parts: ${GPU_CHECK_PARTS:-all}" >> "$out/parts.txt"
failed=()
start=$SECONDS

pack() {  # the folder, as it is now, into the archive (its last component as the top)
  [ -n "$archive" ] || return 0
  tar -czf "$archive.tmp" -C "$(dirname "$out")" "$(basename "$out")" && mv -f "$archive.tmp" "$archive"
}

wanted() { [ "$only" = "  " ] || [[ "$only" == *" $1 "* ]]; }

part() {  # part NAME SECONDS command...   ('@DEADLINE@' in the command: seconds it may use)
  local name=$1 secs=$2; shift 2
  wanted "$name" || return 0
  local left=$((budget - (SECONDS - start)))
  [ "$secs" -le "$left" ] || secs=$left
  if [ "$secs" -lt 10 ]; then
    echo "== $name: skipped, budget spent" | tee -a "$out/parts.txt"
    failed+=("$name")
    return 0
  fi
  # the part's own deadline leaves it time to write its table and exit before the kill
  local args=() a
  for a in "$@"; do args+=("${a//@DEADLINE@/$((secs * 4 / 5))}"); done
  echo "== $name (limit ${secs}s)"
  local t0=$SECONDS
  timeout --kill-after=5 "$secs" "${args[@]}" > "$out/$name.log" 2>&1
  local rc=$?
  tail -n 25 "$out/$name.log"
  echo "== $name: exit $rc after $((SECONDS - t0)) s" | tee -a "$out/parts.txt"
  [ $rc -eq 0 ] || failed+=("$name")
  pack
}

res_pid=""
if wanted resources; then  # CPU only (PTX and ptxas): runs beside the GPU's correctness tests
  (t0=$SECONDS
   timeout --kill-after=5 90 "$PY" -m benchmarks.resources --out "$out" > "$out/resources.log" 2>&1
   rc=$?
   echo "== resources: exit $rc after $((SECONDS - t0)) s (in the background)" >> "$out/parts.txt"
   exit $rc) &
  res_pid=$!
fi
wait_resources() {
  [ -n "$res_pid" ] || return 0
  wait "$res_pid" || failed+=("resources")
  res_pid=""
  tail -n 3 "$out/resources.log"
  pack
}

part env 20 bash -c "nvidia-smi; $PY -c 'import cupy, numba, numpy, sys; print(sys.version); print(\"cupy\", cupy.__version__, \"numba\", numba.__version__, \"numpy\", numpy.__version__)'; $PY -c 'import numba_cuda; print(\"numba-cuda\", numba_cuda.__version__)'; $PY -c 'import torch; print(\"torch\", torch.__version__, torch.version.cuda)'"
# a line per test as it ends (a run stopped at the limit still says what passed); with
# pytest-xdist (in the GPU image) four workers share the kernel compiles
xdist=(); "$PY" -c "import xdist" 2>/dev/null && xdist=(-n 4)
part pytest-gpu 100 "$PY" -m pytest -m gpu -v --tb=short -p no:cacheprovider -rs --maxfail=5 --durations=8 "${xdist[@]}"
wait_resources
part ladder 50 "$PY" -m benchmarks.gpu_parts ladder --out "$out" --deadline @DEADLINE@
part tf32 40 "$PY" -m benchmarks.gpu_parts tf32 --out "$out" --deadline @DEADLINE@
part conv 60 "$PY" -m benchmarks.gpu_parts conv --out "$out" --deadline @DEADLINE@
part pool 20 "$PY" -m benchmarks.gpu_parts pool --out "$out" --deadline @DEADLINE@
part train 115 "$PY" -m benchmarks.gpu_parts train --out "$out" --deadline @DEADLINE@
part launch 25 "$PY" -m benchmarks.gpu_parts launch --out "$out"
part sweep 70 "$PY" -m benchmarks.gpu_parts sweep --out "$out" --deadline @DEADLINE@
part profile 45 "$PY" -m benchmarks --profile lenet5 --batch 256 --device cuda --out "$out"
part kernels 60 "$PY" -m benchmarks --device cuda --suite kernels --pairs 1 --repeats 5 --out "$out/kernels"
wait_resources
pack
echo "== $((SECONDS - start)) s; results in $out${archive:+ (packed in $archive)}; failed parts: ${failed[*]:-none}"
[ ${#failed[@]} -eq 0 ]
