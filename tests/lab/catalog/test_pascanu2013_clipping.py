"""``pascanu2013-clipping``: the lag measurement against its closed form, the spike statistic,
and the quick version end to end through the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import gradwell.lab.catalog.pascanu2013_clipping as exp
from gradwell.nn import RecurrentNet


@pytest.mark.parametrize("gain", [0.5, 0.9, 1.3])
def test_lag_norms_follow_gain_to_the_k_in_the_linear_regime(gain):
    # zero inputs and biases keep h = 0, so tanh' = 1 and every Jacobian is gain * orthogonal:
    # ||dL/dh_{T-k}|| = gain^k ||dL/dh_T|| exactly
    torch.manual_seed(0)
    model = RecurrentNet("rnn", 2, 1, 16, recurrent_gain=gain)
    with torch.no_grad():
        model.rnn.bias_ih_l0.zero_()
        model.rnn.bias_hh_l0.zero_()
    x, y = torch.zeros(8, 30, 2), torch.ones(8, 1)
    norms = exp.lag_gradient_norms(model, x, y)
    ratios = (norms / norms[0]).numpy()
    np.testing.assert_allclose(ratios, gain ** np.arange(30), rtol=1e-4)
    slope, r2 = exp.fit_decay(ratios)
    assert slope == pytest.approx(np.log10(gain), rel=1e-4) and r2 == pytest.approx(1.0)


def test_lag_norms_never_decay_slower_than_the_singular_value_bound():
    torch.manual_seed(1)
    model = RecurrentNet("rnn", 2, 1, 32, recurrent_gain=0.8)
    x = torch.rand(16, 40, 2)
    ratios = (exp.lag_gradient_norms(model, x, torch.ones(16, 1)) / 1.0).numpy()
    ratios = ratios / ratios[0]
    assert np.all(ratios <= 0.8 ** np.arange(40) * (1 + 1e-5))   # |tanh'| <= 1


def test_lag_norms_reject_gated_cells():
    with pytest.raises(ValueError, match="tanh RNN"):
        exp.lag_gradient_norms(RecurrentNet("gru", 2, 1, 4), torch.zeros(1, 3, 2),
                               torch.zeros(1, 1))


def test_spike_ratio():
    norms = [(s, 1.0) for s in range(1, 20)] + [(20, 500.0), (21, None), (22, float("nan"))]
    assert exp.spike_ratio(norms) == pytest.approx(500.0)
    assert exp.spike_ratio(norms, from_step=21) is None
    assert exp.spike_ratio([(s, 2.0) for s in range(1, 10)]) == pytest.approx(1.0)
