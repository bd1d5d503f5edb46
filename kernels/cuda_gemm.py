"""The GEMM ladder: five FP32 matmul kernels in Numba CUDA, each a step of the classic
optimisation path, runnable by name (``kernels.cuda.LADDER``, also
``kernels.cuda.VERSIONS["matmul"]``)
and tested under the simulator against kernels.reference.

C[g] = A[g] @ B[g] for (batch, M, K) x (batch, K, N) row-major float arrays; batch on
grid z. Rungs 1, 2 and 4 make transposed operands contiguous first (study versions);
rung 5 reads them in place, as the production paths of kernels.cuda do.

| rung | name | what it adds | global loads per FMA |
|---|---|---|---|
| 1 | ``naive`` | one thread per C element, K loop from global memory | 2 |
| 2 | ``smem_tiled`` | T x T tiles of A and B staged in shared memory | 2/T |
| 3 | ``regblock2d`` | (the production 64x64 kernel; large matmuls run on rung 5) BM x BN block, each thread a TM x TN register tile: TM+TN shared loads per TM*TN FMAs | (1/BM + 1/BN) |
| 4 | ``vec4_transposed_a`` | each thread fetches 4 consecutive floats per operand per K-step (the 128-bit access pattern), A stored transposed with a padding column so the transposing stores spread over the shared-memory banks; 8x8 register tile | as 3 |
| 5 | ``double_buffered_warp`` | two shared stages: the next K-tile is fetched into registers while the current one is multiplied (one barrier per step); threads laid out by warp so that a warp covers a compact sub-tile and its shared reads broadcast; transposed operands read in place | as 3 |

Rung 5 is also production: kernels.cuda.matmul runs large products on it (its "wide
kernel", at kernels.cuda.WIDE_TILE). Measured on an H200 (2026-11-26, 4096^3, before it
read transposes in place): rung 3 7.86 ms, rung 4 4.95, rung 5 4.04, cuBLAS FP32 2.72.
Two knobs of rung 5 are left for a GPU to decide (kernels.cuda.WIDE_CANDIDATES, timed by
the sweep): ``unroll``, the rank-1 updates per trip of the K-step loop, which LLVM keeps
rolled at 8x8 per thread (instr/FMA 1.43, 1.40, 1.37 at 1, 2, 4); and ``group``, a
grouped block order (consecutive blocks walk `group` block rows down before moving
right) so that the operand panels in flight overlap in L2.

About rung 4's "128-bit" loads: Numba has no float4 type, so the four consecutive loads
are separate ``ld.global.f32`` unless LLVM merges them; the resource table
(benchmarks/resources.py) counts the vector loads in each kernel's PTX. The TF32
tensor-core kernel (kernels/cuda_tf32.py, CUDA C++) uses real float4 loads.

SASS instructions issued per FMA over one K-tile at the default tiles (sm_90, ptxas and
nvdisasm, benchmarks/resources.py; 1 would be FMAs alone): smem_tiled 4.3, regblock2d 1.8
(4x4 per thread), vec4_transposed_a 1.4 (8x8), double_buffered_warp 1.4. Rungs 3-5 use
flat shared tiles with unsigned subscripts (Numba adds a negative-index fix-up to every
signed one) and a K-step LLVM unrolls fully (a ``while`` loop; it left the ``range`` one
rolled): before that, 8.9, 1.9 and 2.4, with 142 registers for rung 4 (now 111). Issue
rate is one limit among several (latency, bandwidth, occupancy): only a GPU run ranks
the rungs.

Tiles: ``CONFIG[rung]``; tests use tiny ones (the simulator runs every thread as a
Python thread). ``configure(rung, **params)`` changes one.
"""
from __future__ import annotations

import functools
import math

from numba import cuda
from numba import uint64 as _U  # unsigned subscripts: no negative-index fix-up (kernels.cuda)

from ._cuda_runtime import xp_of  # (importing it also applies the simulator fix)
from ._common import check_float, check_matmul, dtype_name

__all__ = ["RUNGS", "CONFIG", "DEFAULT_CONFIG", "configure", "matmul_naive",
           "matmul_smem_tiled", "matmul_vec4_transposed_a",
           "matmul_double_buffered_warp"]

