"""The monitor's nonfinite finding and the guard's events point to locate (and carry the origin)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

import gradwell


def _run(replay: bool) -> list:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = gradwell.watch(model, activations=False, updates=False)
    guard = gradwell.guard.Guard(model, opt, monitor=mon, spike_z=None)
    for step in range(6):
        x, y = torch.randn(16, 8), torch.randint(0, 3, (16,))
        if step == 3:
            x[2, 1] = float("nan")
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        mon.step()
        guard.step(loss, replay=(lambda x=x, y=y: F.cross_entropy(model(x), y)) if replay else None)
    findings = [f for f in mon.findings() if f.kind == "nonfinite"]
    mon.close()
    return findings + [f for f in guard.findings() if f.kind == "nonfinite"]


def test_without_a_replay_the_findings_point_to_locate() -> None:
    mon_finding, guard_finding = _run(replay=False)
    assert any("gradwell.locate(model)" in r for r in mon_finding.remedies)
    assert any("gradwell.locate(model)" in r for r in guard_finding.remedies)


def test_with_a_replay_the_findings_carry_the_origin() -> None:
    mon_finding, guard_finding = _run(replay=True)
    for f in (mon_finding, guard_finding):
        assert f.step == 3 and "replay" in f.evidence["summary"]
        assert "NaN was already in the model's input[0]" in f.evidence["summary"]
        assert f.remedies[0].startswith("the batch itself holds NaN/Inf")
    assert mon_finding.evidence["triage"] == "data"
