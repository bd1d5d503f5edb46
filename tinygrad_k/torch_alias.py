"""Run a PyTorch script on tinygrad_k by aliasing module names only.

    python -m tinygrad_k.torch_alias my_script.py [args...]

or, first thing in a program, ``import tinygrad_k.torch_alias; tinygrad_k.torch_alias.install()``.
After ``install()``, ``import torch`` gives ``tinygrad_k``, ``torch.nn`` gives
``tinygrad_k.nn``, ``torch.utils.data`` gives ``tinygrad_k.utils.data`` (which is
``tinygrad_k.data``) and so on: ``torch.X.Y`` is ``tinygrad_k.X.Y``, nothing else is
rewritten. The real ``torch`` must not be imported before ``install()``.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import runpy
import sys

_SOURCE, _TARGET = "torch", "tinygrad_k"


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target):
        self.target = target

    def create_module(self, spec):
        module = importlib.import_module(self.target)
        self.own_spec = module.__spec__
        return module

    def exec_module(self, module):
        # the module is tinygrad_k's own and already executed; the import system has just
        # set its __spec__ to the alias's: give it back its own
        module.__spec__ = self.own_spec


class _AliasFinder(importlib.abc.MetaPathFinder):
    """Finds ``torch`` and ``torch.*`` as the module of the same path under tinygrad_k."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != _SOURCE and not fullname.startswith(_SOURCE + "."):
            return None
        real = _TARGET + fullname[len(_SOURCE):]
        if importlib.util.find_spec(real) is None:
            return None
        return importlib.util.spec_from_loader(fullname, _AliasLoader(real))


def install():
    """Make ``import torch`` (and its submodules) import tinygrad_k from now on."""
    if any(isinstance(f, _AliasFinder) for f in sys.meta_path):
        return
    loaded = sorted(m for m in sys.modules if m == _SOURCE or m.startswith(_SOURCE + "."))
    if loaded:
        raise RuntimeError(f"torch_alias.install: the real torch is already imported "
                           f"({loaded[0]}); install the alias before anything imports torch")
    sys.meta_path.insert(0, _AliasFinder())


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        raise SystemExit("usage: python -m tinygrad_k.torch_alias SCRIPT.py [ARGS...]")
    install()
    sys.argv = argv
    runpy.run_path(argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
