"""``bengio1994-long-term``: the latching data, the gradient by lag against central finite
differences, the spec, and the verdict on synthetic results (it can fail)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import gradwell.lab.catalog.bengio1994_long_term as exp
from gradwell.lab.data import latch, latch_problem
from gradwell.lab.store import Store
from gradwell.lab.train import TrialResult
from gradwell.lab.verdict import Results
from gradwell.nn import RecurrentNet


def test_latch_problem_keeps_the_bit_at_the_first_step_only():
    x, y = latch_problem(4000, 12, 0.5, np.random.default_rng(0))
    assert x.shape == (4000, 12, 2) and y.shape == (4000, 1)
    assert torch.equal(x[:, 0, 0:1], y) and set(y.flatten().tolist()) == {-1.0, 1.0}
    assert torch.equal(x[:, :, 1].sum(1), torch.ones(4000)) and torch.all(x[:, 0, 1] == 1)
    assert x[:, 1:, 0].std().item() == pytest.approx(0.5, rel=0.02)
    assert abs(x[:, 1:, 0].mean().item()) < 0.01
    d = latch(12, 100, 50, 0.5)
    assert d.task == "regression" and d.n_in == 2 and len(d.y_test) == 50
    with pytest.raises(ValueError, match="noise"):
        latch_problem(2, 5, -1.0, np.random.default_rng(0))


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_input_gradient_by_lag_matches_finite_differences(cell):
    torch.manual_seed(0)
    model = RecurrentNet(cell, 2, 1, 5).double()
    x, y = latch_problem(3, 6, 0.5, np.random.default_rng(1))
    x, y = x.double(), y.double()
    g = exp.input_gradient_by_lag(model, x, y)

    def loss(z):
        with torch.no_grad():
            return ((model(z) - y) ** 2).sum().item()

    eps, fd = 1e-6, torch.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        up, down = x.clone(), x.clone()
        up[idx] += eps
        down[idx] -= eps
        fd[idx] = (loss(up) - loss(down)) / (2 * eps)
    expected = fd.norm(dim=2).mean(dim=0).flip(0)        # lag 0 = the last step
    torch.testing.assert_close(g, expected, rtol=1e-5, atol=1e-9)


def test_spec_expands_to_two_models_three_lengths_three_seeds():
    trials = exp.EXPERIMENT.load().trials()
    assert len(trials) == 18 and all(t.function.endswith(":latch_trial") for t in trials)
    assert {t.config["seq_len"] for t in trials} == {5, 20, 50}
    assert {t.config["seq_len"] for t in exp.EXPERIMENT.load().trials(quick=True)} == {5, 20}
    assert {t.config.get("forget_bias") for t in trials if t.config["model"] == "lstm"} == {3.0}


def _results(tmp_path, rows: dict[str, tuple[list[float], float, float, float]]) -> Results:
    """label -> (test MSE per seed, lag slope, lag R^2, lag ratio at init)."""
    store = Store(tmp_path / "lab")
    for t in exp.EXPERIMENT.load().trials():        # stored label and resolved config
        if t.label in rows:
            mses, slope, r2, ratio = rows[t.label]
            store.save_trial(t, TrialResult(t.key, "done", 1.0, {
                "final_test_loss": mses[t.config["seed"]], "lag_slope_init": slope,
                "lag_r2_init": r2, "lag_ratio_init": ratio}))
    return Results(store, exp.EXPERIMENT.name)


def test_verdict_passes_on_the_paper_result_and_fails_without_it(tmp_path):
    ok = _results(tmp_path / "a", {
        "tanh RNN · seq_len=5": ([1e-4, 1e-3, 0.5], -0.3, 0.9, 0.05),
        "tanh RNN · seq_len=50": ([1.0, 1e-4, 0.99], -0.25, 0.99, 1e-12),
        "LSTM · seq_len=50": ([0.03, 1e-4, 1.0], 0.0, 0.5, 0.12)})
    assert all(c.passed for c in exp.verdict(ok, False))
    bad = _results(tmp_path / "b", {
        "tanh RNN · seq_len=5": ([0.9] * 3, -0.3, 0.9, 0.05),
        "tanh RNN · seq_len=50": ([1e-3] * 3, -0.05, 0.5, 0.1),
        "LSTM · seq_len=50": ([1.0] * 3, -0.2, 0.99, 1e-8)})
    assert [c.passed for c in exp.verdict(bad, False)] == [False] * 5
