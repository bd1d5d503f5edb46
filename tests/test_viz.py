"""tinygrad_k.viz: DOT graph, drawing through Graphviz, backward trace and its marks."""
import os
import re
import shutil
import stat
import xml.etree.ElementTree as ET

import numpy as np
import pytest

import tinygrad_k as tk
from tinygrad_k import nn, viz


def _mlp_loss():
    tk.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    x = tk.randn(5, 3)
    target = tk.tensor(np.array([0, 1, 1, 0, 1]))
    loss = nn.functional.cross_entropy(model(x), target)
    return model, x, loss


def _nodes_and_edges(dot):
    nodes = dict(re.findall(r'^\s+(n\d+) \[label="((?:[^"\\]|\\.)*)"', dot, re.M))
    edges = re.findall(r"^\s+(n\d+) -> (n\d+);", dot, re.M)
    return nodes, edges


def test_to_dot_ops_leaves_names_and_edges():
    model, x, loss = _mlp_loss()
    x.name = "images"
    dot = viz.to_dot(loss, model.named_parameters())
    assert dot.startswith("digraph") and dot.rstrip().endswith("}")
    nodes, edges = _nodes_and_edges(dot)
    labels = {v.split("\\n")[0]: (k, v) for k, v in nodes.items()}
    # ops, with output shapes
    assert labels["CrossEntropy"][1] == "CrossEntropy\\n()"
    assert sum(v.startswith("Linear\\n") for v in nodes.values()) == 2
    assert "ReLU\\n(5, 4)" in nodes.values()
    # parameters by name, with shape, dtype and requires_grad; the input is a constant
    assert labels["0.weight"][1] == "0.weight\\n(4, 3) float32\\nrequires_grad"
    assert labels["2.bias"][1] == "2.bias\\n(2,) float32\\nrequires_grad"
    assert labels["images"][1] == "images\\n(5, 3) float32"
    assert 'fillcolor="#eeeeee"' in dot.split(labels["images"][0] + " [")[1].split("\n")[0]
    # edges run input -> consumer, along the chain x -> Linear -> ReLU -> Linear -> loss
    by_label = {v: k for k, v in nodes.items()}
    chain = ["images\\n(5, 3) float32", "Linear\\n(5, 4)", "ReLU\\n(5, 4)", "Linear\\n(5, 2)",
             "CrossEntropy\\n()"]
    for src, dst in zip(chain, chain[1:]):
        assert (by_label[src], by_label[dst]) in edges
    assert (by_label["(5,) int64"], by_label["CrossEntropy\\n()"]) in edges  # the target
    assert len(nodes) == 10 and len(edges) == 9
    assert {n for e in edges for n in e} == set(nodes)


def test_to_dot_shared_input_is_one_node_and_dict_names():
    a = tk.randn(2, 2, requires_grad=True)
    y = (a * a + a).sum()
    dot = viz.to_dot(y, {"a": a})
    nodes, edges = _nodes_and_edges(dot)
    a_nodes = [k for k, v in nodes.items() if v.startswith("a\\n")]
    assert len(a_nodes) == 1
    # a feeds Mul twice and Add once
    assert sum(src == a_nodes[0] for src, _ in edges) == 3


def test_to_dot_after_backward_shows_grad_norms_and_escapes():
    model, x, loss = _mlp_loss()
    x.name = 'say "hi" \\ there'
    before = viz.to_dot(loss, model.named_parameters())
    assert "|grad|" not in before
    loss.backward()  # frees saved arrays, keeps the links
    after = viz.to_dot(loss, model.named_parameters())
    # the same graph; each parameter's label gains one line with the norm of its .grad
    assert re.sub(r"\\n\|grad\| [0-9.e+-]+", "", after) == before
    nodes, _ = _nodes_and_edges(after)
    for name, p in model.named_parameters():
        label = next(v for v in nodes.values() if v.startswith(name + "\\n"))
        shown = float(label.rsplit("|grad| ", 1)[1])
        assert shown == pytest.approx(np.linalg.norm(p.grad.numpy()), rel=1e-3)
    assert r'say \"hi\" \\ there' in before


def test_to_dot_deep_chain_is_iterative_and_truncates():
    x = tk.randn(3, requires_grad=True)
    y = x
    for _ in range(3000):  # deeper than Python's recursion limit
        y = y * 1.0
    dot = viz.to_dot(y, max_nodes=10_000)  # 3000 Mul nodes + 3000 constants + x
    assert dot.count("Mul\\n(3,)") == 3000 and "graph cut" not in dot
    small = viz.to_dot(y, max_nodes=10)
    assert "graph cut at max_nodes=10" in small
    assert len(_nodes_and_edges(small)[0]) == 10


