"""The monitor under FSDP2 and DDP, with and without gradient accumulation (items 3 and 5)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

import gradwell

import harness

#: mode -> (wrapping, driver, micro-batches per step)
MODES = {
    "fsdp-gradwell": ("fsdp", "hooks", 1),   # gradwell Adam clips: the monitor re-uses its norms
    "fsdp-torch": ("fsdp", "manual", 1),     # torch SGD, mon.step(): the monitor's own norms
    "fsdp-accum": ("fsdp", "hooks", 2),      # set_requires_gradient_sync(False) micro-steps
    "ddp-accum": ("ddp", "hooks", 2),        # DDP no_sync() micro-steps
}


def saturating_model() -> nn.Module:
    """The harness model with a first layer large enough to saturate its tanh (a finding)."""
    model = harness.make_model()
    with torch.no_grad():
        model[0].weight.mul_(30.0)
    return model


def wrap(model: nn.Module, how: str, world: int) -> nn.Module:
    if world == 1:
        return model
    if how == "fsdp":
        return harness.shard(model)
    return nn.parallel.DistributedDataParallel(model)


def _sync(model: nn.Module, on: bool) -> Any:
    """A context in which this micro-step's backward does (not) synchronise gradients."""
    import contextlib
    if isinstance(model, nn.parallel.DistributedDataParallel):
        return contextlib.nullcontext() if on else model.no_sync()
    if hasattr(model, "set_requires_gradient_sync"):
        model.set_requires_gradient_sync(on)
    return contextlib.nullcontext()


def run(mode: str, rank: int, world: int, log: str | None) -> dict[str, Any]:
    """Train ``harness.STEPS`` steps watched; the records and findings of this rank."""
    how, driver, micro = MODES[mode]
    model = wrap(saturating_model(), how, world)
    if driver == "hooks":
        opt = gradwell.optim.Adam(model.parameters(), lr=0.01, clip=gradwell.clip.GlobalNorm(0.5),
                                  skip_nonfinite=True)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    mon = gradwell.watch(model, optimizer=opt if driver == "hooks" else None, update_every=1,
                         log=log)
    x, y = harness.data()
    for s in range(harness.STEPS):
        opt.zero_grad()
        total = torch.zeros((), dtype=torch.float64)
        for k in range(micro):
            xs, ys = (harness.part(t[s], rank, world) for t in (x, y))
            xs, ys = harness.part(xs, k, micro), harness.part(ys, k, micro)
            with _sync(model, k == micro - 1):
                loss = nn.functional.mse_loss(model(xs), ys) / micro
                loss.backward()
            total += loss.detach()
        mon.step(total)
        opt.step()
    records = list(mon.history.records())
    findings = [(f.kind, f.layer, f.step, f.severity) for f in mon.findings()]
    mon.close()
    return {"records": records, "findings": findings}
