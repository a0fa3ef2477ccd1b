"""Guard.check: the judgement of Guard.step for loops that apply the step themselves."""

from __future__ import annotations

import copy

import torch
from torch import nn

from gradwell.guard import Guard

OPTS = {"max_bad_steps": 2, "snapshot_every": 3, "trust_after": 2, "spike_z": 4.0,
        "spike_warmup": 5}


def _data() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    out = []
    for i in range(40):
        x = torch.randn(16, 5, generator=g)
        y = x.sum(1, keepdim=True)
        if i in (12, 25, 26):
            x[0, 0] = float("nan")           # 25, 26: two in a row -> rollback
        if i == 18:
            y = y * 1e3                      # a loss and gradient spike
        out.append((x, y))
    return out


def _run(check: bool, with_loss: bool = True) -> tuple[nn.Module, torch.optim.Optimizer, Guard,
                                                      list[str]]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 1))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 / (1 + 0.1 * s))
    guard = Guard(net, opt, scheduler=sched, **OPTS)
    statuses = []
    for x, y in _data():
        opt.zero_grad()
        loss = nn.functional.mse_loss(net(x), y)
        loss.backward()
        if not check:
            statuses.append(guard.step(loss))
            continue
        status = guard.check(loss if with_loss else None)
        if status == "ok":
            opt.step()
            sched.step()
        statuses.append(status)
    return net, opt, guard, statuses


def test_check_then_step_is_exactly_guard_step():
    """Same statuses, events, parameters, optimizer state and schedule, rollback included;
    torch's own optimizer and scheduler apply the good steps."""
    a, opt_a, guard_a, st_a = _run(check=False)
    b, opt_b, guard_b, st_b = _run(check=True)
    assert st_a == st_b and "rolled_back" in st_a and st_a.count("skipped") >= 2
    assert [(e.step, e.action, e.reason) for e in guard_a.events] == \
        [(e.step, e.action, e.reason) for e in guard_b.events]
    assert any(e.reason == "grad_spike" or e.reason == "loss_spike" for e in guard_b.events)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    sa, sb = opt_a.state_dict(), opt_b.state_dict()
    for k in sa["state"]:
        for key in sa["state"][k]:
            assert torch.equal(sa["state"][k][key], sb["state"][k][key])
    assert sa["param_groups"][0]["lr"] == sb["param_groups"][0]["lr"]
    assert guard_a.scheduler.state_dict() == guard_b.scheduler.state_dict()


def test_check_without_a_loss_judges_the_gradients_only():
    """loss=None: NaN gradients are still skipped (reason nonfinite_grad), no loss is faked."""
    _, _, guard, statuses = _run(check=True, with_loss=False)
    first = next(e for e in guard.events if e.action == "skipped")
    assert statuses[12] == "skipped" and first.step == 12
    assert first.reason == "nonfinite_grad" and first.loss != first.loss   # NaN: not given