def test_to_dot_bad_arguments():
    with pytest.raises(TypeError, match="viz.to_dot: expected a Tensor"):
        viz.to_dot(np.zeros(3))
    x = tk.randn(2, requires_grad=True)
    with pytest.raises(TypeError, match="named_parameters"):
        viz.to_dot(x * 2, [x])


def _no_dot(monkeypatch):
    real = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None if name == "dot"
                        else real(name, *a, **k))


def test_draw_engine_dot_without_dot_says_how_to_install(tmp_path, monkeypatch):
    _, _, loss = _mlp_loss()
    _no_dot(monkeypatch)
    with pytest.raises(RuntimeError, match="apt-get install graphviz"):
        viz.draw(loss, tmp_path / "g.svg", engine="dot")
    # DOT text needs no Graphviz
    out = viz.draw(loss, tmp_path / "g.dot")
    assert open(out).read() == viz.to_dot(loss)
    with pytest.raises(ValueError, match="format 'gif' not supported"):
        viz.draw(loss, tmp_path / "g.gif")
    with pytest.raises(ValueError, match="engine 'neato' not supported"):
        viz.draw(loss, tmp_path / "g.svg", engine="neato")
    with pytest.raises(ValueError, match="rankdir 'BT' or 'TB'"):
        viz.draw(loss, tmp_path / "g.svg", rankdir="LR")


def _fake_dot(tmp_path, script):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "dot"
    exe.write_text("#!/bin/sh\n" + script)
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return bindir


@pytest.mark.skipif(os.name != "posix", reason="fake `dot` is a shell script")
def test_draw_calls_dot_with_format_and_stdin(tmp_path, monkeypatch):
    # a stand-in `dot` that records its arguments and copies stdin to the -o file
    bindir = _fake_dot(tmp_path, 'echo "$@" > "$(dirname "$0")/args"; cat > "$3"\n')
    monkeypatch.setenv("PATH", str(bindir) + os.pathsep + os.environ["PATH"])
    _, _, loss = _mlp_loss()
    for fmt in ("svg", "png"):
        path = tmp_path / f"g.{fmt}"
        assert viz.draw(loss, path) == str(path)
        assert (bindir / "args").read_text().split() == [f"-T{fmt}", "-o", str(path)]
        assert path.read_text() == viz.to_dot(loss)
    viz.draw(loss, tmp_path / "graph", format="png")
    assert (bindir / "args").read_text().split()[0] == "-Tpng"


@pytest.mark.skipif(os.name != "posix", reason="fake `dot` is a shell script")
def test_draw_reports_dot_failure(tmp_path, monkeypatch):
    bindir = _fake_dot(tmp_path, "echo \"syntax error\" >&2; exit 3\n")
    monkeypatch.setenv("PATH", str(bindir) + os.pathsep + os.environ["PATH"])
    _, _, loss = _mlp_loss()
    with pytest.raises(RuntimeError, match="exit status 3: syntax error"):
        viz.draw(loss, tmp_path / "g.svg")


def test_trace_records_match_a_hand_computation(capsys):
    # y = sum(relu(a @ b)) with a, b chosen off the relu kink
    a = tk.tensor(np.array([[1.0, -2.0], [3.0, 0.5]]), requires_grad=True)
    b = tk.tensor(np.array([[0.5, -1.0], [0.25, 2.0]]), requires_grad=True)
    records = (a @ b).relu().sum().backward(trace=True)
    printed = capsys.readouterr().out
    assert [r["op"] for r in records] == ["Sum", "ReLU", "MatMul"]
    z = a.numpy() @ b.numpy()
    mask = (z > 0).astype(float)
    assert records[0]["output_shape"] == () and records[0]["grad_output_norm"] == 1.0
    assert records[1]["input_shapes"] == [(2, 2)]
    np.testing.assert_allclose(records[1]["grad_input_norms"][0], np.linalg.norm(mask))
    np.testing.assert_allclose(records[2]["grad_input_norms"],
                               [np.linalg.norm(mask @ b.numpy().T),
                                np.linalg.norm(a.numpy().T @ mask)])
    lines = printed.strip().splitlines()
    assert len(lines) == 4 and lines[1].split()[1] == "Sum" and lines[3].split()[1] == "MatMul"
    assert "<--" not in printed


