"""``python -m benchmarks``: the command line of the benchmarks (timings in benchmarks/run.py,
the step profile in benchmarks/profile.py; both build on run.py's child processes)."""
from __future__ import annotations

import argparse
import sys

from benchmarks import run as run_mod
from benchmarks.profile import main as profile_main


def _positive(text):
    """argparse type: an integer >= 1 (argparse turns the ValueError into a one-line
    usage error, exit status 2)."""
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


_positive.__name__ = "positive int"  # (argparse's message: "invalid positive int value")


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks",
                                description=run_mod.__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--suite", default="all", choices=["kernels", "train", "all"])
    p.add_argument("--quick", action="store_true", help="few small cases, one round")
    p.add_argument("--repeats", type=_positive, default=None,
                   help="timed calls per case and round")
    p.add_argument("--pairs", type=_positive, default=None,
                   help="alternating rounds of the ours / torch processes (default 3)")
    p.add_argument("--turns", type=_positive, default=None,
                   help="training steps: turns each side takes per round, in lockstep "
                        "(default 6)")
    p.add_argument("--models", nargs="*", default=None, choices=list(run_mod.TRAIN_MODELS),
                   help="training cases: these models only")
    p.add_argument("--keep-env", action="store_true",
                   help="pass the thread-pool variables (OMP_*, ...) on to the children")
    p.add_argument("--profile", metavar="MODEL", default=None,
                   choices=list(run_mod.TRAIN_MODELS),
                   help="break one training step into kernel and framework time, ours and "
                        "PyTorch's (see benchmarks/profile.py)")
    p.add_argument("--batch", type=_positive, default=64, help="batch size for --profile")
    p.add_argument("--out", default=None, help="results directory")
    args = p.parse_args(argv)
    if args.device == "cuda":
        try:
            import cupy

            cupy.cuda.runtime.getDeviceCount()
        except Exception as exc:
            print(f"error: --device cuda needs a CUDA GPU with CuPy ({exc})", file=sys.stderr)
            return 2
    if args.profile:
        return profile_main(args.profile, args.batch, args.device, args.out, args.keep_env)
    run_mod.run(args.device, args.suite, args.quick, args.out, args.repeats, args.pairs,
                args.models, args.keep_env, turns=args.turns)
    return 0
