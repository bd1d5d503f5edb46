"""Every ``Function`` subclass in the package has a float64 gradcheck case and a PyTorch
parity case (the "Adding an op" checklist in CONTRIBUTING.md).

Tests marked ``gradcheck`` (tests/test_op_gradients.py, ...) and ``parity``
(tests/test_op_parity.py, ...) record each Function class that builds a graph node while
they run (tests/conftest.py); this module runs after them and compares the records with
the Function subclasses found by importing every module of ``tinygrad_k``.
"""
import importlib
import pkgutil

import pytest

import tinygrad_k
from tinygrad_k.autograd import Function

# Functions that cannot have one of the two cases, with the reason (keep this empty if
# at all possible: a reason here is a promise the op needs no such check).
EXEMPT = {
    "parity": {},
    "gradcheck": {},
}


def all_functions():
    """Every concrete Function subclass defined in tinygrad_k (its modules all imported)."""
    for mod in pkgutil.walk_packages(tinygrad_k.__path__, "tinygrad_k."):
        if not mod.name.endswith("__main__"):
            importlib.import_module(mod.name)
    found, todo = set(), list(Function.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls.__module__.startswith("tinygrad_k.") and "forward" in vars(cls):
            found.add(cls)
    return found


def test_the_package_has_functions():
    names = {f.__name__ for f in all_functions()}
    assert {"Add", "MatMul", "Conv2d", "LayerNorm", "CrossEntropy"} <= names


@pytest.mark.parametrize("kind", ["gradcheck", "parity"])
def test_every_function_has_a_case(kind, function_coverage):
    if not function_coverage["selected"][kind]:
        pytest.skip(f"no `{kind}` tests in this run (run the whole suite)")
    if function_coverage["deselected"][kind]:
        pytest.skip(f"{function_coverage['deselected'][kind]} `{kind}` tests deselected "
                    "(run the whole suite)")
    covered = function_coverage["covered"][kind]
    exempt = EXEMPT[kind]
    missing = sorted(f"{f.__module__}.{f.__name__}" for f in all_functions()
                     if f not in covered and f.__name__ not in exempt)
    where = {"gradcheck": "tests/test_op_gradients.py", "parity": "the CASES table of "
             "tests/test_op_parity.py"}[kind]
    assert not missing, (f"Functions without a {kind} case: {', '.join(missing)}; add one to "
                         f"{where} (see CONTRIBUTING.md, 'Adding an op')")
    stale = sorted(set(exempt) - {f.__name__ for f in all_functions()})
    assert not stale, f"EXEMPT[{kind!r}] names Functions that no longer exist: {stale}"
