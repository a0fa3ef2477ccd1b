"""A clean run near convergence: the guard with its defaults skips nothing, so the guarded run
is step for step the plain torch run (mini-batch losses near 0 are heavy-tailed: one batch with
a hard example costs 100x the median, and that is no spike)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import gradwell
from guard_helpers import batches, digits, make_model


def _run(make_opt, steps: int, guarded: bool):
    x_all, y_all = digits()
    model = make_model(0)
    opt = make_opt(model.parameters())
    guard = gradwell.guard.Guard(model, opt) if guarded else None
    losses = []
    for idx in batches(steps, batch=32):
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x_all[idx]), y_all[idx])
        loss.backward()
        losses.append(loss.item())
        guard.step(loss) if guard else opt.step()
    return model, guard, losses


@pytest.mark.parametrize("make_opt,steps", [
    (lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9), 1200),
    pytest.param(lambda p: torch.optim.Adam(p, lr=1e-3), 5000, marks=pytest.mark.slow)],
    ids=["sgd", "adam"])
def test_a_clean_run_to_convergence_skips_nothing(make_opt, steps: int) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        plain, _, losses = _run(make_opt, steps, guarded=False)
        guarded, guard, _ = _run(make_opt, steps, guarded=True)
    finally:
        torch.set_num_threads(threads)
    tail = sorted(losses[-500:])
    assert tail[250] < 0.01 and tail[-1] > 5 * tail[250]   # converged, with heavy-tailed batches
    assert [e for e in guard.events if e.action != "trusted"] == []
    for a, b in zip(plain.parameters(), guarded.parameters()):
        assert torch.equal(a, b)
