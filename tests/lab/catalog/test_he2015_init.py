"""he2015-init: the at-init measurement against He et al. 2015's closed forms, the verdict on
synthetic results (it can fail), and the quick version end to end through the CLI."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import gradwell.lab.catalog.he2015_init as he
from gradwell.lab.catalog._at_init import measure, per_layer_factor
from gradwell.lab.store import Store
from gradwell.lab.train import TrialResult
from gradwell.lab.verdict import Results
from gradwell.nn import MLP


def _factors(init: str, seed: int = 0) -> tuple[float, float]:
    torch.manual_seed(seed)
    model = MLP(32, 10, depth=12, width=256, activation="relu", init=init)
    x, y = torch.randn(512, 32), torch.randint(0, 10, (512,))
    stats = measure(model, x, y, nn.CrossEntropyLoss())
    return per_layer_factor(stats["pre_std"]), per_layer_factor(stats["back_std"], backward=True)


@pytest.mark.parametrize("init, expected", [("xavier_normal", 1 / math.sqrt(2)), ("he", 1.0)])
def test_relu_std_per_layer_follows_n_var_w_over_two(init, expected):
    """He 2015 eq. 10 and 14: forward and backward std change by sqrt(n Var[w] / 2) per layer."""
    forward, backward = _factors(init)
    assert forward == pytest.approx(expected, abs=0.03)
    assert backward == pytest.approx(expected, abs=0.03)


def test_torch_default_shrinks_backward_by_one_over_sqrt_six():
    """U(-1/sqrt n, 1/sqrt n): Var[w] = 1/(3n), so the gradient shrinks by sqrt(1/6) per layer."""
    _, backward = _factors("default")
    assert backward == pytest.approx(1 / math.sqrt(6), abs=0.03)


def test_per_layer_factor():
    assert per_layer_factor([1.0, 0.5, 0.25]) == pytest.approx(0.5)
    assert per_layer_factor([0.25, 0.5, 1.0], backward=True) == pytest.approx(0.25 ** 0.5)
    assert per_layer_factor([1.0]) is None and per_layer_factor([0.0, 1.0]) is None


def _store(tmp_path, xavier_acc: float, xavier_factor: float) -> Results:
    """A synthetic run of he2015-init: three seeds per configuration."""
    summaries = {
        "at init · torch default": {"act_factor": 0.94, "act_ratio": 0.2, "grad_rel_median": 1e-9},
        "at init · Xavier": {"act_factor": xavier_factor, "act_ratio": 4e-5,
                             "grad_rel_median": 1e-6},
        "at init · He": {"act_factor": 1.0, "act_ratio": 1.0, "grad_rel_median": 5e-2},
        "trained · torch default": {"final_test_acc": 0.1, "final_train_loss": 2.303},
        "trained · Xavier": {"final_test_acc": xavier_acc, "final_train_loss": 2.303},
        "trained · He": {"final_test_acc": 0.94, "final_train_loss": 0.1},
    }
    store = Store(tmp_path / "lab")
    for trial in he.EXPERIMENT.load().trials():          # stored label and resolved config
        store.save_trial(trial, TrialResult(trial.key, "done", 1.0, dict(summaries[trial.label])))
    return Results(store, "he2015-init")


def test_verdict_holds_on_the_papers_numbers_and_fails_otherwise(tmp_path):
    ok = he.verdict(_store(tmp_path / "a", 0.1, 0.71), quick=False)
    assert len(ok) == 8 and all(c.passed for c in ok)
    trained = {c.claim: c.passed for c in he.verdict(_store(tmp_path / "b", 0.9, 0.71), False)}
    assert not trained["Xavier: training stalls"] and trained["torch default: training stalls"]
    level = {c.claim: c.passed for c in he.verdict(_store(tmp_path / "c", 0.1, 1.0), False)}
    assert not level["Xavier: activation std shrinks by 1/√2 = 0.707 per layer"]
