"""Structural remedies beyond the MLP: gradwell.nn's CNN (and ResNet) and RecurrentNet are read
back into exactly the arguments that built them, and rebuilt with the classic fixes (batch norm,
residual connections, ReLU + He for CNNs: He et al. 2015/2016, Ioffe & Szegedy 2015; gated
cells for a tanh RNN: Hochreiter & Schmidhuber 1997, Cho et al. 2014)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import gradwell
from gradwell.doctor.structure import cnn_args, rnn_args, structural_candidates


@pytest.mark.parametrize("kwargs", [
    {"channels": 8, "stages": 3, "blocks": 2, "activation": "sigmoid", "norm": "none"},
    {"channels": 4, "stages": 1, "blocks": 3, "activation": "tanh", "norm": "layer",
     "connection": "residual"},
    {"channels": 6, "stages": 2, "blocks": 1, "activation": "relu", "norm": "batch"},
])
def test_cnn_is_read_back_exactly(kwargs) -> None:
    m = gradwell.nn.CNN((1, 8, 8), 10, **kwargs)
    args = cnn_args(m)
    assert args == {"input_shape": (1, 8, 8), "n_out": 10, "connection": "plain", **kwargs}
    assert repr(gradwell.nn.CNN(**args)) == repr(m)
    assert cnn_args(gradwell.nn.ResNet((1, 8, 8), 10, channels=4))["connection"] == "residual"


def test_cnn_candidates_rebuild_with_batch_norm_residual_and_relu() -> None:
    m = gradwell.nn.CNN((1, 8, 8), 10, channels=4, activation="sigmoid", norm="none")
    cands = {c.name: c for c in structural_candidates(m, "vanishing")}
    assert list(cands) == ["structure: batch norm", "structure: residual connections",
                           "structure: ReLU + He init"]
    bn = cands["structure: batch norm"].model()
    assert sum(isinstance(x, nn.BatchNorm2d) for x in bn.modules()) == 4
    res = cands["structure: residual connections"].model()
    x = torch.randn(2, 64)
    assert res(x).shape == (2, 10) and any(b.residual for b in res.features[1:])
    relu = cands["structure: ReLU + He init"].model()
    assert sum(isinstance(x, nn.ReLU) for x in relu.modules()) == 4
    assert sum(isinstance(x, nn.Sigmoid) for x in relu.modules()) == 0
    assert structural_candidates(gradwell.nn.ResNet((1, 8, 8), 10), "vanishing") == []


@pytest.mark.parametrize("cell, gain", [("rnn", 0.5), ("gru", None), ("lstm", 1.5)])
def test_recurrent_net_is_read_back_exactly(cell, gain) -> None:
    torch.manual_seed(0)
    m = gradwell.nn.RecurrentNet(cell, 2, 1, hidden=12, layers=2, recurrent_gain=gain)
    args = rnn_args(m)
    assert args == {"cell": cell, "n_in": 2, "n_out": 1, "hidden": 12, "layers": 2,
                    "recurrent_gain": gain}
    torch.manual_seed(0)
    again = gradwell.nn.RecurrentNet(**args)
    assert repr(again) == repr(m)
    assert all(torch.equal(a, b) for a, b in zip(again.parameters(), m.parameters()))


def test_a_tanh_rnn_gets_gated_cells_a_gated_one_nothing() -> None:
    m = gradwell.nn.RecurrentNet("rnn", 2, 1, hidden=16, recurrent_gain=0.9)
    cands = structural_candidates(m, "vanishing")
    assert [c.name for c in cands] == ["structure: GRU cells", "structure: LSTM cells"]
    gru, lstm = (c.model() for c in cands)
    assert isinstance(gru.rnn, nn.GRU) and isinstance(lstm.rnn, nn.LSTM)
    assert gru.rnn.hidden_size == 16 and gru.recurrent_gain == 0.9
    hh = gru.rnn.weight_hh_l0[:16]                      # one gate block: orthogonal x 0.9
    assert torch.allclose(hh @ hh.T, 0.81 * torch.eye(16), atol=1e-5)
    assert gru(torch.randn(3, 7, 2)).shape == (3, 1)
    assert structural_candidates(gradwell.nn.RecurrentNet("gru", 2, 1), "vanishing") == []
    assert rnn_args(nn.RNN(2, 4)) is None and cnn_args(nn.Conv2d(1, 1, 3)) is None
