"""Initialisation schemes against their formulas (Glorot 2010, He 2015, LeCun 1998, Saxe 2014)."""

import math

import pytest
import torch
from torch import nn

from gradwell.nn import MLP, gain, init_weights, make_activation


def _layer(fan_in=400, fan_out=600, scheme="default", activation="relu"):
    torch.manual_seed(0)
    layer = nn.Linear(fan_in, fan_out)
    init_weights(layer, scheme, activation)
    return layer


@pytest.mark.parametrize("activation, g", [("relu", math.sqrt(2)), ("tanh", 5 / 3),
                                           ("sigmoid", 1.0), ("leaky_relu", math.sqrt(2 / 1.0001)),
                                           ("prelu", math.sqrt(2 / 1.0625)), ("linear", 1.0)])
def test_he_std_is_gain_over_sqrt_fan_in(activation, g):
    w = _layer(400, 600, "he", activation).weight
    assert w.std().item() == pytest.approx(g / math.sqrt(400), rel=0.02)
    assert w.mean().item() == pytest.approx(0.0, abs=0.01 * g / math.sqrt(400))


def test_kaiming_is_he_and_gain_of_relu():
    assert gain("relu") == pytest.approx(math.sqrt(2))
    a, b = _layer(scheme="kaiming").weight, _layer(scheme="he").weight
    assert torch.equal(a, b)


@pytest.mark.parametrize("scheme", ["xavier_normal", "glorot_normal"])
def test_glorot_normal_std(scheme):
    w = _layer(400, 600, scheme).weight
    assert w.std().item() == pytest.approx(math.sqrt(2 / 1000), rel=0.02)


@pytest.mark.parametrize("scheme", ["xavier_uniform", "glorot_uniform"])
def test_glorot_uniform_bound_and_std(scheme):
    w = _layer(400, 600, scheme).weight
    a = math.sqrt(6 / 1000)
    assert w.abs().max().item() <= a
    assert w.abs().max().item() > 0.99 * a
    assert w.std().item() == pytest.approx(a / math.sqrt(3), rel=0.02)


def test_lecun_std():
    assert _layer(400, 600, "lecun").weight.std().item() == pytest.approx(1 / 20, rel=0.02)


def test_orthogonal_rows_are_orthonormal_times_gain():
    w = _layer(300, 300, "orthogonal", "relu").weight.double()
    assert torch.allclose(w @ w.T, 2.0 * torch.eye(300, dtype=torch.float64), atol=1e-4)


def test_default_keeps_torch_bound_and_named_schemes_zero_biases():
    layer = _layer(400, 600, "default")
    assert layer.weight.abs().max().item() <= 1 / math.sqrt(400)
    assert layer.bias.abs().max().item() > 0
    for scheme in ("he", "lecun", "orthogonal", "xavier_normal"):
        assert torch.count_nonzero(_layer(scheme=scheme).bias) == 0


def test_unknown_scheme_and_activation_name_the_choices():
    with pytest.raises(ValueError, match="init must be one of .*kaiming"):
        init_weights(nn.Linear(2, 2), "he_normal")
    with pytest.raises(ValueError, match="activation must be one of .*sigmoid"):
        make_activation("swish")


@pytest.mark.parametrize("name, x, expected", [
    ("sigmoid", 0.0, 0.5), ("sigmoid", 2.0, 1 / (1 + math.exp(-2))),
    ("tanh", 1.0, math.tanh(1.0)), ("relu", -1.0, 0.0), ("relu", 3.0, 3.0),
    ("leaky_relu", -2.0, -0.02), ("prelu", -2.0, -0.5), ("elu", -1.0, math.exp(-1) - 1),
    ("gelu", 1.0, 1.0 * 0.5 * (1 + math.erf(1 / math.sqrt(2)))), ("linear", -3.5, -3.5)])
def test_activation_formulas(name, x, expected):
    out = make_activation(name).double()(torch.tensor([x], dtype=torch.float64))
    assert out.item() == pytest.approx(expected, rel=1e-6, abs=1e-9)


def _final_second_moment(init, depth=30, width=256):
    torch.manual_seed(1)
    net = MLP(width, 10, depth=depth, width=width, activation="relu", init=init)
    h = torch.randn(512, width)
    for block in net.blocks:
        h = block(h)
    return h.pow(2).mean().item()


def test_he_init_preserves_relu_activations_and_xavier_halves_them():
    """He et al. 2015, Eq. 10: with Var(w) = 2/n the second moment of ReLU activations stays
    constant with depth; with Var(w) = 1/n (Glorot, n_in = n_out) it halves per layer."""
    x2 = 1.0   # E[x^2] of the standard normal input
    he = _final_second_moment("he")
    assert 0.2 * x2 < he < 5 * x2
    xavier = _final_second_moment("xavier_normal")
    assert xavier < 1e-5 * x2          # (1/2)^30 ~ 1e-9
