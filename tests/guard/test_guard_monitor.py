"""A step the guard refuses is not recorded by a ``watch(model, optimizer=opt)`` monitor.

In optimizer mode the monitor records at the optimizer's step, which a refused step never
reaches: its output sums were added to the next step's and read as a non-finite healthy step.
The model is Hugging Face GPT-2 from a config (tests/models_zoo.py); the fault makes the first
block's MLP input projection output NaN on one step, and torch's own statistics of the next step are the reference.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import gradwell
from models_zoo import ZOO

BAD = 3
SITE = "transformer.h.0.mlp.c_fc"


def _faulty_gpt2() -> tuple:
    """GPT-2 (the zoo's), its AdamW, the step counter the fault reads and torch's mean of
    ``SITE``'s output per step (of the step's own forward, not of a replay); the fault makes
    that output NaN on step ``BAD``. Its hook comes before the monitor's."""
    arch = ZOO["gpt2"]
    model = arch.build()
    opt = torch.optim.AdamW(model.parameters(), lr=arch.lr)
    step, seen = [0], {}

    def fault(module, args, out):                 # the planted fault, and torch's evidence
        if step[0] == BAD:
            out = out * math.nan
        seen.setdefault(step[0], out.detach().double().mean().item())
        return out
    model.get_submodule(SITE).register_forward_hook(fault)
    return model, opt, step, seen


@pytest.mark.parametrize("optimizer_mode", [True, False])
def test_a_refused_step_is_not_mixed_into_the_next_one(optimizer_mode: bool) -> None:
    arch, (model, opt, step, seen) = ZOO["gpt2"], _faulty_gpt2()
    mon = gradwell.watch(model, optimizer=opt if optimizer_mode else None)
    guard = gradwell.guard.Guard(model, opt, monitor=mon, spike_z=None)
    statuses = []
    for step[0] in range(6):
        loss = arch.loss(model, arch.batch(step[0]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        mon.step(loss)
        statuses.append(guard.step(loss))
    mon.close()
    assert statuses == ["ok"] * BAD + ["skipped"] + ["ok"] * (5 - BAD)
    assert math.isnan(seen[BAD]) and all(math.isfinite(seen[s]) for s in seen if s != BAD)
    steps, names, means = mon.history.series("out_mean")
    rows = dict(zip(steps.tolist(), means[:, names.index(SITE)]))
    if optimizer_mode:          # the refused step has no record; the next is its own
        assert sorted(rows) == [0, 1, 2, 4, 5]
        assert mon.history.first_nonfinite() is None
        assert not [f for f in mon.findings() if f.kind == "nonfinite"]
    else:                        # each mon.step() records its step, the refused one too
        assert sorted(rows) == list(range(6)) and math.isnan(rows[BAD])
        assert mon.history.first_nonfinite()["step"] == BAD
    for s in (0, 1, 2, 4, 5):
        np.testing.assert_allclose(rows[s], seen[s], rtol=1e-5)
    assert [f.kind for f in guard.findings()] == ["nonfinite"]
    assert [e["step"] for e in mon.history.events if e["kind"] == "guard"] == [BAD]


def test_a_guard_whose_monitor_was_closed_still_refuses_the_step() -> None:
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = gradwell.watch(model, optimizer=opt)
    guard = gradwell.guard.Guard(model, opt, monitor=mon, spike_z=None)
    mon.close()
    loss = model(torch.full((2, 4), math.nan)).sum()
    loss.backward()
    assert guard.step(loss) == "skipped"
    assert [e["action"] for e in mon.history.events] == ["skipped"]
    assert all(torch.isfinite(p).all() for p in model.parameters())       # nothing applied


def _lm_loss(out, target):
    logits = out.logits[:, :-1]
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                             target[:, 1:].reshape(-1))


@pytest.mark.parametrize("optimizer_mode", [True, False])
@pytest.mark.parametrize("kind", ["lambda", "batch"])
def test_a_replayed_step_leaves_the_watched_statistics_alone(optimizer_mode: bool,
                                                             kind: str) -> None:
    """The replay's forwards (and the per-sample ``vmap``) ran through the monitor's hooks:
    without ``optimizer=`` the step after the refused one recorded the replay's NaN sums, and
    with a ``Batch`` the vmapped forward left batched tensors in the monitor's statistics, so
    the per-sample loop that followed raised and the run stopped (Hugging Face GPT-2)."""
    arch, (model, opt, step, seen) = ZOO["gpt2"], _faulty_gpt2()
    mon = gradwell.watch(model, optimizer=opt if optimizer_mode else None)
    guard = gradwell.guard.Guard(model, opt, monitor=mon, spike_z=None)
    statuses = []
    for step[0] in range(6):
        x = arch.batch(step[0])["input_ids"]
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        mon.step(loss)
        replay = (gradwell.guard.Batch(x, x, _lm_loss) if kind == "batch"
                  else lambda x=x: model(input_ids=x, labels=x).loss)
        statuses.append(guard.step(loss, replay=replay))
    mon.close()
    assert statuses == ["ok"] * BAD + ["skipped"] + ["ok"] * (5 - BAD)
    assert guard.events[-1].detail["triage"] == "reproducible"
    steps, names, means = mon.history.series("out_mean")
    rows = dict(zip(steps.tolist(), means[:, names.index(SITE)]))
    for s in (0, 1, 2, 4, 5):
        np.testing.assert_allclose(rows[s], seen[s], rtol=1e-5)
    assert not [f for f in mon.findings() if f.kind == "nonfinite" and f.step != BAD]
