"""Trial kind ``transformer_train`` and the ``copy`` token task: the pieces against their
formulas, and one short trial end to end."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gradwell.lab.catalog import _transformer as kind
from gradwell.lab.data import copy, copy_problem
from gradwell.lab.spec import parse_spec
from gradwell.nn import TinyTransformer


def test_copy_problem_repeats_the_first_half_and_shifts_targets():
    x, y = copy_problem(50, 4, 7, np.random.default_rng(0))
    assert x.shape == y.shape == (50, 7) and x.dtype == torch.int64
    seq = torch.cat([x, y[:, -1:]], dim=1)
    torch.testing.assert_close(seq[:, :4], seq[:, 4:])
    torch.testing.assert_close(x[:, 1:], y[:, :-1])
    d = copy(4, 7, 20, 10)
    assert d.task == "classification" and d.n_out == 7 and d.shape == (7,)
    with pytest.raises(ValueError, match="half"):
        copy_problem(2, 1, 7, np.random.default_rng(0))


def test_z_loss_is_the_mean_squared_log_normaliser():
    logits = torch.randn(3, 5, 4, dtype=torch.float64)
    ref = np.mean([math.log(sum(math.exp(v) for v in logits[b, :, t].tolist())) ** 2
                   for b in range(3) for t in range(4)])
    assert kind.z_loss(logits).item() == pytest.approx(ref, rel=1e-6)
    log_z = [math.log(sum(math.exp(v) for v in logits[b, :, t].tolist()))
             for b in range(3) for t in range(4)]
    assert kind.log_normaliser(logits).flatten().tolist() == pytest.approx(log_z, rel=1e-6)
    # normalised log-probabilities have log Z = 0
    assert kind.log_normaliser(logits.log_softmax(1)).abs().max().item() < 1e-6


def test_warmup_factor_is_linear_then_flat():
    f = kind.warmup_factor(4)
    assert [f(s) for s in (1, 2, 4, 9)] == [0.25, 0.5, 1.0, 1.0]
    assert kind.warmup_factor(0)(1) == 1.0


def test_init_ff_grad_norms_match_autograd_on_the_weights():
    torch.manual_seed(0)
    model = TinyTransformer(6, 5, d_model=8, heads=2, layers=3, norm="post")
    x, y = torch.randint(0, 6, (4, 5)), torch.randint(0, 6, (4, 5))
    norms = kind.init_ff_grad_norms(model, x, y)
    loss = torch.nn.functional.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, [b.ff2.weight for b in model.blocks])
    assert norms == pytest.approx([g.norm().item() for g in grads], rel=1e-6)
    assert all(p.grad is None for p in model.parameters())


def test_a_short_trial_records_logits_and_init_gradients():
    spec = parse_spec({"name": "t", "base": {
        "kind": "transformer_train", "data": "copy", "seq_len": 4, "vocab": 6, "n_train": 64,
        "n_test": 16, "d_model": 8, "heads": 2, "layers": 2, "norm_position": "post",
        "optimizer": "adam", "lr": 0.01, "batch_size": 16, "warmup": 3, "z_loss": 1e-4},
        "budget": {"steps": 6}, "record": {"eval_every": 3, "grad_every": 2}})
    result = kind.transformer_trial(spec.trials()[0])
    assert result.status == "done", result.error
    steps = [s for s, _, name, _ in result.metrics if name == "max_attn_logit"]
    assert steps == [1, 3, 5]
    assert len(result.summary["init_ff_grad"]) == 2 and result.summary["max_out_logit"] > 0
    log_z = [abs(v) for _, _, name, v in result.metrics if name == "mean_log_z"]
    assert len(log_z) == 3 and result.summary["final_abs_log_z"] == log_z[-1]
    assert result.summary["max_abs_log_z"] == max(log_z)
    acc = [v for _, _, name, v in result.metrics if name == "train_acc"]
    assert all(0.0 <= v <= 1.0 for v in acc)            # per token, not per sequence
