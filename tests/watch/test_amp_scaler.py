"""The monitor under float16 autocast with a torch.amp.GradScaler (``watch(..., scaler=)``).

Reference: the gradients torch holds, divided by the scale the scaler reports, read in the test
before ``scaler.step``; overflow steps are the steps where the scaler itself backed off (its scale
fell) and left the parameters unchanged."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import gradwell
from models_zoo import ZOO

LLAMA = ZOO["llama"]


def _amp_run(steps, *, init_scale=2.0 ** 16, mode="plain", unscale_first=False, poison=None):
    """Train the zoo's Hugging Face Llama with float16 autocast and a GradScaler; return the
    monitor and, per step, torch's evidence: the scale of the backward, the unscaled
    gradient norms, whether the scaler skipped the step, the loss."""
    model = LLAMA.build()
    opt = torch.optim.AdamW(model.parameters(), lr=LLAMA.lr)
    scaler = torch.amp.GradScaler("cpu", init_scale=init_scale)
    kw = {"optimizer": opt} if mode == "optimizer" else {}
    mon = gradwell.watch(model, scaler=scaler, update_every=1, **kw)
    names = [n for n, _ in model.named_parameters()]
    evidence = []
    for step in range(steps):
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.float16):
            loss = LLAMA.loss(model, LLAMA.batch(step))
        if poison == step:
            loss = loss * math.inf
        scale = scaler.get_scale()
        scaler.scale(loss).backward()
        if unscale_first:
            scaler.unscale_(opt)
            grads = {n: float(p.grad.norm()) for n, p in model.named_parameters()}
        else:
            grads = {n: float(p.grad.norm()) / scale for n, p in model.named_parameters()}
        mon.step(loss)
        before = [p.detach().clone() for p in model.parameters()]
        scaler.step(opt)
        scaler.update()
        moved = any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
        evidence.append({"scale": scale, "grads": grads, "skipped": not moved,
                         "backed_off": scaler.get_scale() < scale, "loss": float(loss.detach())})
    mon.close()
    return mon, evidence, names


def _bad(mon):
    return [f for f in mon.findings() if f.severity != "info"]


def test_scaled_gradients_are_recorded_unscaled_and_a_healthy_run_is_quiet():
    mon, ev, names = _amp_run(12)
    assert ev[-1]["loss"] < 0.8 * ev[0]["loss"]                  # torch: it trains
    # this small Llama overflows float16 at the default scale 65536 now and then: the scaler
    # backs off and skips those steps, as it is meant to
    overflow = [i for i, e in enumerate(ev) if e["backed_off"]]
    assert overflow and all(ev[i]["skipped"] for i in overflow)
    assert [e["step"] for e in mon.history.events if e["kind"] == "amp_overflow"] == overflow
    _, cols, norms = mon.history.series("param_grad_norm")
    for i, (row, e) in enumerate(zip(norms, ev)):
        if i not in overflow:
            np.testing.assert_allclose(row, [e["grads"][n] for n in cols], rtol=1e-4)
    assert not _bad(mon), _bad(mon)   # without scaler=: "exploding" (65536x) and "nonfinite"


def test_output_gradients_are_divided_by_the_scale():
    model = LLAMA.build()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    mon = gradwell.watch(model, scaler=scaler)
    layer = "model.layers.0.mlp.down_proj"
    seen = []
    module = dict(model.named_modules())[layer]

    def keep(m, i, out):
        out.register_hook(seen.append)
    module.register_forward_hook(keep)
    with torch.autocast("cpu", dtype=torch.float16):
        loss = LLAMA.loss(model, LLAMA.batch(0))
    scaler.scale(loss).backward()
    mon.step(loss)
    scaler.step(opt)
    scaler.update()
    g = seen[0].double() / 2.0 ** 10
    rec = mon.history.latest()
    assert rec["out_grad_rms"][layer] == pytest.approx(float(g.square().mean().sqrt()), rel=1e-3)
    mon.close()


def test_gradients_the_user_already_unscaled_are_not_divided_again():
    mon, ev, _ = _amp_run(3, unscale_first=True)
    _, cols, norms = mon.history.series("param_grad_norm")
    np.testing.assert_allclose(norms[-1], [ev[-1]["grads"][n] for n in cols], rtol=1e-4)


def test_with_optimizer_hooks_the_norms_are_unscaled_too():
    mon, ev, _ = _amp_run(3, mode="optimizer")
    _, cols, norms = mon.history.series("param_grad_norm")
    np.testing.assert_allclose(norms[-1], [ev[-1]["grads"][n] for n in cols], rtol=1e-4)
    assert not _bad(mon)


@pytest.mark.parametrize("mode", ["plain", "optimizer"])
def test_overflow_steps_are_events_not_findings(mode):
    mon, ev, _ = _amp_run(14, init_scale=2.0 ** 22, mode=mode)
    overflow = [i for i, e in enumerate(ev) if e["backed_off"]]
    assert overflow and all(ev[i]["skipped"] for i in overflow)         # torch: skipped
    assert not all(e["skipped"] for e in ev)                            # and then trained
    events = [e for e in mon.history.events if e["kind"] == "amp_overflow"]
    if mode == "plain":
        assert [e["step"] for e in events] == overflow
        assert events[0]["loss_scale"] == 2.0 ** 22
    else:         # optimizer hooks: a skipped step never reaches them, nor its statistics
        assert mon.history.steps.size == len(ev) - len(overflow)
    assert not _bad(mon), _bad(mon)


def test_a_nonfinite_loss_is_still_a_nonfinite_finding():
    mon, ev, _ = _amp_run(4, init_scale=2.0 ** 10, poison=2)
    assert [e["backed_off"] for e in ev] == [False, False, True, False]     # torch
    kinds = {(f.kind, f.step) for f in mon.findings()}
    assert ("nonfinite", 2) in kinds                # an inf loss is the model's, not the scale's
    assert not [e for e in mon.history.events if e["kind"] == "amp_overflow"]


def test_the_guard_hands_its_scaler_to_the_monitor():
    model = LLAMA.build()
    opt = torch.optim.AdamW(model.parameters(), lr=LLAMA.lr)
    scaler = torch.amp.GradScaler("cpu")
    mon = gradwell.watch(model)
    gradwell.guard.Guard(model, opt, scaler=scaler, monitor=mon)
    assert mon.scaler is scaler


def test_a_scaler_that_is_not_one_is_refused():
    with pytest.raises(TypeError, match="scaler must be None or a torch.amp.GradScaler"):
        gradwell.watch(torch.nn.Linear(2, 2), scaler=2.0 ** 16)
