"""The character-level language-model study path: the words dataset, bigram / MLP /
transformer models (causal, attention gradchecked and compared with PyTorch), sampling,
the CLI (`train --model char_* --dataset words`, `sample`), and a model that beats the
bigram baseline on a small slice."""
import json
import math

import numpy as np
import pytest

import tinygrad_k as tk
from tinygrad_k import cli, nn, optim
from tinygrad_k.data.text import (IGNORE, VOCAB, CharWords, decode, encode, load_words,
                                  words_datasets)
from tinygrad_k.gradcheck import gradcheck
from tinygrad_k.models import SPECS, build
from tinygrad_k.models.charlm import (CHAR_MODELS, Bigram, CausalSelfAttention, CharMLP,
                                      CharTransformer, LMLoss, sample)

WORDS = ["emma", "olivia", "ava", "isabella", "sophia", "charlotte", "mia", "amelia",
         "harper", "evelyn", "abigail", "emily", "elizabeth", "mila", "ella", "avery"]


def _word_file(tmp_path, words=None, name="words.txt"):
    path = tmp_path / name
    path.write_text("\n".join(words or WORDS) + "\n")
    return str(path)


# -- data -------------------------------------------------------------------------------
def test_load_words_filters_and_dedupes(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("Hello, world!  A's naïve\nEMMA emma x2 (ava) -- don't\n")
    assert load_words(str(path)) == ["hello", "world", "emma", "ava"]
    assert load_words(str(path), limit=2) == ["hello", "world"]
    (tmp_path / "empty.txt").write_text("123 !!\n")
    with pytest.raises(ValueError, match="no word made of the letters a-z"):
        load_words(str(tmp_path / "empty.txt"))
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        load_words(str(tmp_path / "nope.txt"))


def test_encode_decode_and_rows():
    assert VOCAB[0] == "." and len(VOCAB) == 27
    assert encode("emma") == [5, 13, 13, 1] and decode([5, 13, 13, 1, 0]) == "emma."
    with pytest.raises(ValueError, match="outside"):
        encode("Emma")
    ds = CharWords(["emma", "ab"], block_size=6)
    x, y = ds[0]
    assert decode(x) == ".emma." and list(y) == [5, 13, 13, 1, 0, IGNORE]
    x, y = ds[1]
    assert decode(x) == ".ab..." and list(y) == [1, 2, 0, IGNORE, IGNORE, IGNORE]
    assert ds.num_targets() == 5 + 3
    xb, yb = ds.get_batch(np.array([1]))   # cut after the last real target
    assert xb.shape == (1, 3) and list(yb[0]) == [1, 2, 0]
    with pytest.raises(ValueError, match="block_size 3 is too short"):
        CharWords(["emma"], block_size=3)


def test_split_is_disjoint_and_reproducible():
    tr, va = words_datasets(WORDS, val_fraction=0.25, seed=1)
    assert len(va) == 4 and len(tr) == 12
    assert not set(tr.words) & set(va.words) and sorted(tr.words + va.words) == sorted(WORDS)
    assert tr.block_size == va.block_size == len("elizabeth") + 1
    assert words_datasets(WORDS, 0.25, seed=1)[1].words == va.words
    assert words_datasets(WORDS, 0.25, seed=2)[1].words != va.words


# -- models -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(CHAR_MODELS))
def test_models_are_causal_with_the_right_shapes(name):
    tk.manual_seed(0)
    model = build(name, (8,), 27)
    if name == "bigram":   # it starts at zero (the uniform guess): give it something to show
        nn.init.normal_(model.table.weight)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 27, (3, 8))
    out = model(tk.tensor(idx))
    assert out.shape == (3, 8, 27)
    changed = idx.copy()
    changed[:, 5:] = (changed[:, 5:] + 1) % 27   # change the future of position 4
    out2 = model(tk.tensor(changed))
    np.testing.assert_allclose(out.numpy()[:, :5], out2.numpy()[:, :5], rtol=1e-5, atol=1e-6)
    assert not np.allclose(out.numpy()[:, 5:], out2.numpy()[:, 5:])
    loss = LMLoss()(out, tk.tensor(idx))
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and np.isfinite(p.grad.numpy()).all(), pname
    # a model that knows nothing scores about log(27) = 3.30 nats
    if name != "bigram":
        assert abs(loss.item() - math.log(27)) < 0.1


def test_char_mlp_context_is_the_last_characters():
    model = CharMLP(context=3)
    w = model.windows(tk.tensor(np.array([[0, 5, 13, 13]]))).numpy()
    assert w.tolist() == [[[0, 0, 0], [0, 0, 5], [0, 5, 13], [5, 13, 13]]]


