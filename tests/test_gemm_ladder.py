"""The GPU GEMM ladder (kernels.cuda_gemm), the TF32 tensor-core GEMM (kernels.cuda_tf32)
and the sm_90 resource table, all checked without a GPU:

* every ladder rung runs under Numba's simulator (tiny tiles: the simulator runs each
  thread as a Python thread) against kernels.reference, on shapes that are not
  multiples of the tiles, batched and transposed, float32 and float64;
* the TF32 kernel's CUDA source compiles for sm_90 with NVRTC; its fragment layout is
  compared with the PTX ISA's, and a NumPy model of the kernel (its index expressions,
  the ISA's MMA) computes A @ B to TF32 accuracy;
* ptxas reports every production kernel spill-free, and the production GEMMs' K-loops
  issue few instructions besides their FMAs (benchmarks/resources.py, SASS by nvdisasm).
"""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import kernels.reference as R

ROOT = Path(__file__).resolve().parents[1]

SMALL = {"naive": {"block": 4}, "smem_tiled": {"tile": 4},
         "vec4_transposed_a": {"bm": 16, "bn": 16, "bk": 4, "tm": 4, "tn": 4, "pad": 1},
         "double_buffered_warp": {"bm": 16, "bn": 16, "bk": 4, "tm": 4, "tn": 4, "pad": 1,
                                  "warp": 4, "ln": 2}}


@pytest.fixture
def ladder():
    import kernels.cuda as K
    import kernels.cuda_gemm as G

    saved = {k: dict(v) for k, v in G.CONFIG.items()}
    for rung, params in SMALL.items():
        G.configure(rung, **params)
    K.set_tile(8, 8, 4, 2, 2)
    yield G
    for rung, params in saved.items():
        G.configure(rung, **params)
    K.set_tile(*K.DEFAULT_TILE)


def _ladder_fn(rung):
    import kernels.cuda as K

    return K.LADDER[rung]


RUNGS = ["naive", "smem_tiled", "regblock2d", "vec4_transposed_a", "double_buffered_warp"]


@pytest.mark.parametrize("rung", RUNGS)
@pytest.mark.parametrize("shape,batch,trans", [((5, 7, 9), 0, (False, False)),
                                               ((19, 13, 21), 0, (False, True)),
                                               ((6, 4, 3), 2, (True, True))])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ladder_rung_matches_reference(ladder, rung, shape, batch, trans, dtype):
    m, k, n = shape
    rng = np.random.default_rng(m * 100 + k)
    lead = (batch,) if batch else ()
    a = rng.standard_normal(lead + ((k, m) if trans[0] else (m, k))).astype(dtype)
    b = rng.standard_normal(lead + ((n, k) if trans[1] else (k, n))).astype(dtype)
    got = _ladder_fn(rung)(a, b, *trans)
    want = R.matmul(a, b, *trans)
    assert got.shape == want.shape and got.dtype == dtype
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.sqrt(k))


@pytest.mark.parametrize("unroll,group,trans", [(2, 1, (False, False)), (4, 2, (True, False)),
                                                (1, 3, (False, True)), (4, 5, (True, True))])
def test_rung5_unrolled_and_grouped_orders_match_reference(ladder, unroll, group, trans):
    """Rung 5's tuning knobs (the wide kernel's sweep candidates): 2 or 4 rank-1 updates
    per trip of the K-step, and grouped block order -- on a 3 x 4 grid of blocks, so that
    the last group of block rows is partial (group 2) or the only one (3 and 5)."""
    ladder.configure("double_buffered_warp", unroll=unroll, group=group)
    m, k, n = 37, 12, 50
    rng = np.random.default_rng(unroll * 10 + group)
    a = rng.standard_normal((k, m) if trans[0] else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if trans[1] else (k, n)).astype(np.float32)
    got = ladder.matmul_double_buffered_warp(a, b, *trans)
    np.testing.assert_allclose(got, R.matmul(a, b, *trans), rtol=1e-5, atol=1e-5 * np.sqrt(k))


