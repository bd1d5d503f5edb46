"""Looking inside autograd: the computation graph and the backward trace.

Graph::

    from tinygrad_k import viz
    loss = model(x).log_softmax(1).mean()
    print(viz.to_dot(loss, model.named_parameters()))   # Graphviz DOT text
    viz.draw(loss, "graph.svg", model.named_parameters())  # needs the `dot` program

Every op node is the ``Function`` that made a tensor (its class name and output shape);
every leaf is an input tensor (its name when known, shape, dtype, ``requires_grad``).
An edge ``a -> b`` means "a is an input of b", so gradients flow against the arrows.
The graph stays drawable after ``backward()``: freeing a graph drops the saved arrays,
not the links between nodes.

Backward trace::

    records = loss.backward(trace=True)        # prints one line per node, returns dicts
    with viz.trace() as records:               # the same, without printing
        loss.backward()

Each record is ``{op, input_shapes, output_shape, grad_output_norm, grad_input_norms}``
in execution order (output first, leaves last). ``format_trace`` marks lines whose
gradient norms are below ``low`` (vanishing, default 1e-7), above ``high`` (exploding,
default 1e3) or not finite.
"""
from __future__ import annotations

import os
import shutil
import subprocess

from .backward_trace import HIGH, LOW, flag_norms, format_trace, print_trace, trace
from .tensor import Tensor

__all__ = ["to_dot", "draw", "trace", "format_trace", "print_trace", "grad_norms",
           "format_grad_norms", "LOW", "HIGH"]

# -- graph ----------------------------------------------------------------------------
def _param_names(named_parameters):
    """id(tensor) -> name from a mapping name -> Tensor or an iterable of (name, Tensor)."""
    if named_parameters is None:
        return {}
    items = named_parameters.items() if hasattr(named_parameters, "items") else named_parameters
    names = {}
    for pair in items:
        ok = isinstance(pair, (tuple, list)) and len(pair) == 2 and isinstance(pair[1], Tensor)
        if not ok:
            raise TypeError("viz: named_parameters must be a mapping name -> Tensor or an "
                            "iterable of (name, Tensor) pairs, got an item of type "
                            f"{type(pair).__name__}")
        names[id(pair[1])] = str(pair[0])
    return names


def _q(lines):
    """A DOT double-quoted label from lines of text (escaped, joined by DOT's \\n)."""
    esc = [str(s).replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")
           for s in lines]
    return '"' + "\\n".join(esc) + '"'


def _shape(t):
    return str(tuple(int(s) for s in t.shape))