def test_bigram_counts_are_the_maximum_likelihood_table():
    ds = CharWords(WORDS)
    x, y = ds.arrays
    model = Bigram().fit_counts(x, y, smoothing=0.0 + 1e-9)
    loss = LMLoss()(model(tk.tensor(x)), tk.tensor(y)).item()
    # the loss of the ML table is the conditional entropy H(next | this) of the data
    keep = y >= 0
    pairs = {}
    for a, b in zip(x[keep], y[keep]):
        pairs[(a, b)] = pairs.get((a, b), 0) + 1
    first = {}
    for (a, _), c in pairs.items():
        first[a] = first.get(a, 0) + c
    n = keep.sum()
    h = -sum(c / n * math.log(c / first[a]) for (a, _), c in pairs.items())
    assert loss == pytest.approx(h, rel=1e-4)


def test_attention_gradcheck_float64():
    tk.manual_seed(0)
    attn = CausalSelfAttention(8, 2, block_size=5).double()
    x = tk.randn(2, 5, 8, dtype=tk.float64, requires_grad=True)
    assert gradcheck(lambda t: attn(t), (x,))
    # and with respect to the weights, through a function of them
    w = attn.qkv.weight

    def f(weight):
        q, k, v = nn.functional.linear(x, weight, attn.qkv.bias).split(8, dim=2)
        return q * k + v

    assert gradcheck(f, (w.detach().requires_grad_(True),))


def _torch_forward(model, idx):
    """The CharTransformer's forward written with PyTorch's ops, on our weights."""
    import torch
    import torch.nn.functional as TF

    P = {k: torch.tensor(v.numpy(), dtype=torch.float64, requires_grad=True)
         for k, v in model.state_dict().items()}
    head_w = P["tok_emb.weight"] if model.tie_weights else P["head.weight"]
    idx = torch.tensor(idx)
    N, T = idx.shape
    x = P["tok_emb.weight"][idx] + P["pos_emb.weight"][:T]
    C = x.shape[-1]
    for b in range(len(model.blocks)):
        pre = f"blocks.{b}."
        h = model.blocks[b].attn.n_head
        a = TF.layer_norm(x, (C,), P[pre + "ln1.weight"], P[pre + "ln1.bias"], 1e-5)
        q, k, v = TF.linear(a, P[pre + "attn.qkv.weight"], P[pre + "attn.qkv.bias"]).split(C, 2)
        q, k, v = (t.reshape(N, T, h, C // h).transpose(1, 2) for t in (q, k, v))
        y = TF.scaled_dot_product_attention(q, k, v, is_causal=True)
        y = y.transpose(1, 2).reshape(N, T, C)
        x = x + TF.linear(y, P[pre + "attn.proj.weight"], P[pre + "attn.proj.bias"])
        m = TF.layer_norm(x, (C,), P[pre + "ln2.weight"], P[pre + "ln2.bias"], 1e-5)
        m = TF.gelu(TF.linear(m, P[pre + "mlp.0.weight"], P[pre + "mlp.0.bias"]))
        x = x + TF.linear(m, P[pre + "mlp.2.weight"], P[pre + "mlp.2.bias"])
    x = TF.layer_norm(x, (C,), P["ln_f.weight"], P["ln_f.bias"], 1e-5)
    return TF.linear(x, head_w), P


@pytest.mark.parametrize("tie", [False, True])
def test_transformer_matches_pytorch_forward_and_gradients(tie):
    torch = pytest.importorskip("torch")
    tk.manual_seed(0)
    model = CharTransformer(block_size=7, n_embd=16, n_head=4, n_layer=2,
                            tie_weights=tie).double()
    assert (model.head.weight is model.tok_emb.weight) == tie
    names = [n for n, _ in model.named_parameters()]
    assert ("head.weight" in names) != tie   # a tied weight is one parameter
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 27, (3, 7))
    y = rng.integers(0, 27, (3, 7))
    y[0, 4:] = IGNORE
    loss = LMLoss()(model(tk.tensor(idx)), tk.tensor(y))
    loss.backward()
    logits, P = _torch_forward(model, idx)
    tloss = torch.nn.functional.cross_entropy(logits.reshape(-1, 27), torch.tensor(y).reshape(-1),
                                              ignore_index=IGNORE)
    tloss.backward()
    np.testing.assert_allclose(loss.item(), tloss.item(), rtol=1e-10)
    for name, p in model.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), P[name].grad.numpy(), rtol=1e-7, atol=1e-10,
                                   err_msg=name)


def test_sample_is_reproducible_and_temperature_sharpens():
    tk.manual_seed(0)
    ds = CharWords(WORDS)
    model = Bigram().fit_counts(*ds.arrays)
    a = sample(model, num=20, seed=3, temperature=1.0)
    assert a == sample(model, num=20, seed=3, temperature=1.0)
    assert a != sample(model, num=20, seed=4, temperature=1.0)
    assert all(set(w) <= set(VOCAB[1:]) for w in a) and len(a) == 20
    cold = sample(model, num=50, seed=0, temperature=0.05)   # nearly greedy: few distinct words
    hot = sample(model, num=50, seed=0, temperature=3.0)
    assert len(set(cold)) < len(set(hot))
    assert all(len(w) <= 5 for w in sample(model, num=10, seed=0, max_len=5))
    with pytest.raises(ValueError, match="temperature must be > 0"):
        sample(model, temperature=0)
    t = CharTransformer(block_size=6, n_embd=8, n_head=2, n_layer=1)
    assert all(len(w) <= 5 for w in sample(t, num=5, seed=0))   # positions end at block_size


