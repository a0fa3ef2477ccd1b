"""The verdict rule against hand-computed cases, and the mechanical remedies against the
formulas they implement (He, Glorot, orthogonal) on models we did not write."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import gradwell
from gradwell.doctor.structure import mlp_args
from gradwell.doctor.verdict import compare


@pytest.mark.parametrize("baseline, scores, maximize, verdict", [
    ([1.0, 1.1, 1.2], [0.5, 0.6, 0.7], False, "helps"),          # 0.5 better > spread 0.2
    ([1.0, 1.1, 1.2], [0.95, 1.0, 1.05], False, "no measurable change"),   # 0.1 < 0.2
    ([1.0, 1.1, 1.2], [1.5, 1.6, 1.8], False, "hurts"),
    ([0.8, 0.82, 0.85], [0.9, 0.91, 0.93], True, "helps"),        # accuracy: higher is better
    ([2.3026, 2.3027, 2.3026], [2.3020, 2.3021, 2.3020], False,   # 6e-4 > spread 1e-4, but
     "no measurable change"),                                     # < 1 % of 2.3: not a remedy
    ([1.0, 1.1, math.inf], [0.5, 0.6, 0.7], False,                # a baseline seed diverged:
     "no measurable change"),                                     # the spread is unbounded
])
def test_verdicts_by_hand(baseline, scores, maximize, verdict) -> None:
    c = compare(baseline, scores, maximize)
    assert c.verdict == verdict
    sign = -1 if maximize else 1
    assert c.improvement == pytest.approx(sign * (sorted(baseline)[1] - sorted(scores)[1]))


def test_verdict_needs_three_seeds_and_diverged_medians_decide() -> None:
    with pytest.raises(ValueError, match="at least 3 seeds"):
        compare([1.0, 2.0], [0.5, 0.6])
    assert compare([1.0, 1.0, 1.0], [math.inf, math.inf, 0.1]).verdict == "hurts"
    assert compare([math.inf, math.inf, 1.0], [0.5, 0.5, 0.5]).verdict == "helps"


def _std(w: torch.Tensor) -> float:
    return w.detach().double().std().item()


def test_reinit_applies_each_scheme_on_models_we_did_not_write() -> None:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(64, 4, dim_feedforward=256, batch_first=True)
    model = nn.ModuleDict({"enc": nn.TransformerEncoder(layer, 2, enable_nested_tensor=False),
                           "gru": nn.GRU(32, 48), "conv": nn.Conv2d(8, 16, 3)})
    n = gradwell.doctor.reinit(model, "he", "relu")
    ff = model["enc"].layers[0].linear1.weight                  # 256 x 64
    assert _std(ff) == pytest.approx(math.sqrt(2 / 64), rel=0.05)
    conv = model["conv"].weight                                 # fan_in 8*3*3
    assert _std(conv) == pytest.approx(math.sqrt(2 / 72), rel=0.1)
    assert n == 2 * 3 + 1 + 2 + 2       # (linear1, linear2, out_proj) x 2, conv, in_proj x 2, gru
    assert all((p == 0).all() for name, p in model.named_parameters() if "bias" in name)
    gradwell.doctor.reinit(model, "xavier_normal", "tanh")
    assert _std(ff) == pytest.approx(math.sqrt(2 / (64 + 256)), rel=0.05)
    gradwell.doctor.reinit(model, "orthogonal", "relu")
    hh = model["gru"].weight_hh_l0                              # 144 x 48, gain 1 for RNNs
    assert torch.allclose(hh.T @ hh, torch.eye(48), atol=1e-4)
    w = model["enc"].layers[1].linear2.weight                   # 64 x 256, gain sqrt(2)
    assert torch.allclose(w @ w.T, 2 * torch.eye(64), atol=1e-4)
    with pytest.raises(ValueError, match="scheme must be one of"):
        gradwell.doctor.reinit(model, "lsuv", "relu")


def test_mlp_structure_is_read_back_exactly() -> None:
    m = gradwell.nn.MLP(64, 10, depth=5, width=32, activation="tanh", norm="layer",
                        connection="residual")
    args = mlp_args(m)
    assert args == {"n_in": 64, "n_out": 10, "depth": 5, "width": 32, "activation": "tanh",
                    "norm": "layer", "connection": "residual"}
    assert repr(gradwell.nn.MLP(**args)) == repr(m)
    assert mlp_args(nn.Sequential(nn.Linear(2, 2))) is None
