"""Looking inside autograd: the backward trace (and, later, graph drawing)."""
from __future__ import annotations


def format_trace(records):
    """One line per executed backward node: op, shapes, |grad out| and |grad in|."""
    lines = [f"{'#':>3}  {'op':<14} {'output':<18} {'|grad out|':>11}  inputs (shape: |grad|)"]
    for k, r in enumerate(records):
        ins = ", ".join(f"{s}: {'-' if n is None else f'{n:.3e}'}"
                        for s, n in zip(r["input_shapes"], r["grad_input_norms"]))
        lines.append(f"{k:>3}  {r['op']:<14} {str(r['output_shape']):<18} "
                     f"{r['grad_output_norm']:>11.3e}  {ins}")
    return "\n".join(lines)


def print_trace(records):
    print(format_trace(records))