def _train_steps(model, train, steps, lr, seed=0, batch=32):
    opt = optim.Adam(model.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    loss_fn = LMLoss()
    for _ in range(steps):
        x, y = train.get_batch(rng.integers(0, len(train), batch))
        loss = loss_fn(model(tk.tensor(x)), tk.tensor(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def _val_loss(model, val):
    x, y = val.arrays
    with tk.no_grad():
        return LMLoss()(model(tk.tensor(x)), tk.tensor(y)).item()


def test_mlp_and_transformer_beat_the_bigram_on_a_small_slice():
    """2000 training words, 300 validation words (every 30th word of the list): the counts
    bigram (the best a one-character context can do) against char_mlp and char_transformer
    after a short run; both must be clearly below it (measured on wamerican: bigram 2.48,
    char_mlp 2.38 after 200 steps, char_transformer 2.39 after 150)."""
    try:
        words = load_words()[::30][:2300]
    except FileNotFoundError as e:
        # (load_words_or_skip's generated syllable words do not serve here: a bigram
        # already knows most of their structure, 1.85 nats, and 200 steps of char_mlp
        # reach 2.27; scripts/test.sh installs wamerican)
        pytest.skip(f"{e}; the comparison needs a real word list")
    train, val = words_datasets(words, val_fraction=300 / 2300, seed=0)
    bigram = _val_loss(Bigram().fit_counts(*train.arrays), val)
    tk.manual_seed(0)
    mlp = _val_loss(_train_steps(CharMLP(block_size=train.block_size), train, 200, 1e-2),
                    val)
    tk.manual_seed(0)
    tr = _val_loss(_train_steps(CharTransformer(block_size=train.block_size, n_embd=32,
                                                n_head=4, n_layer=1), train, 150, 1e-2),
                   val)
    assert mlp < bigram - 0.05, (mlp, bigram)
    assert tr < bigram - 0.05, (tr, bigram)


def load_words_or_skip():
    try:
        return load_words()
    except FileNotFoundError:   # no wamerican: a generated word list with structure
        rng = np.random.default_rng(0)
        syll = ["ka", "ro", "mi", "ten", "sa", "lo", "ber", "na", "th", "qu", "ie", "ing"]
        return list(dict.fromkeys("".join(rng.choice(syll, rng.integers(1, 5)))
                                  for _ in range(6000)))


# -- CLI --------------------------------------------------------------------------------
def test_cli_train_sample_and_errors(tmp_path, capsys):
    words = _word_file(tmp_path, load_words_or_skip()[:600])
    out = tmp_path / "run"
    rc = cli.main(["train", "--model", "char_mlp", "--dataset", words, "--epochs", "1",
                   "--out", str(out), "--no-progress", "--no-plot"])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    cfg, h = metrics["config"], metrics["history"]
    assert cfg["task"] == "lm" and cfg["num_classes"] == 27
    assert h["test_accuracy"] == [None] and h["test_loss"][-1] < math.log(27)
    capsys.readouterr()
    ck = str(out / "checkpoint.npz")
    assert cli.main(["sample", "--checkpoint", ck, "--num", "7", "--seed", "0",
                     "--temperature", "0.8"]) == 0
    first = capsys.readouterr().out.splitlines()   # a barely trained model may say "" too
    assert len(first) == 7 and all(set(w) <= set(VOCAB[1:]) for w in first)
    cli.main(["sample", "--checkpoint", ck, "--num", "7", "--seed", "0", "--temperature", "0.8"])
    assert capsys.readouterr().out.splitlines() == first
    # eval reports the loss in nats; predict and a non-LM sample say what to do instead
    assert cli.main(["eval", "--checkpoint", ck, "--no-progress"]) == 0
    assert "loss" in capsys.readouterr().out
    assert cli.main(["predict", "--checkpoint", ck]) == 2
    assert "sample --checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli.main(["sample", "--checkpoint", ck, "--temperature", "-1"])
    assert exc.value.code == 2 and "--temperature" in capsys.readouterr().err


def test_cli_models_and_datasets_must_match(tmp_path, capsys):
    words = _word_file(tmp_path)
    assert cli.main(["train", "--model", "char_mlp", "--dataset", "synthetic",
                     "--out", str(tmp_path / "a")]) == 2
    assert "needs words" in capsys.readouterr().err
    assert cli.main(["train", "--model", "lenet5", "--dataset", words,
                     "--out", str(tmp_path / "b")]) == 2
    assert "cannot train on --dataset" in capsys.readouterr().err


def test_specs_of_the_language_models():
    for name in CHAR_MODELS:
        assert SPECS[name].dataset == "words" and SPECS[name].task == "lm"