def test_trace_list_argument_and_context_manager(capsys):
    x = tk.randn(4, 3, requires_grad=True)
    records = []
    assert (x.tanh() * 2).sum().backward(trace=records) is None
    with viz.trace() as ctx_records:
        (x.tanh() * 2).sum().backward()
        with viz.trace() as inner:
            x.sigmoid().sum().backward()
    x.exp().sum().backward()  # outside: not recorded
    assert capsys.readouterr().out == ""
    assert [r["op"] for r in records] == ["Sum", "Mul", "Tanh"]
    assert [r["op"] for r in ctx_records] == ["Sum", "Mul", "Tanh"]
    assert [r["op"] for r in inner] == ["Sum", "Sigmoid"]
    for r, s in zip(records, ctx_records):
        assert r["grad_output_norm"] == pytest.approx(s["grad_output_norm"])


def test_trace_marks_vanishing_exploding_and_nonfinite():
    # 30 sigmoid layers: each multiplies the gradient by at most 1/4 -> vanishes
    x = tk.tensor(np.full((2, 2), 0.5), requires_grad=True)
    with viz.trace() as records:
        y2 = x
        for _ in range(30):
            y2 = y2.sigmoid()
        y2.sum().backward()
    text = viz.format_trace(records)
    lines = text.splitlines()
    assert "VANISHING" not in lines[1] and "VANISHING" in lines[30]
    first = next(i for i, ln in enumerate(lines) if "VANISHING" in ln)
    assert all("VANISHING" in ln for ln in lines[first:31])
    assert re.search(r"\d+ of 31 nodes have a gradient norm outside \[1e-07, 1000\]", text)
    # thresholds are parameters
    assert "<--" not in viz.format_trace(records, low=0.0)
    big = [{"op": "Mul", "input_shapes": [(3,), ()], "output_shape": (3,),
            "grad_output_norm": 5e3, "grad_input_norms": [float("nan"), None]}]
    text = viz.format_trace(big)
    assert "<-- EXPLODING <-- NONFINITE" in text and "(): -" in text


def test_grad_norms_table():
    model, _, loss = _mlp_loss()
    model[2].bias.requires_grad_(False)
    loss.backward()
    rows = viz.grad_norms(model.named_parameters())
    assert [r[0] for r in rows] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert rows[3][2] is None
    np.testing.assert_allclose(rows[0][2], np.linalg.norm(model[0].weight.grad.numpy()),
                               rtol=1e-6)
    table = viz.format_grad_norms(dict(model.named_parameters()))
    assert table.splitlines()[4].split() == ["2.bias", "(2,)", "-"]


# -- the built-in layout (no Graphviz) -------------------------------------------------
SVG = "{http://www.w3.org/2000/svg}"


def _cnn_loss():
    from tinygrad_k.models import LeNet5
    tk.manual_seed(0)
    model = LeNet5()
    x = tk.randn(2, 1, 28, 28)
    loss = nn.functional.cross_entropy(model(x), tk.tensor(np.array([3, 7])))
    return model, loss


def _check_svg(path, n_nodes, n_edges, texts=()):
    root = ET.parse(path).getroot()          # well-formed XML
    assert root.tag == SVG + "svg"
    w, h = float(root.get("width")), float(root.get("height"))
    shapes = root.findall(SVG + "rect")[1:] + root.findall(SVG + "ellipse")  # [0]: background
    assert len(shapes) == n_nodes
    lines = root.findall(SVG + "polyline")
    assert len(lines) == n_edges and all(ln.get("marker-end") == "url(#arrow)" for ln in lines)
    for el in root.iter():
        for attr in ("x", "y", "cx", "cy", "width", "height"):
            if el.get(attr) is not None:
                assert -1 <= float(el.get(attr)) <= max(w, h) + 1, (el.tag, attr)
    content = " ".join(t.text or "" for t in root.iter(SVG + "tspan"))
    for needle in texts:
        assert needle in content, needle
    return root


def _boxes(root):
    out = []
    for r in root.findall(SVG + "rect")[1:]:
        x, y, w, h = (float(r.get(a)) for a in ("x", "y", "width", "height"))
        out.append((x, y, x + w, y + h))
    for e in root.findall(SVG + "ellipse"):
        cx, cy, rx, ry = (float(e.get(a)) for a in ("cx", "cy", "rx", "ry"))
        out.append((cx - rx, cy - ry, cx + rx, cy + ry))
    return out