DEFAULT_CONFIG = {
    "naive": {"block": 16},
    "smem_tiled": {"tile": 32},
    "vec4_transposed_a": {"bm": 128, "bn": 128, "bk": 8, "tm": 8, "tn": 8, "pad": 4},
    # warp: threads per warp (32 on a GPU; smaller in simulator tests), ln: lanes of a
    # warp along N (a warp then covers (32/ln)*tm rows by ln*tn columns)
    # unroll: rank-1 updates per trip of the K-step loop; group: block rows a column of
    # consecutive blocks walks (1: row-major block order)
    "double_buffered_warp": {"bm": 128, "bn": 128, "bk": 8, "tm": 8, "tn": 8, "pad": 4,
                             "warp": 32, "ln": 4, "unroll": 1, "group": 1},
}
CONFIG = {k: dict(v) for k, v in DEFAULT_CONFIG.items()}


def configure(rung, **params):
    """Set tile parameters of one rung (validated on the next launch)."""
    if rung not in CONFIG:
        raise ValueError(f"configure: unknown rung {rung!r}, expected one of {sorted(CONFIG)}")
    unknown = set(params) - set(CONFIG[rung])
    if unknown:
        raise ValueError(f"configure: {rung} has no parameter(s) {sorted(unknown)}")
    CONFIG[rung].update(params)


def _operands(name, a, b, trans_a, trans_b):
    m, k, n = check_matmul(a, b, trans_a, trans_b)
    check_float(name, a, b)
    xp = xp_of(a)
    A = a[None] if a.ndim == 2 else a
    B = b[None] if b.ndim == 2 else b
    if trans_a:
        A = A.swapaxes(-1, -2)
    if trans_b:
        B = B.swapaxes(-1, -2)
    A, B = xp.ascontiguousarray(A), xp.ascontiguousarray(B)
    C = xp.empty((A.shape[0], m, n), dtype=a.dtype)
    return xp, A, B, C, m, n, k, a.ndim == 2


def _acc(dtype_name):
    from numba import float32, float64

    return float64 if dtype_name == "float64" else float32


# -- rung 1: naive ----------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _naive_kernel(dtype_name):
    acc_t = _acc(dtype_name)

    @cuda.jit
    def kernel(A, B, C):
        g = cuda.blockIdx.z
        col = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x  # x along N: coalesced B, C
        row = cuda.blockIdx.y * cuda.blockDim.y + cuda.threadIdx.y
        if row < C.shape[1] and col < C.shape[2]:
            acc = acc_t(0.0)  # (a bare 0.0 is a float64: the sum would run in float64)
            for k in range(A.shape[2]):
                acc += A[g, row, k] * B[g, k, col]
            C[g, row, col] = acc

    return kernel


def matmul_naive(a, b, trans_a=False, trans_b=False):
    """Rung 1: C[i, j] = sum_k A[i, k] B[k, j], one thread per C element."""
    xp, A, B, C, m, n, k, squeeze = _operands("matmul_naive", a, b, trans_a, trans_b)
    t = CONFIG["naive"]["block"]
    _naive_kernel(A.dtype.name)[(math.ceil(n / t), math.ceil(m / t), A.shape[0]), (t, t)](A, B, C)
    return C[0] if squeeze else C


# -- rung 2: shared-memory tiles ----------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _smem_kernel(t, dtype_name):
    acc_t = _acc(dtype_name)

    @cuda.jit
    def kernel(A, B, C):
        g = cuda.blockIdx.z
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        row = cuda.blockIdx.y * t + ty
        col = cuda.blockIdx.x * t + tx
        M, K, N = A.shape[1], A.shape[2], B.shape[2]
        As = cuda.shared.array((t, t), dtype=acc_t)
        Bs = cuda.shared.array((t, t), dtype=acc_t)
        acc = acc_t(0.0)
        for k0 in range(0, K, t):
            As[ty, tx] = A[g, row, k0 + tx] if row < M and k0 + tx < K else acc_t(0.0)
            Bs[ty, tx] = B[g, k0 + ty, col] if k0 + ty < K and col < N else acc_t(0.0)
            cuda.syncthreads()
            for kk in range(t):
                acc += As[ty, kk] * Bs[kk, tx]
            cuda.syncthreads()
        if row < M and col < N:
            C[g, row, col] = acc

    return kernel