def test_ladder_is_registered_and_runnable_by_name():
    import kernels.cuda as K
    import kernels.cuda_gemm as G

    assert list(K.LADDER) == RUNGS and "regblock2d" not in G.RUNGS
    versions = getattr(K, "VERSIONS", {}).get("matmul")
    if versions is not None:
        assert set(RUNGS) <= set(versions)


def test_ladder_rejects_a_tile_its_threads_cannot_load(ladder):
    ladder.configure("vec4_transposed_a", bk=8)
    with pytest.raises(ValueError, match="4-vector"):
        ladder.matmul_vec4_transposed_a(np.ones((4, 4), np.float32), np.ones((4, 4), np.float32))
    with pytest.raises(ValueError, match="unknown rung"):
        ladder.configure("fastest", tile=1)


# -- TF32 -------------------------------------------------------------------------------------
def test_tf32_fragments_are_the_ptx_isa_layout():
    import kernels.cuda_tf32 as T

    for frag, isa, n in ((T.A_FRAG, T.isa_a, 4), (T.B_FRAG, T.isa_b, 2), (T.C_FRAG, T.isa_c, 4)):
        cells = set()
        for lane in range(32):
            for i in range(n):
                rc = tuple(T._frag_index(e, lane) for e in frag[i])
                assert rc == isa(lane, i), (frag, lane, i)
                cells.add(rc)
        assert len(cells) == 32 * n  # every element of the tile is held by exactly one lane


def test_round_tf32_keeps_ten_mantissa_bits():
    import kernels.cuda_tf32 as T

    x = np.array([1.0, 1 + 2 ** -10, 1 + 2 ** -11, 1 + 2 ** -12, -(1 + 2 ** -11), 3.0e-3],
                 np.float32)
    r = T.round_tf32(x)
    assert r[0] == 1.0 and r[1] == 1 + 2 ** -10
    assert r[2] == 1 + 2 ** -10 and r[4] == -(1 + 2 ** -10)  # a tie rounds away from zero
    assert r[3] == 1.0
    assert abs(r[5] - x[5]) <= x[5] * 2 ** -11


@pytest.mark.parametrize("shape", [(20, 24, 12), (70, 9, 66)])
def test_tf32_kernel_model_computes_the_product(shape):
    import kernels.cuda_tf32 as T

    m, k, n = shape
    rng = np.random.default_rng(k)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    got = T.emulate(a, b)
    exact = a.astype(np.float64) @ b
    assert np.linalg.norm(got - exact) / np.linalg.norm(exact) < 1e-3
    # the only error is the TF32 rounding of the operands
    np.testing.assert_allclose(got, T.round_tf32(a).astype(np.float64) @ T.round_tf32(b),
                               rtol=1e-5, atol=1e-5)


def test_tf32_kernel_compiles_for_sm90_with_nvrtc():
    import kernels.cuda_tf32 as T

    try:
        from cuda.bindings import nvrtc  # noqa: F401
        from benchmarks.resources import nvrtc_ptx
        ptx = nvrtc_ptx(T.SOURCE)
    except ImportError as e:
        pytest.skip(f"NVRTC not available here: {e}"[:200])
    assert ptx.count("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32") == 2 * T.MI * T.NI
    assert "cvt.rna.tf32.f32" in ptx and "ld.global.nc.v4.f32" in ptx


def test_tf32_only_when_allowed(monkeypatch):
    import kernels.cuda as K
    import kernels.cuda_tf32 as T
    import tinygrad_k  # noqa: F401

    assert T.tf32_allowed() is False  # nothing loaded or the default: off
    flags = type(sys)("tinygrad_k.backends.cuda")
    flags.matmul = type("M", (), {"allow_tf32": True})()
    monkeypatch.setitem(sys.modules, "tinygrad_k.backends.cuda", flags)
    assert T.tf32_allowed() is True
    calls = []
    monkeypatch.setattr(T, "matmul", lambda *a, **k: calls.append(1))
    a = np.ones((3, 4), np.float32)
    K.matmul(a, a.T.copy())  # the simulator: NumPy arrays never take the CuPy TF32 path
    assert calls == []
    monkeypatch.setattr(K, "_simulating", lambda: False)
    monkeypatch.setattr(K, "_xp", lambda arr: np)
    K.matmul(a, a.T.copy())
    assert calls == [1]
    K.matmul(a.astype(np.float64), a.T.astype(np.float64))  # float64: never TF32
    assert calls == [1]


