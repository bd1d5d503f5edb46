"""The backward trace: which node ran, in what order, with what gradient norms.

``run_backward`` appends one record per executed node to the list of the innermost
active :func:`trace` block of the current thread (or to an explicit ``trace=`` list);
:func:`format_trace` turns records into lines that flag vanishing / exploding / non-finite
gradient norms. This module imports nothing of the engine, so the engine, ``Tensor`` and
``viz`` can all use it.
"""
from __future__ import annotations

import contextlib
import math
import threading

__all__ = ["trace", "active_trace", "format_trace", "print_trace", "flag_norms", "LOW", "HIGH"]

LOW = 1e-7   # a gradient norm below this is flagged "vanishing"
HIGH = 1e3   # a gradient norm above this is flagged "exploding"

_local = threading.local()


def active_trace():
    """The record list of the innermost ``trace()`` block of this thread, or None."""
    return getattr(_local, "records", None)


@contextlib.contextmanager
def trace():
    """Record every backward pass run inside the block; yields the list of records.

    Equivalent to ``backward(trace=records)`` for each backward inside; nothing is printed
    (use ``print_trace(records)``). Contexts nest: the innermost one records. The context
    is per thread, like ``no_grad``; an explicit ``backward(trace=list)`` takes precedence.
    """
    records = []
    prev = active_trace()
    _local.records = records
    try:
        yield records
    finally:
        _local.records = prev


def flag_norms(norms, low=LOW, high=HIGH):
    """'<-- VANISHING' / '<-- EXPLODING' / '<-- NONFINITE' marks for a list of norms
    (None entries are skipped); the empty string when all lie in [low, high]."""
    flags = set()
    for n in norms:
        if n is None:
            continue
        if not math.isfinite(n):
            flags.add("NONFINITE")
        elif n < low:
            flags.add("VANISHING")
        elif n > high:
            flags.add("EXPLODING")
    return " ".join(f"<-- {f}" for f in sorted(flags))


def format_trace(records, low=LOW, high=HIGH):
    """One line per executed backward node: op, output shape, |grad out| and, per input,
    its shape and |grad in| ('-' when that input needs no gradient). Lines with a norm
    below ``low``, above ``high`` or not finite end with a ``<-- VANISHING`` /
    ``<-- EXPLODING`` / ``<-- NONFINITE`` mark; a summary line counts them."""
    lines = [f"{'#':>3}  {'op':<14} {'output':<18} {'|grad out|':>11}  inputs (shape: |grad|)"]
    marked = 0
    for k, r in enumerate(records):
        ins = ", ".join(f"{s}: {'-' if n is None else f'{n:.3e}'}"
                        for s, n in zip(r["input_shapes"], r["grad_input_norms"]))
        flag = flag_norms([r["grad_output_norm"], *r["grad_input_norms"]], low, high)
        marked += bool(flag)
        lines.append(f"{k:>3}  {r['op']:<14} {str(r['output_shape']):<18} "
                     f"{r['grad_output_norm']:>11.3e}  {ins}" + (f"  {flag}" if flag else ""))
    if marked:
        lines.append(f"{marked} of {len(records)} nodes have a gradient norm outside "
                     f"[{low:g}, {high:g}] or not finite")
    return "\n".join(lines)


def print_trace(records, low=LOW, high=HIGH, file=None):
    print(format_trace(records, low, high), file=file)