def matmul_smem_tiled(a, b, trans_a=False, trans_b=False):
    """Rung 2: T x T tiles of A and B in shared memory; each loaded element is used T times."""
    xp, A, B, C, m, n, k, squeeze = _operands("matmul_smem_tiled", a, b, trans_a, trans_b)
    t = CONFIG["smem_tiled"]["tile"]
    _smem_kernel(t, A.dtype.name)[(math.ceil(n / t), math.ceil(m / t), A.shape[0]), (t, t)](A, B, C)
    return C[0] if squeeze else C


# -- rung 3: today's register-blocked kernel ------------------------------------------------------
# kernels.cuda.matmul itself (BM x BN block, TM x TN register tile per thread, tile set by
# kernels.cuda.set_tile); kernels.cuda.LADDER puts it between rungs 2 and 4.


# -- rungs 4 and 5 ---------------------------------------------------------------------------------
def _check_vec_config(name, c, nthreads):
    bm, bn, bk, tm, tn = c["bm"], c["bn"], c["bk"], c["tm"], c["tn"]
    if bm % tm or bn % tn or bk % 4:
        raise ValueError(f"{name}: need BM % TM == BN % TN == 0 and BK % 4 == 0, got {c}")
    if bm * bk != 4 * nthreads or bk * bn != 4 * nthreads:
        raise ValueError(f"{name}: each thread loads one 4-vector of A and of B per K-step: "
                         f"need BM*BK == BK*BN == 4 * threads ({nthreads}), got {c}")


@cuda.jit(device=True, inline=True)
def _load4(X, g, r, c, R, Cn, out):
    """out[0:4] = X[g, r, c:c+4], zero outside (R, Cn); one 16-byte access when in range."""
    if r < R and c + 3 < Cn:
        out[0] = X[g, _U(r), _U(c)]
        out[1] = X[g, _U(r), _U(c + 1)]
        out[2] = X[g, _U(r), _U(c + 2)]
        out[3] = X[g, _U(r), _U(c + 3)]
    else:
        for i in range(4):
            if r < R and c + i < Cn:
                out[i] = X[g, _U(r), _U(c + i)]
            else:
                out[i] = 0  # (an int: a 0.0 would make the value a float64 first)


@functools.lru_cache(maxsize=None)
def _vec4_kernel(bm, bn, bk, tm, tn, pad, dtype_name):
    acc_t = _acc(dtype_name)
    threads_n = bn // tn
    a_per_row = bk // 4   # 4-vectors along K in one row of the A tile
    b_per_row = bn // 4
    a_cols = bm + pad     # a compile-time constant (shared array shapes must be)
    size_a, size_b = bk * a_cols, bk * bn

    @cuda.jit
    def kernel(A, B, C):
        g = cuda.blockIdx.z
        M, K, N = A.shape[1], A.shape[2], B.shape[2]
        # As is A's tile transposed (k-major) and padded: the 4 transposing stores of a
        # thread go to 4 rows whose starts are bm+pad apart, i.e. different banks
        As = cuda.shared.array(size_a, dtype=acc_t)   # flat: unsigned subscripts
        Bs = cuda.shared.array(size_b, dtype=acc_t)
        acc = cuda.local.array((tm, tn), dtype=acc_t)
        ra = cuda.local.array(tm, dtype=acc_t)
        rb = cuda.local.array(tn, dtype=acc_t)
        va = cuda.local.array(4, dtype=acc_t)
        vb = cuda.local.array(4, dtype=acc_t)
        tid = cuda.threadIdx.x
        ty, tx = tid // threads_n, tid % threads_n
        row0, col0 = cuda.blockIdx.y * bm, cuda.blockIdx.x * bn
        a_r, a_k = tid // a_per_row, (tid % a_per_row) * 4
        b_k, b_c = tid // b_per_row, (tid % b_per_row) * 4
        for i in range(tm):
            for j in range(tn):
                acc[i, j] = 0.0
        for k0 in range(0, K, bk):
            _load4(A, g, row0 + a_r, k0 + a_k, M, K, va)
            _load4(B, g, k0 + b_k, col0 + b_c, K, N, vb)
            for i in range(4):
                As[_U((a_k + i) * a_cols + a_r)] = va[i]
                Bs[_U(b_k * bn + b_c + i)] = vb[i]
            cuda.syncthreads()
            kk = 0
            while kk < bk:  # (a while loop: LLVM unrolls it fully, a range loop it did not)
                for i in range(tm):
                    ra[i] = As[_U(kk * a_cols + ty * tm + i)]
                for j in range(tn):
                    rb[j] = Bs[_U(kk * bn + tx * tn + j)]
                for i in range(tm):
                    for j in range(tn):
                        acc[i, j] += ra[i] * rb[j]
                kk += 1
            cuda.syncthreads()
        for i in range(tm):
            r = row0 + ty * tm + i
            if r < M:
                for j in range(tn):
                    c = col0 + tx * tn + j
                    if c < N:
                        C[g, _U(r), _U(c)] = acc[i, j]

    return kernel