# -- resources ----------------------------------------------------------------------------------
def test_resource_table_production_kernels_do_not_spill(nvvm_parts):
    # `python -m benchmarks.resources --out DIR`, run with the other NVVM checks (each
    # kernel compiled once: tests/nvvm_session.py)
    import json

    from nvvm_session import part_output

    part_output(nvvm_parts, "resources")
    out = Path(nvvm_parts["_out_dir"])
    rows = json.loads((out / "resources.json").read_text())
    names = {r["kernel"] for r in rows}
    assert {"gemm matmul (regblock2d)", "conv input gradient (direct; 3x3, stride 2, pad 1)",
            "maxpool forward (2x2, stride 2)",
            "gemm double_buffered_warp (ladder)"} <= names
    assert any("TF32" in n for n in names)
    for r in rows:
        assert 0 < r["registers"] <= 255 and 0 < r["occupancy"] <= 1
        if r["production"]:
            assert r["spill_stores"] == 0 and r["spill_loads"] == 0, r
        if "64-register" in r["kernel"]:  # the cap the sweep tries reaches ptxas
            assert r["registers"] <= 64 and not r["production"], r
    assert any("64-register matmul" in n for n in names)
    assert "| kernel |" in (out / "resources.md").read_text()
    # the K-loop's issue slots per FMA (SASS through nvdisasm, in the test extra): the
    # production GEMMs' index arithmetic must stay lean (1.8 for matmul, 2.3 for the conv
    # forward, 2.8 for the weight and 2.3 for the input gradient when this was written;
    # 8.9, 11.3 and 15.0 before, and ~50 for the direct input-gradient kernel)
    from benchmarks.resources import nvdisasm_path

    if nvdisasm_path() is None:
        pytest.skip("no nvdisasm (pip install nvidia-cuda-nvdisasm): instr/FMA not checked")
    bounds = {"gemm matmul": 2.5, "gemm conv forward": 3.0, "gemm conv weight": 3.5,
              "gemm conv input": 3.0}
    for r in rows:
        bound = next((b for prefix, b in bounds.items() if r["kernel"].startswith(prefix)), None)
        if r["production"] and bound:
            assert r["instr_per_fma"] is not None and r["instr_per_fma"] <= bound, r


def test_k_loop_cost_counts_a_whole_k_tile():
    """benchmarks.resources.k_loop_cost on hand-made SASS: an FMA loop holding a whole
    K-tile is read alone; an inner one runs fma_per_tile / its FFMAs times inside the loop
    around it."""
    from benchmarks.resources import k_loop_cost

    def sass(lines):
        return [(16 * i, t) for i, t in enumerate(lines)]

    unrolled = sass(["MOV R0, R1", "LDS R2, [R3]", "FFMA R4, R2, R2, R4",
                     "FFMA R5, R2, R2, R5", "@P0 BRA 0x10", "EXIT"])
    assert k_loop_cost(unrolled, 2) == 4 / 2            # the loop: LDS, 2 FFMA, BRA
    nested = sass(["MOV R0, R1", "LDG R9, [R8]", "STS [R7], R9", "BAR.SYNC 0x0",
                   "LDS R2, [R3]", "FFMA R4, R2, R2, R4", "@P1 BRA 0x40",
                   "@P0 BRA 0x10", "EXIT"])
    # inner loop 0x40-0x60: 3 instructions, 1 FFMA, run 8 times; outer 0x10-0x70: 7
    assert k_loop_cost(nested, 8) == (7 - 3 + 3 * 8) / 8
    assert k_loop_cost(sass(["MOV R0, R1", "@P0 BRA 0x0"]), 4) is None  # no FMA loop