@pytest.mark.parametrize("which", ["mlp", "cnn"])
def test_builtin_svg_without_dot(tmp_path, monkeypatch, which):
    _no_dot(monkeypatch)
    model, loss = (_mlp_loss()[0::2] if which == "mlp" else _cnn_loss())
    nodes, edges = _nodes_and_edges(viz.to_dot(loss))
    out = viz.draw(loss, tmp_path / "g.svg", model.named_parameters())
    assert out == str(tmp_path / "g.svg")
    names = [n for n, _ in model.named_parameters()]
    root = _check_svg(out, len(nodes), len(edges), texts=["CrossEntropy", *names])
    boxes = _boxes(root)
    for i, a in enumerate(boxes):   # no two nodes overlap
        for b in boxes[i + 1:]:
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (a, b)
    # every arrow points up, towards the output (rankdir BT): gradients flow down
    for ln in root.findall(SVG + "polyline"):
        ys = [float(p.split(",")[1]) for p in ln.get("points").split()]
        assert ys[-1] < ys[0] and ys == sorted(ys, reverse=True)
    loss.backward()
    viz.draw(loss, tmp_path / "after.svg", model.named_parameters())
    content = " ".join(t.text or "" for t in ET.parse(tmp_path / "after.svg").iter(SVG + "tspan"))
    assert content.count("|grad|") == len(names)


def test_builtin_png_and_pdf_without_dot(tmp_path, monkeypatch):
    _no_dot(monkeypatch)
    pytest.importorskip("matplotlib")
    model, loss = _cnn_loss()
    png = viz.draw(loss, tmp_path / "g.png", model.named_parameters())
    data = open(png, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    from matplotlib.image import imread
    img = imread(png)
    assert img.shape[0] > 200 and img.shape[1] > 100 and img[..., :3].std() > 0.05
    pdf = viz.draw(loss, tmp_path / "g.pdf")
    assert open(pdf, "rb").read()[:5] == b"%PDF-"
    # engine="builtin" skips Graphviz even when it is there; TB puts the output at the bottom
    svg = viz.to_svg(loss, rankdir="TB")
    root = ET.fromstring(svg)
    for ln in root.findall(SVG + "polyline"):
        ys = [float(p.split(",")[1]) for p in ln.get("points").split()]
        assert ys[-1] > ys[0]


def test_builtin_svg_truncated_and_deep_chain():
    x = tk.randn(3, requires_grad=True)
    y = x
    for _ in range(300):
        y = y.tanh()
    root = ET.fromstring(viz.to_svg(y))
    assert len(root.findall(SVG + "rect")) - 1 == 300
    small = ET.fromstring(viz.to_svg(y, max_nodes=5))
    assert any("graph cut at max_nodes=5" in (t.text or "") for t in small.iter(SVG + "tspan"))


def test_builtin_layout_orders_to_avoid_crossings():
    # two independent chains joined at the end: the ordering keeps them side by side
    a = tk.randn(2, requires_grad=True)
    b = tk.randn(2, requires_grad=True)
    ya, yb = a, b
    for _ in range(4):
        ya, yb = ya.tanh(), yb.sigmoid()
    nodes, edges, _ = viz._graph(ya + yb)
    boxes, paths, _, _ = viz._layout(nodes, edges)
    xs = {i: boxes[i][0] for i in range(len(nodes))}
    exp_x = [xs[i] for i, n in enumerate(nodes) if n["lines"][0] == "Tanh"]
    sig_x = [xs[i] for i, n in enumerate(nodes) if n["lines"][0] == "Sigmoid"]
    assert (max(exp_x) < min(sig_x)) or (max(sig_x) < min(exp_x))


def test_builtin_svg_and_png_of_the_transformer(tmp_path, monkeypatch):
    _no_dot(monkeypatch)
    from tinygrad_k.models.charlm import CharTransformer, LMLoss
    tk.manual_seed(0)
    model = CharTransformer(block_size=6, n_embd=8, n_head=2, n_layer=1, tie_weights=True)
    idx = tk.tensor(np.array([[0, 5, 13, 13, 1, 0]]))
    loss = LMLoss()(model(idx), tk.tensor(np.array([[5, 13, 13, 1, 0, -1]])))
    loss.backward()
    nodes, edges = _nodes_and_edges(viz.to_dot(loss))
    svg = viz.draw(loss, tmp_path / "t.svg", model.named_parameters())
    root = _check_svg(svg, len(nodes), len(edges),
                      texts=["Softmax", "LayerNorm", "MatMul", "GELU", "Embedding", "|grad|",
                             "tok_emb.weight", "blocks.0.attn.qkv.weight"])
    ops = [t.text for t in root.iter(SVG + "tspan") if t.get("font-weight") == "bold"]
    assert ops.count("MatMul") >= 2 and "Where" in ops   # the two attention products, the mask
    png = viz.draw(loss, tmp_path / "t.png", model.named_parameters())
    assert open(png, "rb").read()[:8] == b"\x89PNG\r\n\x1a\n"
