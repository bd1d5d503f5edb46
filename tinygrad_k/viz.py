"""Looking inside autograd: the computation graph and the backward trace.

Graph::

    from tinygrad_k import viz
    loss = model(x).log_softmax(1).mean()
    print(viz.to_dot(loss, model.named_parameters()))   # Graphviz DOT text
    viz.draw(loss, "graph.svg", model.named_parameters())  # SVG, PNG or PDF

``draw`` uses Graphviz's ``dot`` when it is installed and otherwise lays the graph out
itself (layered, as dot does: longest-path layers, barycentric ordering) and writes the
SVG by hand or the PNG/PDF through matplotlib, so graphs draw on a fresh machine too.

Every op node is the ``Function`` that made a tensor (its class name and output shape);
every leaf is an input tensor (its name when known, shape, dtype, ``requires_grad``);
after ``backward()`` every tensor that holds a ``.grad`` also shows its norm.
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

import math
import os
import shutil
import subprocess

from .backward_trace import HIGH, LOW, flag_norms, format_trace, print_trace, trace
from .tensor import Tensor

__all__ = ["to_dot", "to_svg", "draw", "trace", "format_trace", "print_trace", "grad_norms",
           "format_grad_norms", "LOW", "HIGH"]

# -- graph ----------------------------------------------------------------------------
# The graph is read through three small accessors (op name, inputs, gradient) so that a
# change in how autograd stores its nodes touches only these lines.
def _op_name(t):
    return t._ctx.fn.__name__


def _inputs(t):
    return t._ctx.parents


def _grad_norm(t):
    g = getattr(t, "grad", None)
    if g is None:
        return None
    a = g._array
    return float(g.backend.xp.linalg.norm(a.ravel())) if a.size else 0.0


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


def _shape(t):
    return str(tuple(int(s) for s in t.shape))


def _graph(tensor, named_parameters=None, max_nodes=10000, who="viz.to_dot"):
    """The graph of ``tensor`` as plain data: ``(nodes, edges, truncated)``.

    ``nodes[i]`` is ``{"lines": [str, ...], "kind": "op" | "param" | "const", "root": bool}``
    (node 0 is ``tensor``), ``edges`` a list of ``(input index, consumer index)``. A tensor
    that holds a ``.grad`` (leaves after ``backward()``, or non-leaves that
    ``retain_grad()``) gets a last line ``|grad| <norm>``.
    """
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{who}: expected a Tensor, got {type(tensor).__name__}")
    names = _param_names(named_parameters)
    index, nodes, edges = {}, [], []
    stack, truncated = [tensor], False
    while stack:   # iterative: a 10,000-op chain does not hit the recursion limit
        t = stack.pop()
        if id(t) in index:
            continue
        if len(nodes) >= max_nodes:
            truncated = True
            break
        index[id(t)] = len(nodes)
        label_name = names.get(id(t)) or getattr(t, "name", None)
        if t._ctx is None:
            lines = ([label_name] if label_name else []) + [f"{_shape(t)} {t.dtype}"]
            if t.requires_grad:
                lines.append("requires_grad")
            kind = "param" if t.requires_grad else "const"
        else:
            lines = [_op_name(t) + (f" [{label_name}]" if label_name else ""), _shape(t)]
            kind = "op"
            for parent in _inputs(t):
                edges.append((parent, t))
                stack.append(parent)
        norm = _grad_norm(t)
        if norm is not None:
            lines.append(f"|grad| {norm:.3e}")
        nodes.append({"lines": lines, "kind": kind, "root": t is tensor})
    edges = [(index[id(p)], index[id(c)]) for p, c in edges
             if id(p) in index and id(c) in index]
    return nodes, edges, truncated


def _q(lines):
    """A DOT double-quoted label from lines of text (escaped, joined by DOT's \\n)."""
    esc = [str(s).replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")
           for s in lines]
    return '"' + "\\n".join(esc) + '"'


_DOT_STYLE = {"op": 'shape=box, style="rounded,filled", fillcolor="#fff3cd"',
              "param": 'shape=ellipse, style=filled, fillcolor="#cfe2ff"',
              "const": 'shape=ellipse, style=filled, fillcolor="#eeeeee"'}


def to_dot(tensor, named_parameters=None, *, max_nodes=10000, rankdir="BT"):
    """Graphviz DOT text of the graph that produced ``tensor``.

    Nodes: one box per op (``ctx.fn.__name__`` and the output shape, bold for ``tensor``
    itself), one ellipse per leaf (name, shape, dtype; filled blue when it requires grad,
    grey when it is a constant); after ``backward()`` a tensor holding a ``.grad`` shows
    its norm. ``named_parameters`` (``module.named_parameters()`` or a dict) labels
    parameters by name; a tensor's own ``.name`` is used otherwise.
    The walk is iterative (deep or unrolled graphs do not hit the recursion limit); past
    ``max_nodes`` nodes it stops and adds a note saying so. ``rankdir="BT"`` puts inputs at
    the bottom and the loss at the top, like most backprop diagrams.
    """
    nodes, edges, truncated = _graph(tensor, named_parameters, max_nodes)
    lines = ["digraph tinygrad_k {", f"  rankdir={rankdir};",
             '  node [fontname="Helvetica", fontsize=10];']
    for i, n in enumerate(nodes):
        style = _DOT_STYLE[n["kind"]] + (", penwidth=2" if n["root"] and n["kind"] == "op"
                                         else "")
        lines.append(f"  n{i} [label={_q(n['lines'])}, {style}];")
    for a, b in edges:
        lines.append(f"  n{a} -> n{b};")
    if truncated:
        lines.append(f'  truncated [shape=note, label="graph cut at max_nodes={max_nodes}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"


# -- a layered layout of our own (no Graphviz) -------------------------------------------
_FONT = 10.0          # font size, in drawing units (1 unit = 1 px in SVG, 1 pt in PNG/PDF)
_CHAR_W = 0.6 * _FONT  # average Helvetica advance: good enough to size boxes
_LINE_H = 1.3 * _FONT
_GAP_X, _GAP_Y, _MARGIN = 18.0, 36.0, 12.0


def _layout(nodes, edges, rankdir="BT", sweeps=12):
    """Sugiyama-style layered layout; returns ``(boxes, paths, width, height)``.

    1. Layering by longest path from the output: ``layer(output) = 0`` and each input sits
       one layer past its furthest consumer, so every edge points towards the output.
    2. Edges that span several layers are split by dummy points, one per layer crossed.
    3. Ordering within layers: alternating down and up sweeps sort each layer by the
       barycentre (mean position) of its neighbours in the layer just visited, which
       removes most crossings of a network's mostly-chain-like graph.
    4. Coordinates: each node wants the mean x of its neighbours; overlaps are pushed apart
       left to right and the layer is shifted back so that it stays centred on its wishes.

    ``boxes[i] = (cx, cy, w, h)`` per node; ``paths`` one polyline (list of (x, y)) per edge,
    from the input to the consumer. ``rankdir="BT"`` draws the output at the top.
    """
    n = len(nodes)
    consumers = [[] for _ in range(n)]
    for a, b in edges:
        consumers[a].append(b)
    # 1. longest-path layering, consumers before inputs (Kahn's order on the reversed graph)
    pending = [len(c) for c in consumers]
    inputs_of = [[] for _ in range(n)]
    for a, b in edges:
        inputs_of[b].append(a)
    layer = [0] * n
    queue = [i for i in range(n) if pending[i] == 0]
    while queue:
        b = queue.pop()
        for a in inputs_of[b]:
            layer[a] = max(layer[a], layer[b] + 1)
            pending[a] -= 1
            if pending[a] == 0:
                queue.append(a)
    # 2. dummy points: vertices n, n+1, ... with zero size
    sizes = [(max(len(s) for s in nd["lines"]) * _CHAR_W + 16,
              len(nd["lines"]) * _LINE_H + 10) for nd in nodes]
    vlayer = list(layer)
    chains = []     # per edge, the vertex chain input -> ... -> consumer
    for a, b in edges:
        chain = [a]
        for lv in range(layer[a] - 1, layer[b], -1):
            vlayer.append(lv)
            sizes.append((4.0, 0.0))
            chain.append(len(vlayer) - 1)
        chain.append(b)
        chains.append(chain)
    nv = len(vlayer)
    up = [[] for _ in range(nv)]     # neighbours one layer nearer the output
    down = [[] for _ in range(nv)]   # neighbours one layer further away
    for chain in chains:
        for a, b in zip(chain, chain[1:]):
            up[a].append(b)
            down[b].append(a)
    depth = max(vlayer, default=0) + 1
    layers = [[] for _ in range(depth)]
    for v in range(nv):   # discovery order (a depth-first walk) is a good start
        layers[vlayer[v]].append(v)
    pos = [0.0] * nv

    def number(lay):
        for k, v in enumerate(lay):
            pos[v] = float(k)

    for lay in layers:
        number(lay)
    # 3. barycentric ordering
    for sweep in range(sweeps):
        order = range(1, depth) if sweep % 2 == 0 else range(depth - 2, -1, -1)
        nbrs = up if sweep % 2 == 0 else down
        for lv in order:
            lay = layers[lv]
            bary = {v: (sum(pos[u] for u in nbrs[v]) / len(nbrs[v]) if nbrs[v] else pos[v])
                    for v in lay}
            lay.sort(key=lambda v: bary[v])   # stable: ties keep their order
            number(lay)
    # 4. x coordinates
    x = [0.0] * nv
    for lay in layers:
        cur = 0.0
        for k, v in enumerate(lay):
            if k:
                cur += (sizes[lay[k - 1]][0] + sizes[v][0]) / 2 + _GAP_X
            x[v] = cur
    for sweep in range(2 * sweeps):
        order = range(1, depth) if sweep % 2 == 0 else range(depth - 2, -1, -1)
        nbrs = up if sweep % 2 == 0 else down
        for lv in order:
            lay = layers[lv]
            want = [sum(x[u] for u in nbrs[v]) / len(nbrs[v]) if nbrs[v] else x[v]
                    for v in lay]
            placed = []
            for k, v in enumerate(lay):
                lo = placed[-1] + (sizes[lay[k - 1]][0] + sizes[v][0]) / 2 + _GAP_X \
                    if k else -math.inf
                placed.append(max(want[k], lo))
            shift = sum(w - p for w, p in zip(want, placed)) / len(lay)
            for v, p in zip(lay, placed):
                x[v] = p + shift
    left = min(x[v] - sizes[v][0] / 2 for v in range(nv))
    x = [xi - left + _MARGIN for xi in x]
    width = max(x[v] + sizes[v][0] / 2 for v in range(nv)) + _MARGIN
    heights = [max([sizes[v][1] for v in lay], default=0.0) for lay in layers]
    ys, cur = [], _MARGIN
    for h in heights:
        ys.append(cur + h / 2)
        cur += h + _GAP_Y
    height = cur - _GAP_Y + _MARGIN
    if rankdir == "TB":   # output at the bottom
        ys = [height - y for y in ys]
    y = [ys[vlayer[v]] for v in range(nv)]
    boxes = [(x[i], y[i], sizes[i][0], sizes[i][1]) for i in range(n)]
    paths = []
    for chain in chains:
        a, b = chain[0], chain[-1]
        sign = -1.0 if y[b] < y[a] else 1.0   # from the input's edge towards the consumer
        pts = [(x[a], y[a] + sign * sizes[a][1] / 2)]
        pts += [(x[v], y[v]) for v in chain[1:-1]]
        pts.append((x[b], y[b] - sign * sizes[b][1] / 2))
        paths.append(pts)
    return boxes, paths, width, height


_FILL = {"op": "#fff3cd", "param": "#cfe2ff", "const": "#eeeeee", "note": "#ffffff"}


def _with_note(nodes, edges, truncated, max_nodes):
    if truncated:
        nodes = nodes + [{"lines": [f"graph cut at max_nodes={max_nodes}"], "kind": "note",
                          "root": False}]
    return nodes, edges


def to_svg(tensor, named_parameters=None, *, max_nodes=10000, rankdir="BT"):
    """SVG text of the graph of ``tensor``, laid out by :func:`_layout` (no Graphviz).

    Same nodes and colours as :func:`to_dot`: rounded boxes for ops (the output in bold),
    ellipses for leaves, arrows from each input to its consumer.
    """
    from xml.sax.saxutils import escape

    if rankdir not in ("BT", "TB"):
        raise ValueError(f"viz: the built-in layout draws rankdir 'BT' or 'TB', got {rankdir!r}"
                         " (Graphviz's dot does the others)")
    nodes, edges, truncated = _graph(tensor, named_parameters, max_nodes, who="viz.to_svg")
    nodes, edges = _with_note(nodes, edges, truncated, max_nodes)
    boxes, paths, width, height = _layout(nodes, edges, rankdir)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
           f'viewBox="0 0 {width:.1f} {height:.1f}" font-family="Helvetica, Arial, sans-serif" '
           f'font-size="{_FONT:g}">',
           '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
           'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
           'fill="#555"/></marker></defs>',
           f'<rect width="{width:.1f}" height="{height:.1f}" fill="white"/>']
    for pts in paths:
        d = " ".join(f"{px:.1f},{py:.1f}" for px, py in pts)
        out.append(f'<polyline points="{d}" fill="none" stroke="#555" stroke-width="1" '
                   'marker-end="url(#arrow)"/>')
    for nd, (cx, cy, w, h) in zip(nodes, boxes):
        fill = _FILL[nd["kind"]]
        stroke = ' stroke="#333" stroke-width="2"' if nd["root"] else \
            ' stroke="#666" stroke-width="1"'
        if nd["kind"] in ("op", "note"):
            dash = ' stroke-dasharray="4,2"' if nd["kind"] == "note" else ""
            out.append(f'<rect x="{cx - w / 2:.1f}" y="{cy - h / 2:.1f}" width="{w:.1f}" '
                       f'height="{h:.1f}" rx="6" fill="{fill}"{stroke}{dash}/>')
        else:
            out.append(f'<ellipse cx="{cx:.1f}" cy="{cy:.1f}" rx="{w / 2:.1f}" '
                       f'ry="{h / 2:.1f}" fill="{fill}"{stroke}/>')
        top = cy - len(nd["lines"]) * _LINE_H / 2 + 0.75 * _LINE_H
        spans = "".join(f'<tspan x="{cx:.1f}" y="{top + k * _LINE_H:.1f}"'
                        + (' font-weight="bold"' if k == 0 and nd["kind"] == "op" else "")
                        + f">{escape(s)}</tspan>" for k, s in enumerate(nd["lines"]))
        out.append(f'<text text-anchor="middle">{spans}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _render_matplotlib(tensor, path, fmt, named_parameters, max_nodes, rankdir):
    """PNG or PDF of the same layout, drawn with matplotlib (1 layout unit = 1 pt)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Ellipse, FancyBboxPatch
    except ImportError:
        raise RuntimeError(f"viz.draw: {fmt.upper()} without Graphviz needs matplotlib "
                           "(pip install matplotlib); SVG needs neither") from None
    if rankdir not in ("BT", "TB"):
        raise ValueError(f"viz: the built-in layout draws rankdir 'BT' or 'TB', got {rankdir!r}"
                         " (Graphviz's dot does the others)")
    nodes, edges, truncated = _graph(tensor, named_parameters, max_nodes, who="viz.draw")
    nodes, edges = _with_note(nodes, edges, truncated, max_nodes)
    boxes, paths, width, height = _layout(nodes, edges, rankdir)
    # keep the bitmap under ~16k pixels a side (a big graph gets a lower resolution)
    dpi = min(110.0, 16000.0 * 72.0 / max(width, height))
    fig = plt.figure(figsize=(width / 72.0, height / 72.0), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.axis("off")
    for pts in paths:
        xs, ys = zip(*pts)
        ax.plot(xs[:-1] + (xs[-1],), ys, color="#555", lw=0.8, zorder=1)
        ax.annotate("", xy=pts[-1], xytext=pts[-2],
                    arrowprops=dict(arrowstyle="-|>", color="#555", lw=0.8,
                                    shrinkA=0, shrinkB=0), zorder=1)
    for nd, (cx, cy, w, h) in zip(nodes, boxes):
        lw = 2.0 if nd["root"] else 0.8
        if nd["kind"] in ("op", "note"):
            patch = FancyBboxPatch((cx - w / 2, cy - h / 2), w, h, boxstyle="round,pad=0,"
                                   "rounding_size=6", fc=_FILL[nd["kind"]], ec="#666", lw=lw,
                                   ls="--" if nd["kind"] == "note" else "-", zorder=2)
        else:
            patch = Ellipse((cx, cy), w, h, fc=_FILL[nd["kind"]], ec="#666", lw=lw, zorder=2)
        ax.add_patch(patch)
        ax.text(cx, cy, "\n".join(nd["lines"]), ha="center", va="center", fontsize=_FONT * 0.9,
                family="sans-serif", linespacing=1.15, zorder=3)
    tmp = f"{path}.tmp.{fmt}"
    fig.savefig(tmp, format=fmt, dpi=dpi)
    plt.close(fig)
    os.replace(tmp, path)
    return path


_FORMATS = ("svg", "png", "pdf", "dot")
_ENGINES = ("auto", "dot", "builtin")


def draw(tensor, path, named_parameters=None, format=None, engine="auto", **kwargs):
    """Write the graph of ``tensor`` to ``path`` as SVG, PNG, PDF or DOT text.

    ``format`` defaults to the file suffix. ``engine``: ``"auto"`` (default) uses
    Graphviz's ``dot`` program when it is on PATH and the built-in layered layout
    otherwise; ``"dot"`` insists on Graphviz (a RuntimeError says how to install it);
    ``"builtin"`` never calls it (SVG written directly, PNG/PDF through matplotlib).
    ``kwargs``: ``max_nodes``, ``rankdir`` (as :func:`to_dot`). Returns ``path``.
    """
    path = os.fspath(path)
    if format is None:
        format = os.path.splitext(path)[1].lstrip(".").lower() or "svg"
    if format not in _FORMATS:
        raise ValueError(f"viz.draw: format {format!r} not supported; expected one of "
                         f"{', '.join(_FORMATS)} (from the path suffix or format=)")
    if engine not in _ENGINES:
        raise ValueError(f"viz.draw: engine {engine!r} not supported; expected one of "
                         f"{', '.join(_ENGINES)}")
    if format == "dot":
        text = to_dot(tensor, named_parameters, **kwargs)
        with open(path, "w") as f:
            f.write(text)
        return path
    exe = shutil.which("dot") if engine != "builtin" else None
    if exe is None and engine == "dot":
        raise RuntimeError(
            f"viz.draw: the Graphviz 'dot' program is not on PATH, so engine='dot' cannot "
            f"render {format.upper()}. Install Graphviz (Debian/Ubuntu: apt-get install "
            "graphviz; macOS: brew install graphviz), or use engine='builtin' (the default "
            "'auto' falls back to it).")
    if exe is None:
        max_nodes, rankdir = kwargs.pop("max_nodes", 10000), kwargs.pop("rankdir", "BT")
        if kwargs:
            raise TypeError(f"viz.draw: unexpected keyword arguments {sorted(kwargs)}")
        if format == "svg":
            text = to_svg(tensor, named_parameters, max_nodes=max_nodes, rankdir=rankdir)
            tmp = path + ".tmp"
            with open(tmp, "w") as f:
                f.write(text)
            os.replace(tmp, path)
            return path
        return _render_matplotlib(tensor, path, format, named_parameters, max_nodes, rankdir)
    text = to_dot(tensor, named_parameters, **kwargs)
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