def test_gpu_check_script_parses_and_its_parts_are_importable():
    subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / "gpu_check.sh")], check=True)
    from benchmarks import gpu_parts

    for part in ("ladder", "conv", "pool", "train", "launch", "sweep"):
        assert callable(getattr(gpu_parts, f"part_{part}"))
        assert f"gpu_parts {part}" in (ROOT / "benchmarks" / "gpu_check.sh").read_text()


def test_tile_sweep_runs_every_candidate_and_restores_the_tile():
    """The GPU sweep's loop, under the simulator at toy sizes: every candidate tile is
    valid for set_tile, its products are right, and the tile in force comes back."""
    import time

    import kernels.cuda as K
    from benchmarks import gpu_parts

    def timer(fn):
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t

    for tile in K.TILE_CANDIDATES:  # each a valid tile (raises otherwise)
        K.set_tile(*tile)
    for params in K.WIDE_CANDIDATES:  # each a valid change of the wide tile
        K._ladder.check_dbuf_config("test", {**K.WIDE_TILE, **params})
    tiles = [(8, 8, 4, 2, 2), (8, 4, 3, 2, 1, 4, False, (4, 2))]  # the second by warp
    small = {"bm": 16, "bn": 16, "bk": 4, "tm": 4, "tn": 4, "pad": 1, "warp": 4, "ln": 2}
    wide = [dict(small, unroll=4, group=2), dict(small, unroll=3)]
    K.set_tile(4, 8, 2, 1, 2)
    wide_before = dict(K._wide_tile)
    launched = []  # (kernel family) of every matmul launch
    gemm, dbuf = K._launch_gemm, K._ladder.launch_dbuf
    K._launch_gemm = lambda *a, **k: launched.append("64x64") or gemm(*a, **k)
    K._ladder.launch_dbuf = lambda *a, **k: launched.append("wide") or dbuf(*a, **k)
    seen = []  # what a part stopped at its limit would have written: a row per tile so far
    try:
        rows = gpu_parts.sweep_rows(K, np, timer, 9, tiles + [(8, 8, 4, 3, 2)] + wide,
                                    {"c": ((1, 2, 3, 3), (3, 2, 3, 3), 1, 1)}, 600,
                                    on_row=lambda rows: seen.append(len(rows)))
        assert K._tile == [4, 8, 2, 1, 2] and K._wide_tile == wide_before
        assert K._WIDE_BLOCKS_PER_SM == 2
    finally:
        K.set_tile(*K.DEFAULT_TILE)
        K._launch_gemm, K._ladder.launch_dbuf = gemm, dbuf
    assert seen == [1, 2, 3, 4, 5]
    assert [r.get("tile") for r in rows] == [list(t[:5]) for t in tiles] + [[8, 8, 4, 3, 2], None,
                                                                            None]
    assert [r.get("warp_layout") for r in rows[:2]] == [None, [4, 2]] and K._WARP_LAYOUT is None
    for r in rows[:2]:
        assert r["rel_err"] < 1e-5 and r["matmul_s"] > 0, r
        assert r["c forward_s"] > 0 and r["c weight grad_s"] > 0, r
        assert r["conv_rel_err"] < 1e-5, r
    assert "set_tile" in rows[2]["error"]  # an invalid tile is reported, not fatal
    # the tile rows ran the 64x64 kernel, the wide row (two matmuls) the wide kernel
    assert "wide" not in launched[:launched.index("wide")] and launched.count("wide") == 2
    assert rows[3]["wide"]["unroll"] == 4 and rows[3]["rel_err"] < 1e-5, rows[3]
    assert "unroll must be 1, 2 or 4" in rows[4]["error"]
    table = gpu_parts.sweep_markdown(rows, 9, 1e-3, {"c": None})
    assert len(table) == 4 + len(rows) and "| 8,8,4,2,2 (4, single) | ? |" in table[4]
    assert "| 8,4,3,2,1 (4, single, warp 2x2) | ? |" in table[5]
    assert "| wide 16,16,4,4,4 (unroll 4, group 2, warp 2x2, A pad 1) | ? |" in table[7]
    assert all(line.count("|") == table[2].count("|") for line in table[4:]), table