def to_dot(tensor, named_parameters=None, *, max_nodes=10000, rankdir="BT"):
    """Graphviz DOT text of the graph that produced ``tensor``.

    Nodes: one box per op (``ctx.fn.__name__`` and the output shape, bold for ``tensor``
    itself), one ellipse per leaf (name, shape, dtype; filled blue when it requires grad,
    grey when it is a constant). ``named_parameters`` (``module.named_parameters()`` or a
    dict) labels parameters by name; a tensor's own ``.name`` is used otherwise.
    The walk is iterative (deep or unrolled graphs do not hit the recursion limit); past
    ``max_nodes`` nodes it stops and adds a note saying so. ``rankdir="BT"`` puts inputs at
    the bottom and the loss at the top, like most backprop diagrams.
    """
    if not isinstance(tensor, Tensor):
        raise TypeError(f"viz.to_dot: expected a Tensor, got {type(tensor).__name__}")
    names = _param_names(named_parameters)
    lines = ["digraph tinygrad_k {", f"  rankdir={rankdir};",
             '  node [fontname="Helvetica", fontsize=10];']
    ids = {}        # id(tensor) -> node name
    stack = [tensor]
    truncated = False
    edges = []
    while stack:
        t = stack.pop()
        if id(t) in ids:
            continue
        if len(ids) >= max_nodes:
            truncated = True
            break
        node = f"n{len(ids)}"
        ids[id(t)] = node
        label_name = names.get(id(t)) or getattr(t, "name", None)
        ctx = t._ctx
        if ctx is None:
            label = ([label_name] if label_name else []) + [f"{_shape(t)} {t.dtype}"]
            if t.requires_grad:
                label.append("requires_grad")
                style = 'shape=ellipse, style=filled, fillcolor="#cfe2ff"'
            else:
                style = 'shape=ellipse, style=filled, fillcolor="#eeeeee"'
        else:
            label = [ctx.fn.__name__ + (f" [{label_name}]" if label_name else ""), _shape(t)]
            style = 'shape=box, style="rounded,filled", fillcolor="#fff3cd"'
            if t is tensor:
                style += ", penwidth=2"
            for parent in ctx.parents:
                edges.append((parent, t))
                stack.append(parent)
        lines.append(f"  {node} [label={_q(label)}, {style}];")
    for parent, child in edges:
        if id(parent) in ids and id(child) in ids:
            lines.append(f"  {ids[id(parent)]} -> {ids[id(child)]};")
    if truncated:
        lines.append(f'  truncated [shape=note, label="graph cut at max_nodes={max_nodes}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"


_FORMATS = ("svg", "png", "pdf", "dot")


def draw(tensor, path, named_parameters=None, format=None, **dot_kwargs):
    """Write the graph of ``tensor`` to ``path`` as SVG, PNG or PDF (through Graphviz's
    ``dot`` program) or as DOT text (``format="dot"``, no Graphviz needed).

    ``format`` defaults to the file suffix. Returns ``path``. Raises RuntimeError when
    ``dot`` is not installed (saying how to install it) or when it fails.
    """
    path = os.fspath(path)
    if format is None:
        format = os.path.splitext(path)[1].lstrip(".").lower() or "svg"
    if format not in _FORMATS:
        raise ValueError(f"viz.draw: format {format!r} not supported; expected one of "
                         f"{', '.join(_FORMATS)} (from the path suffix or format=)")
    text = to_dot(tensor, named_parameters, **dot_kwargs)
    if format == "dot":
        with open(path, "w") as f:
            f.write(text)
        return path
    exe = shutil.which("dot")
    if exe is None:
        raise RuntimeError(
            f"viz.draw: the Graphviz 'dot' program is not on PATH, so {format.upper()} cannot "
            "be rendered. Install Graphviz (Debian/Ubuntu: apt-get install graphviz; macOS: "
            "brew install graphviz), or write DOT text with draw(..., format='dot') / "
            "viz.to_dot(tensor) and render it elsewhere.")
    try:
        proc = subprocess.run([exe, f"-T{format}", "-o", path], input=text.encode(),
                              capture_output=True, timeout=120)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"viz.draw: 'dot -T{format}' did not finish in 120 s") from None
    if proc.returncode != 0:
        raise RuntimeError(f"viz.draw: 'dot -T{format} -o {path}' failed with exit status "
                           f"{proc.returncode}: {proc.stderr.decode(errors='replace').strip()}")
    return path


# -- per-parameter gradient norms -------------------------------------------------------
def grad_norms(named_parameters):
    """[(name, shape, |grad|)] for each parameter (|grad| None when it has no .grad),
    e.g. ``grad_norms(model.named_parameters())`` after ``backward`` to see which layers
    learn."""
    out = []
    items = named_parameters.items() if hasattr(named_parameters, "items") else named_parameters
    for name, p in items:
        if p.grad is None:
            out.append((name, p.shape, None))
            continue
        g = p.grad._array
        xp = p.grad.backend.xp
        out.append((name, p.shape, float(xp.linalg.norm(g.ravel())) if g.size else 0.0))
    return out


def format_grad_norms(named_parameters, low=LOW, high=HIGH):
    """A table of ``grad_norms`` with the same vanishing/exploding marks as the trace."""
    rows = grad_norms(named_parameters)
    width = max([len("parameter")] + [len(n) for n, _, _ in rows])
    lines = [f"{'parameter':<{width}}  {'shape':<16} {'|grad|':>11}"]
    for name, shape, n in rows:
        flag = flag_norms([n], low, high)
        val = "-" if n is None else f"{n:.3e}"
        lines.append(f"{name:<{width}}  {str(shape):<16} {val:>11}" + (f"  {flag}" if flag else ""))
    return "\n".join(lines)
