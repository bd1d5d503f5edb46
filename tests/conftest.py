"""Shared test setup.

* Without a real GPU the Numba CUDA simulator is switched on *before* anything imports
  numba, so the ``cuda`` device and ``kernels.cuda`` run (slowly) on the CPU.
* Hypothesis: ``deadline=None`` everywhere (Numba compiles on first call); the ``ci``
  profile (selected when CI is set) is derandomized so CI runs are repeatable.
"""
import os


def _has_real_gpu() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


if not _has_real_gpu():
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile("dev", deadline=None, max_examples=25,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", deadline=None, max_examples=25, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow], print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

import pytest  # noqa: E402


_NVVM = pytest.StashKey[object]()


class _NvvmEarly:
    """Starts the NVVM checks' subprocess at collection, if a selected test needs it, and
    runs those tests last (before the coverage check): it compiles while the others run.
    (A plugin object, so that conftest's own collection hook keeps its name.)"""

    @pytest.hookimpl(trylast=True)  # after -k/-m deselection
    def pytest_collection_modifyitems(self, config, items):
        needs = [i for i in items if "nvvm_parts" in getattr(i, "fixturenames", ())]
        if not needs or hasattr(config, "workerinput"):
            # (a pytest-xdist worker collects every test but runs only some: one that gets
            # a test needing the checks compiles them in the foreground, nvvm_parts)
            return
        import tempfile

        from nvvm_session import Session

        config.stash[_NVVM] = Session(tempfile.mkdtemp(prefix="tinygrad_k-nvvm-"))
        rest = [i for i in items if i not in needs]
        cut = next((k for k, i in enumerate(rest)
                    if i.path.name == "test_function_coverage.py"), len(rest))
        items[:] = rest[:cut] + needs + rest[cut:]

    def pytest_unconfigure(self, config):
        nvvm = config.stash.get(_NVVM, None)
        if nvvm is not None:
            import shutil

            nvvm.close()
            shutil.rmtree(nvvm.out_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def nvvm_parts(request, tmp_path_factory):
    """The NVVM checks (PTX, launch parameters, resource table), compiled in one process
    with the simulator off: tests/nvvm_session.py. Started at collection (above); run in
    the foreground where it was not."""
    nvvm = request.config.stash.get(_NVVM, None)
    if nvvm is not None:
        return nvvm.result()
    from nvvm_session import run_parts

    return run_parts(tmp_path_factory.mktemp("nvvm"))


# -- Function coverage: which ops the gradcheck and PyTorch-parity suites differentiate ----
# Tests marked `gradcheck` (float64 finite differences) or `parity` (forward and gradients
# against PyTorch) record every Function class that builds a graph node while they run;
# tests/test_function_coverage.py, moved to the end of the session, fails for any Function
# subclass in the package that neither kind of test exercised.
COVERAGE_KINDS = ("gradcheck", "parity")
_COVERAGE = pytest.StashKey[dict]()


def pytest_configure(config):
    config.pluginmanager.register(_NvvmEarly(), "tinygrad_k-nvvm-early")
    config.stash[_COVERAGE] = {"covered": {k: set() for k in COVERAGE_KINDS},
                               "selected": {k: 0 for k in COVERAGE_KINDS},
                               "deselected": {k: 0 for k in COVERAGE_KINDS}}


def _kinds(item):
    return [k for k in COVERAGE_KINDS if item.get_closest_marker(k) is not None]


def pytest_collection_modifyitems(config, items):
    state = config.stash[_COVERAGE]
    for item in items:
        for k in _kinds(item):
            state["selected"][k] += 1
    # the coverage check reads what the marked tests recorded, so it runs after them
    last = [i for i in items if i.path.name == "test_function_coverage.py"]
    items[:] = [i for i in items if i.path.name != "test_function_coverage.py"] + last


def pytest_deselected(items):
    if not items:
        return
    state = items[0].config.stash[_COVERAGE]
    for item in items:
        for k in _kinds(item):
            state["deselected"][k] += 1


@pytest.fixture(autouse=True)
def _record_function_coverage(request):
    kinds = _kinds(request.node)
    if not kinds:
        yield
        return
    from tinygrad_k.autograd import Function

    covered = [request.config.stash[_COVERAGE]["covered"][k] for k in kinds]
    # every class that defines its own apply (Function, and e.g. ToDevice) is wrapped
    owners, todo = [], [Function]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if "apply" in vars(cls):
            owners.append((cls, vars(cls)["apply"]))

    def recording(apply):
        def recording_apply(cls, *args, **kwargs):
            out = apply.__func__(cls, *args, **kwargs)
            if getattr(out, "requires_grad", False):  # a graph node: its backward runs
                for s in covered:
                    s.add(cls)
            return out
        return classmethod(recording_apply)

    for cls, apply in owners:
        setattr(cls, "apply", recording(apply))
    try:
        yield
    finally:
        for cls, apply in owners:
            setattr(cls, "apply", apply)


@pytest.fixture
def function_coverage(request):
    """{"covered": {kind: set of Function classes}, "selected"/"deselected": {kind: count}}."""
    return request.config.stash[_COVERAGE]
