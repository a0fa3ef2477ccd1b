"""glorot2010: the at-init gradient measurement against Glorot & Bengio's closed form, the
activation-mean extraction, the verdict on synthetic results (it can fail), and the quick
version end to end through the CLI."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import gradwell.lab.catalog.glorot2010 as gl
from gradwell.lab.catalog._at_init import measure, per_layer_factor
from gradwell.lab.store import Store
from gradwell.lab.train import TrialResult
from gradwell.lab.verdict import Results
from gradwell.nn import MLP


@pytest.mark.parametrize("init, expected", [("default", 1 / math.sqrt(3)),
                                            ("xavier_uniform", 1.0)])
def test_tanh_gradient_std_per_layer_is_sqrt_n_var_w(init, expected):
    """Glorot 2010 eq. 6-7 in tanh's linear regime: dC/ds shrinks by sqrt(n Var[W]) per layer:
    1/sqrt 3 under U(-1/sqrt n, 1/sqrt n), 1 under the normalised init."""
    torch.manual_seed(0)
    model = MLP(32, 10, depth=8, width=256, activation="tanh", init=init)
    x, y = 0.05 * torch.randn(512, 32), torch.randint(0, 10, (512,))
    stats = measure(model, x, y, nn.CrossEntropyLoss())
    assert per_layer_factor(stats["back_std"], backward=True) == pytest.approx(expected, abs=0.04)


def test_act_means_reads_the_activation_modules_by_name():
    rows = [(1, 0, "blocks.0.linear", "out_mean", 9.0), (1, 5, "blocks.1.act", "out_mean", 0.2),
            (1, 4, "blocks.0.act", "out_mean", 0.5), (11, 4, "blocks.0.act", "out_mean", 0.6),
            (11, 5, "blocks.1.act", "out_mean", 0.1), (11, 5, "blocks.1.act", "out_std", 7.0)]
    result = TrialResult("k", "done", 0.0, layer_stats=rows)
    assert gl.act_means(result) == ([1, 11], [[0.5, 0.2], [0.6, 0.1]])
    summary = {"act_mean_steps": [1, 101, 201, 301], "act_means": [[1], [2], [3], [4]]}
    assert gl.early_means(summary, 200) == [3] and gl.early_means(summary, 999) == [4]


def _results(tmp_path, top: float, tanh_back: float, sigmoid_acc: float) -> Results:
    """A synthetic run of glorot2010, three seeds per configuration."""
    means = {"act_mean_steps": [1, 201], "act_means": [[0.5] * 5, [0.5, 0.5, 0.55, 0.7, top]]}
    summaries = {
        "at init · sigmoid": {"back_factor": 0.14},
        "at init · tanh": {"back_factor": tanh_back},
        "at init · tanh normalised": {"back_factor": 0.93},
        "sigmoid · lr 0.5": {"final_test_acc": sigmoid_acc, **means},
        "sigmoid · lr 0.05": {"final_test_acc": 0.1},
        "tanh · lr 0.5": {"final_test_acc": 0.1},
        "tanh · lr 0.05": {"final_test_acc": 0.95},
        "tanh normalised · lr 0.5": {"final_test_acc": 0.1},
        "tanh normalised · lr 0.05": {"final_test_acc": 0.96},
    }
    store = Store(tmp_path / "lab")
    for trial in gl.EXPERIMENT.load().trials():          # stored label and resolved config
        store.save_trial(trial, TrialResult(trial.key, "done", 1.0, dict(summaries[trial.label])))
    return Results(store, "glorot2010")


def test_verdict_holds_on_the_papers_numbers_and_fails_otherwise(tmp_path):
    ok = gl.verdict(_results(tmp_path / "a", 0.03, 0.57, 0.1), quick=False)
    assert len(ok) == 5 and all(c.passed for c in ok)
    bad = gl.verdict(_results(tmp_path / "b", 0.4, 0.95, 0.9), quick=False)
    assert [c.passed for c in bad] == [False, True, False, True, False]
