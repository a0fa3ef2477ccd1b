"""Issue 10, item 5: composition like optax. Each transformation in a chain owns its
hyperparameters and its state; a name used twice is qualified by the element's position.

References are torch.optim steps plus the extra term written out by hand, or the formulas
written out with plain tensor ops, in float64.
"""

from __future__ import annotations

import pytest
import torch

import gradwell
from optim_harness import loss_at, twin_models

O = gradwell.optim


def steps(model, opt, n=8, after=None):
    for k in range(n):
        opt.zero_grad()
        loss_at(model, k).backward()
        before = [p.detach().clone() for p in model.parameters()]
        opt.step()
        if after is not None:
            after(model, before)


def test_same_transformation_twice_with_different_values() -> None:
    """chain(add_decayed_weights(1e-4), scale_by_adam(), add_decayed_weights(1e-2)) is
    torch's Adam(weight_decay=1e-4) plus a decoupled decay lr * 1e-2 * p (AdamW's term)."""
    ref, mine = twin_models()
    lr = 0.01
    opt = O.Optimizer(mine.parameters(), O.chain(
        O.add_decayed_weights(1e-4), O.scale_by_adam(), O.add_decayed_weights(1e-2)), lr=lr)
    group = opt.param_groups[0]
    assert group["weight_decay@0"] == 1e-4 and group["weight_decay@2"] == 1e-2
    assert "weight_decay" not in group

    def decoupled(model, before):
        with torch.no_grad():
            for p, b in zip(model.parameters(), before):
                if p.grad is not None:  # optimizers leave parameters without gradient alone
                    p.sub_(lr * 1e-2 * b)
    ref_opt = torch.optim.Adam(ref.parameters(), lr=lr, weight_decay=1e-4, foreach=False)
    steps(ref, ref_opt, after=decoupled)
    steps(mine, opt)
    for p, q in zip(ref.parameters(), mine.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-10, atol=1e-12)


def test_qualified_hyperparameter_per_group_override_and_ambiguity() -> None:
    ref, mine = twin_models()
    make = lambda: O.chain(O.add_decayed_weights(0.0), O.scale_by_adam(), O.add_decayed_weights())
    with pytest.raises(TypeError) as exc:
        O.Optimizer(mine.parameters(), make(), lr=0.01, weight_decay=0.1)
    assert "weight_decay@0" in str(exc.value) and "weight_decay@2" in str(exc.value)
    # per group: decoupled decay 0.5 on fc1 (torch's AdamW), off for the rest (torch's Adam)
    opt = O.Optimizer([{"params": mine.fc1.parameters(), "weight_decay@2": 0.5},
                       {"params": [mine.gain, mine.extra, *mine.fc2.parameters()]}],
                      make(), lr=0.01, **{"weight_decay@2": 0.0})
    assert [g["weight_decay@2"] for g in opt.param_groups] == [0.5, 0.0]
    steps(mine, opt)
    ref_opt = torch.optim.AdamW([{"params": ref.fc1.parameters(), "weight_decay": 0.5},
                                 {"params": [ref.gain, ref.extra, *ref.fc2.parameters()],
                                  "weight_decay": 0.0}], lr=0.01, foreach=False)
    steps(ref, ref_opt)
    for p, q in zip(ref.parameters(), mine.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="weight_decay"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2))],
                             "weight_decay@2": -1.0})


def test_two_transformations_with_an_eps_and_a_step_each() -> None:
    """chain(scale_by_rms(eps=1e-6), scale_by_adam(eps=1e-8)) against the two formulas."""
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(6, dtype=torch.float64))
    opt = O.Optimizer([p], O.chain(O.scale_by_rms(alpha=0.9, eps=1e-6),
                                   O.scale_by_adam(eps=1e-8)), lr=0.1)
    assert opt.param_groups[0]["eps@0"] == 1e-6 and opt.param_groups[0]["eps@1"] == 1e-8
    theta = p.detach().clone()
    v, m, s = (torch.zeros(6, dtype=torch.float64) for _ in range(3))
    for t in range(1, 8):
        g = torch.sin(3.0 * t + torch.arange(6.0, dtype=torch.float64))
        p.grad = g.clone()
        opt.step()
        v = 0.9 * v + 0.1 * g * g
        r = g / (v.sqrt() + 1e-6)
        m = 0.9 * m + 0.1 * r
        s = 0.999 * s + 0.001 * r * r
        theta = theta - 0.1 * (m / (1 - 0.9 ** t)) / ((s / (1 - 0.999 ** t)).sqrt() + 1e-8)
        torch.testing.assert_close(p.detach(), theta, rtol=1e-10, atol=1e-12)
    assert set(opt.state[p]) == {"step@0", "square_avg", "step@1", "exp_avg", "exp_avg_sq"}
    assert float(opt.state[p]["step@0"]) == float(opt.state[p]["step@1"]) == 7
