"""Words as character sequences, for the character-level language models (makemore style).

The vocabulary is ``'.'`` (index 0, the word boundary) and ``'a'..'z'`` (1..26). A word
``emma`` becomes one training row of a fixed length ``T`` (the longest word + 1):

    x = . e m m a . . .        the input: the boundary, then the word, then padding
    y = e m m a . - - -        the next character at each position; '-' is IGNORE (-1)

so a causal model predicting ``y[t]`` from ``x[:t+1]`` is trained on every character of
every word, and the boundary it predicts after the last letter ends a sampled word.
Positions past the end are ignored by the loss (``cross_entropy(..., ignore_index=-1)``);
the mean over the rest is the loss per character in nats.

    from tinygrad_k.data.text import load_words, words_datasets
    train, val = words_datasets(load_words(), val_fraction=0.1, seed=0)
    x, y = train[0]       # int64 (T,), int64 (T,)

Words come from ``/usr/share/dict/words`` (Debian package ``wamerican``) or any text file:
each whitespace-separated token is lowercased, stripped of surrounding punctuation and kept
when it is made of the letters a-z only ("A's" and "naïve" are dropped); duplicates are
dropped, the first occurrence kept.
"""
from __future__ import annotations

import os
import string

import numpy as np

from .dataset import TensorDataset

__all__ = ["BOUNDARY", "IGNORE", "VOCAB", "DEFAULT_WORDS", "load_words", "encode", "decode",
           "CharWords", "words_datasets", "is_words_dataset", "make_words_data"]

BOUNDARY = "."
VOCAB = BOUNDARY + string.ascii_lowercase   # index 0 is the boundary
IGNORE = -1                                  # target of padding positions
DEFAULT_WORDS = "/usr/share/dict/words"
_INDEX = {c: i for i, c in enumerate(VOCAB)}
_LETTERS = frozenset(string.ascii_lowercase)


def load_words(path=None, limit=None):
    """The words of a text file (default: ``$TINYGRAD_K_WORDS`` or /usr/share/dict/words).

    Lowercased, surrounding punctuation stripped, only tokens of a-z letters kept, each
    once, in file order; ``limit`` keeps the first ``limit``. Raises FileNotFoundError
    (saying how to get the word list) or ValueError (no usable word).
    """
    path = path or os.environ.get("TINYGRAD_K_WORDS") or DEFAULT_WORDS
    if not os.path.isfile(path):
        hint = (" (Debian/Ubuntu: apt-get install wamerican, or name any text file)"
                if path == DEFAULT_WORDS else "")
        raise FileNotFoundError(f"words: no word list at {path}{hint}")
    seen, words = set(), []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            for tok in line.split():
                w = tok.lower().strip(string.punctuation)
                if w and w not in seen and set(w) <= _LETTERS:
                    seen.add(w)
                    words.append(w)
                    if limit is not None and len(words) >= limit:
                        return words
    if not words:
        raise ValueError(f"words: {path} holds no word made of the letters a-z")
    return words


def encode(word):
    """'emma' -> [5, 13, 13, 1] (no boundary added)."""
    try:
        return [_INDEX[c] for c in word]
    except KeyError as exc:
        raise ValueError(f"encode: {word!r} has a character outside {VOCAB!r}: "
                         f"{exc.args[0]!r}") from None


def decode(indices):
    """[5, 13, 13, 1, 0] -> 'emma.' (indices into VOCAB)."""
    return "".join(VOCAB[int(i)] for i in indices)


class CharWords(TensorDataset):
    """One row per word: ``x`` (T,) int64 = boundary, letters, boundary padding;
    ``y`` (T,) int64 = the next character of each position, IGNORE past the word's end.

    ``block_size`` T defaults to the longest word + 1; longer words raise ValueError.
    """

    vocab = VOCAB

    def __init__(self, words, block_size=None):
        words = list(words)
        if not words:
            raise ValueError("CharWords: no words")
        longest = max(len(w) for w in words)
        T = longest + 1 if block_size is None else int(block_size)
        if longest + 1 > T:
            raise ValueError(f"CharWords: block_size {T} is too short for a word of "
                             f"{longest} letters (needs {longest + 1})")
        x = np.zeros((len(words), T), dtype=np.int64)          # padded with the boundary
        y = np.full((len(words), T), IGNORE, dtype=np.int64)
        for i, w in enumerate(words):
            e = encode(w)
            x[i, 1:len(e) + 1] = e
            y[i, :len(e)] = e
            y[i, len(e)] = 0
        super().__init__(x, y)
        self.words, self.block_size = words, T

    @property
    def vocab_size(self):
        return len(VOCAB)

    def get_batch(self, idx):
        """Rows ``idx``, cut after the last column that has a target in any of them: the
        cut columns are padding for every row, and a causal model's outputs at the kept
        positions do not depend on them (a batch of short words costs less)."""
        x, y = self.arrays[0][idx], self.arrays[1][idx]
        keep = int((y != IGNORE).any(0).nonzero()[0].max()) + 1 if y.size else 0
        return x[:, :keep], y[:, :keep]

    def num_targets(self):
        """Characters to predict (letters + one boundary per word): the loss's denominator."""
        return int((self.arrays[1] != IGNORE).sum())


def words_datasets(words, val_fraction=0.1, seed=0, block_size=None):
    """(train, val) CharWords from a shuffled split of ``words`` (same block_size for both,
    so a model trained on one reads the other)."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"words_datasets: val_fraction must be in (0, 1), got {val_fraction}")
    words = list(words)
    if len(words) < 2:
        raise ValueError(f"words_datasets: need at least 2 words to split, got {len(words)}")
    order = np.random.default_rng(seed).permutation(len(words))
    n_val = min(len(words) - 1, max(1, int(round(len(words) * val_fraction))))
    T = block_size or max(len(w) for w in words) + 1
    val = [words[i] for i in order[:n_val]]
    train = [words[i] for i in order[n_val:]]
    return CharWords(train, T), CharWords(val, T)


def is_words_dataset(name):
    """True for the CLI's dataset names that mean words: "words" or a .txt file."""
    return name == "words" or str(name).endswith(".txt")


def make_words_data(name, data_dir=None, limit_train=None, limit_test=None, seed=0):
    """The CLI's words data: ``name`` "words" (``data_dir``: a word-list file, default
    /usr/share/dict/words) or a text file -> (train, val, (T,), vocabulary size, None),
    the make_data contract. ``limit_*`` keep the first N words of each split."""
    path = None if name == "words" else name
    if name == "words" and data_dir:
        path = data_dir
    train, val = words_datasets(load_words(path), val_fraction=0.1, seed=seed)
    T = train.block_size
    if limit_train is not None and limit_train < len(train):
        train = CharWords(train.words[:limit_train], T)
    if limit_test is not None and limit_test < len(val):
        val = CharWords(val.words[:limit_test], T)
    return train, val, (T,), len(VOCAB), None
