"""The ``divergence`` finding on real training runs, judged against torch-only evidence."""

from __future__ import annotations

import math

import torch
from torch import nn

import gradwell


def _train(model: nn.Module, lr: float, steps: int, spike_at: int | None = None
           ) -> tuple[gradwell.watch.Monitor, list[float], list[float]]:
    """Plain SGD on a fixed batch under the monitor; the losses and torch's own total gradient
    norms per step (the logits of step ``spike_at`` are scaled by 30: one bad batch)."""
    x, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    mon = gradwell.watch(model)
    losses, grads = [], []
    for step in range(steps):
        scale = 30.0 if step == spike_at else 1.0
        loss = nn.functional.cross_entropy(model(x) * scale, y)
        opt.zero_grad()
        loss.backward()
        grads.append(float(torch.sqrt(sum(p.grad.square().sum() for p in model.parameters()))))
        losses.append(loss.item())
        mon.step(loss)
        opt.step()
    mon.close()
    return mon, losses, grads


def test_a_run_that_explodes_and_dies_at_chance_loss_has_diverged_not_recovered():
    """SGD at lr 20 on a ReLU MLP: the loss climbs by 12 orders of magnitude, then every ReLU is
    dead, every gradient is exactly 0 and the loss sits at ln(3), chance for 3 classes, below
    3x its running minimum. That is a dead model, not a recovery: the finding is an error
    from the step where the loss first passed 3x its running minimum."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                          nn.Linear(32, 3, bias=False))
    mon, losses, grads = _train(model, 20.0, 12)
    # torch-only evidence: an excursion far above the start, then a dead model at chance loss
    first_high = next(i for i in range(1, len(losses)) if losses[i] > 3 * min(losses[:i]))
    assert max(losses) > 1e9 * losses[0]
    assert grads[-3:] == [0.0, 0.0, 0.0] and any(g > 0 for g in grads)
    assert math.isclose(losses[-1], math.log(3), rel_tol=1e-6)
    (f,) = [f for f in mon.findings() if f.kind == "divergence"]
    assert f.severity == "error" and f.evidence["died"] is True
    assert f.evidence["loss_step"] <= first_high
    assert "every gradient then became exactly 0" in f.message


def test_a_loss_excursion_that_training_recovers_from_is_not_divergence():
    """The same rule does not fire when the loss comes back with gradients still flowing."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 3))
    mon, losses, grads = _train(model, 0.5, 40, spike_at=5)     # one bad batch: a loss spike
    assert losses[5] > 3 * min(losses[:5]) and losses[-1] < losses[0]   # torch: it recovered
    assert min(grads[-3:]) > 0
    assert [f for f in mon.findings() if f.kind == "divergence" and f.severity != "info"] == []