def matmul_vec4_transposed_a(a, b, trans_a=False, trans_b=False):
    """Rung 4: 4-wide operand fetches, A tile stored transposed and padded, 8x8 per thread."""
    xp, A, B, C, m, n, k, squeeze = _operands("matmul_vec4_transposed_a", a, b, trans_a, trans_b)
    c = CONFIG["vec4_transposed_a"]
    nthreads = (c["bm"] // c["tm"]) * (c["bn"] // c["tn"])
    _check_vec_config("matmul_vec4_transposed_a", c, nthreads)
    kern = _vec4_kernel(c["bm"], c["bn"], c["bk"], c["tm"], c["tn"], c["pad"], A.dtype.name)
    kern[(math.ceil(n / c["bn"]), math.ceil(m / c["bm"]), A.shape[0]), nthreads](A, B, C)
    return C[0] if squeeze else C


@functools.lru_cache(maxsize=None)
def _dbuf_kernel(bm, bn, bk, tm, tn, pad, warp, ln, unroll, group, trans_a, trans_b,
                 dtype_name):
    """Rung 5 for one configuration and operand layout: A stored (batch, M, K), or
    (batch, K, M) when trans_a; B stored (batch, K, N), or (batch, N, K) when trans_b.
    Transposes are read in place, so kernels.cuda's production matmul runs large
    products on it as they come (kernel(A, B, C, M, N, K), C (batch, M, N))."""
    acc_t = _acc(dtype_name)
    lm = warp // ln                    # lanes of a warp along M
    warps_n = (bn // tn) // ln         # warps along N
    # both tiles are k-major in shared memory, As[k][m] and Bs[k][n]. A thread fetches one
    # 4-vector of each operand per K-tile, along the operand's contiguous axis: for A as
    # stored and a transposed B that is K, and the 4 values go to 4 k-rows (transposing
    # stores, spread over the banks by padding the rows); otherwise they go to one k-row
    a_cols = bm + pad
    b_cols = bn + pad if trans_b else bn
    a_span = bm // 4 if trans_a else bk // 4   # threads per row of the operand as stored
    b_span = bk // 4 if trans_b else bn // 4
    stage_a, stage_b = bk * a_cols, bk * b_cols
    size_a, size_b = 2 * stage_a, 2 * stage_b   # two stages

    @cuda.jit(device=True, inline=True)
    def fetch(A, B, g, k0, row0, col0, ap, aq, bp, bq, M, N, K, va, vb):
        # this thread's 4-vectors of the K-tile at k0 (zeros outside the matrices)
        if trans_a:
            _load4(A, g, k0 + ap, row0 + aq, K, M, va)
        else:
            _load4(A, g, row0 + ap, k0 + aq, M, K, va)
        if trans_b:
            _load4(B, g, col0 + bp, k0 + bq, N, K, vb)
        else:
            _load4(B, g, k0 + bp, col0 + bq, K, N, vb)

    @cuda.jit(device=True, inline=True)
    def stage(As, Bs, st, ap, aq, bp, bq, va, vb):
        for i in range(4):
            if trans_a:
                As[_U(st * stage_a + ap * a_cols + aq + i)] = va[i]
            else:
                As[_U(st * stage_a + (aq + i) * a_cols + ap)] = va[i]
            if trans_b:
                Bs[_U(st * stage_b + (bq + i) * b_cols + bp)] = vb[i]
            else:
                Bs[_U(st * stage_b + bp * b_cols + bq + i)] = vb[i]

    @cuda.jit(device=True, inline=True)
    def mac(As, Bs, a_off, b_off, ra, rb, acc):
        # one rank-1 update of the register tile: k-row a_off of As, b_off of Bs
        for i in range(tm):
            ra[i] = As[_U(a_off + i)]
        for j in range(tn):
            rb[j] = Bs[_U(b_off + j)]
        for i in range(tm):
            for j in range(tn):
                acc[i, j] += ra[i] * rb[j]

    @cuda.jit
    def kernel(A, B, C, M, N, K):
        g = cuda.blockIdx.z
        bx, by = cuda.blockIdx.x, cuda.blockIdx.y
        if group > 1:
            # grouped block order: consecutive blocks walk a column of `group` block rows
            # before moving right, so the A panels and B panels in flight at one time
            # overlap more and are re-read from L2 rather than from memory
            gx, gy = cuda.gridDim.x, cuda.gridDim.y
            pid = by * gx + bx
            width = group * gx
            first = (pid // width) * group
            rows = min(gy - first, group)
            by = first + (pid % width) % rows
            bx = (pid % width) // rows
        As = cuda.shared.array(size_a, dtype=acc_t)   # flat: unsigned subscripts
        Bs = cuda.shared.array(size_b, dtype=acc_t)
        acc = cuda.local.array((tm, tn), dtype=acc_t)
        ra = cuda.local.array(tm, dtype=acc_t)
        rb = cuda.local.array(tn, dtype=acc_t)
        va = cuda.local.array(4, dtype=acc_t)
        vb = cuda.local.array(4, dtype=acc_t)
        tid = cuda.threadIdx.x
        w, lane = tid // warp, tid % warp
        # warp tiling: warp (wm, wn) owns rows [wm*lm*tm, +lm*tm) and columns
        # [wn*ln*tn, +ln*tn); within it lane (lane // ln, lane % ln) owns a tm x tn tile
        trow = ((w // warps_n) * lm + lane // ln) * tm
        tcol = ((w % warps_n) * ln + lane % ln) * tn
        row0, col0 = by * bm, bx * bn
        # this thread's 4-vector of each operand tile as stored: row p, columns q..q+3
        ap, aq = tid // a_span, (tid % a_span) * 4
        bp, bq = tid // b_span, (tid % b_span) * 4
        for i in range(tm):
            for j in range(tn):
                acc[i, j] = 0.0
        fetch(A, B, g, 0, row0, col0, ap, aq, bp, bq, M, N, K, va, vb)
        stage(As, Bs, 0, ap, aq, bp, bq, va, vb)
        cuda.syncthreads()
        ntiles = (K + bk - 1) // bk
        for t in range(ntiles):
            cur = t % 2
            more = t + 1 < ntiles
            if more:  # fetch the next K-tile into registers; its latency hides behind the FMAs
                fetch(A, B, g, (t + 1) * bk, row0, col0, ap, aq, bp, bq, M, N, K, va, vb)
            kk = 0
            while kk < bk:  # `unroll` rank-1 updates per trip (LLVM keeps the loop rolled)
                r = cur * bk + kk  # k-row of the current stage
                mac(As, Bs, r * a_cols + trow, r * b_cols + tcol, ra, rb, acc)
                if unroll > 1:
                    mac(As, Bs, (r + 1) * a_cols + trow, (r + 1) * b_cols + tcol, ra, rb, acc)
                if unroll > 2:
                    mac(As, Bs, (r + 2) * a_cols + trow, (r + 2) * b_cols + tcol, ra, rb, acc)
                    mac(As, Bs, (r + 3) * a_cols + trow, (r + 3) * b_cols + tcol, ra, rb, acc)
                kk += unroll
            if more:
                # the other stage was last read in step t-1, before that step's barrier
                stage(As, Bs, 1 - cur, ap, aq, bp, bq, va, vb)
            cuda.syncthreads()
        for i in range(tm):
            r = row0 + trow + i
            if r < M:
                for j in range(tn):
                    c = col0 + tcol + j
                    if c < N:
                        C[g, _U(r), _U(c)] = acc[i, j]

    return kernel


def check_dbuf_config(name, c):
    """Validate a rung-5 configuration (a dict like DEFAULT_CONFIG["double_buffered_warp"])
    and return its threads per block."""
    nthreads = (c["bm"] // c["tm"]) * (c["bn"] // c["tn"])
    _check_vec_config(name, c, nthreads)
    lm = c["warp"] // c["ln"]
    if (c["bm"] % 4 or c["bn"] % 4 or c["warp"] % c["ln"] or nthreads % c["warp"]
            or (c["bn"] // c["tn"]) % c["ln"] or (c["bm"] // c["tm"]) % lm):
        raise ValueError(f"{name}: the warp layout (warp, ln) must tile the (BM/TM) x (BN/TN) "
                         f"threads exactly and BM, BN be multiples of 4, got {c}")
    if c["unroll"] not in (1, 2, 4) or c["group"] < 1:
        raise ValueError(f"{name}: unroll must be 1, 2 or 4 (rank-1 updates per trip of the "
                         f"K-step, BK is a multiple of 4) and group >= 1, got {c}")
    return nthreads


def dbuf_kernel_for(c, trans_a, trans_b, dtype_name):
    """The compiled rung-5 kernel of configuration c (validated) and operand layout."""
    check_dbuf_config("dbuf_kernel_for", c)
    return _dbuf_kernel(c["bm"], c["bn"], c["bk"], c["tm"], c["tn"], c["pad"], c["warp"],
                        c["ln"], c["unroll"], c["group"], bool(trans_a), bool(trans_b),
                        dtype_name)


def launch_dbuf(name, A, B, C, m, n, k, trans_a, trans_b, c, launcher=None):
    """C[g] = op(A[g]) @ op(B[g]) on rung 5 with configuration c, for 3-D arrays as stored
    (A (batch, M, K) or, when trans_a, (batch, K, M); likewise B; C (batch, M, N)).
    ``launcher(kernel, grid, threads)`` makes the launch (kernels.cuda passes its driver
    launch); by default numba-cuda's ``kernel[grid, threads]``."""
    nthreads = check_dbuf_config(name, c)
    if m == 0 or n == 0 or C.shape[0] == 0:
        return C
    kern = dbuf_kernel_for(c, trans_a, trans_b, dtype_name(C.dtype))
    grid = (math.ceil(n / c["bn"]), math.ceil(m / c["bm"]), C.shape[0])
    launch = kern[grid, nthreads] if launcher is None else launcher(kern, grid, nthreads)
    launch(A, B, C, m, n, k)
    return C


def matmul_double_buffered_warp(a, b, trans_a=False, trans_b=False):
    """Rung 5: rung 4 with two shared stages (prefetch into registers) and warp tiling;
    transposed operands are read in place."""
    m, k, n = check_matmul(a, b, trans_a, trans_b)
    check_float("matmul_double_buffered_warp", a, b)
    xp = xp_of(a)
    A = a[None] if a.ndim == 2 else a
    B = b[None] if b.ndim == 2 else b
    C = xp.empty((A.shape[0], m, n), dtype=a.dtype)
    launch_dbuf("matmul_double_buffered_warp", A, B, C, m, n, k, trans_a, trans_b,
                CONFIG["double_buffered_warp"])
    return C[0] if a.ndim == 2 else C


# rung 3 is kernels.cuda.matmul; the whole ladder in order is kernels.cuda.LADDER
RUNGS = {
    "naive": matmul_naive,
    "smem_tiled": matmul_smem_tiled,
    "vec4_transposed_a": matmul_vec4_transposed_a,
    "double_buffered_warp": matmul_double_buffered_warp,
}


def kernels_for_ptx():
    """(name, python function, Numba signature, threads per block, config) of every ladder
    kernel at its production configuration, for PTX compilation and the resource table."""
    from numba import float32, int64, types

    a3 = types.Array(float32, 3, "C")
    sig = (a3, a3, a3)
    sig6 = sig + (int64, int64, int64)  # rung 5 takes M, N, K (its operands may be transposed)
    out = [("gemm naive", _naive_kernel("float32").py_func, sig, CONFIG["naive"]["block"] ** 2)]
    t = DEFAULT_CONFIG["smem_tiled"]["tile"]
    out.append(("gemm smem_tiled", _smem_kernel(t, "float32").py_func, sig, t * t))
    c = DEFAULT_CONFIG["vec4_transposed_a"]
    nt = (c["bm"] // c["tm"]) * (c["bn"] // c["tn"])
    out.append(("gemm vec4_transposed_a", _vec4_kernel(c["bm"], c["bn"], c["bk"], c["tm"], c["tn"],
                                                       c["pad"], "float32").py_func, sig, nt))
    c = DEFAULT_CONFIG["double_buffered_warp"]
    nt = (c["bm"] // c["tm"]) * (c["bn"] // c["tn"])
    out.append(("gemm double_buffered_warp",
                dbuf_kernel_for(c, False, False, "float32").py_func, sig6, nt))
    return out
