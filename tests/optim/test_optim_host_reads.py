"""On the CPU a step reads the clip factor and the non-finite flag (reading costs no sync there).

A factor of exactly 1 leaves the gradients alone and the fused kernel gets no ``grad_scale``; a
non-finite step never reaches the kernel. Both must give torch's numbers bit for bit, and
accelerator tensors must never be read.
"""

from __future__ import annotations

import math

import pytest
import torch

import gradwell
from gradwell.clip.base import effective_factor


def _params(seed: int, n: int = 6) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(50 + 7 * i, generator=g)) for i in range(n)]


def _set_grads(params: list[torch.nn.Parameter], step: int, scale: float) -> None:
    g = torch.Generator().manual_seed(1000 + step)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g) * scale


def _record_kernel(monkeypatch: pytest.MonkeyPatch, name: str) -> list[dict]:
    calls: list[dict] = []
    kernel = getattr(torch, name)

    def recording(*args, **kwargs):
        calls.append(kwargs)
        return kernel(*args, **kwargs)

    monkeypatch.setattr(torch, name, recording)
    return calls


def test_effective_factor_drops_exactly_one_on_cpu_only() -> None:
    assert effective_factor(None) is None
    assert effective_factor(torch.tensor(1.0)) is None
    below = torch.nextafter(torch.tensor(1.0), torch.tensor(0.0))  # the float32 just below 1
    assert effective_factor(below) is below
    meta = torch.ones((), device="meta")  # reading a meta tensor raises: proves it is not read
    assert effective_factor(meta) is meta


@pytest.mark.parametrize("name", ["Adam", "AdamW", "SGD", "Adagrad"])
def test_unclipped_steps_match_clip_grad_norm_then_torch_bit_for_bit(name, monkeypatch) -> None:
    """Gradient norms below ``max_norm``: torch's fused float32 numbers exactly, and no scale."""
    kw = {"lr": 1e-2, **({"momentum": 0.9} if name == "SGD" else {})}
    ours, theirs = _params(0), _params(0)
    gw = getattr(gradwell.optim, name)(ours, clip=gradwell.clip.GlobalNorm(100.0),
                                      skip_nonfinite=True, **kw)
    ref = getattr(torch.optim, name)(theirs, fused=True, **kw)
    kernel = {"SGD": "_fused_sgd_", "Adagrad": "_fused_adagrad_",
              "AdamW": "_fused_adamw_"}.get(name, "_fused_adam_")
    calls = _record_kernel(monkeypatch, kernel)
    for step in range(20):
        _set_grads(ours, step, 1.0)
        _set_grads(theirs, step, 1.0)
        total = torch.nn.utils.clip_grad_norm_(theirs, 100.0)
        assert total < 100.0
        gw.step()
        ref.step()
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b), f"{name}: parameters differ from torch"
    assert calls and all(c["grad_scale"] is None and c["found_inf"] is None for c in calls)


def test_clipped_steps_still_fold_the_factor_into_the_kernel(monkeypatch) -> None:
    ours, theirs = _params(1), _params(1)
    gw = gradwell.optim.Adam(ours, lr=1e-2, clip=gradwell.clip.GlobalNorm(1.0))
    ref = torch.optim.Adam(theirs, lr=1e-2, fused=True)
    calls = _record_kernel(monkeypatch, "_fused_adam_")
    for step in range(10):
        _set_grads(ours, step, 10.0)
        _set_grads(theirs, step, 10.0)
        torch.nn.utils.clip_grad_norm_(theirs, 1.0)
        gw.step()
        ref.step()
    ours_scaled = [c for c in calls if c["grad_scale"] is not None]
    assert len(ours_scaled) == 10, "every clipped gradwell step passes grad_scale"
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_skipped_step_on_cpu_never_reaches_the_kernel(monkeypatch) -> None:
    params = _params(2)
    opt = gradwell.optim.Adam(params, lr=1e-2, skip_nonfinite=True)
    _set_grads(params, 0, 1.0)
    opt.step()
    before = [p.detach().clone() for p in params]
    state = [{k: v.clone() for k, v in opt.state[p].items()} for p in params]
    calls = _record_kernel(monkeypatch, "_fused_adam_")
    _set_grads(params, 1, 1.0)
    params[3].grad[5] = math.nan
    opt.step()
    assert calls == [] and opt.skipped_steps == 1
    for p, b, s in zip(params, before, state):
        assert torch.equal(p, b)
        assert all(torch.equal(opt.state[p][k], v) for k, v in s.items())
    _set_grads(params, 2, 1.0)
    opt.step()
    assert len(calls) == 1 and calls[0]["found_inf"] is None
    assert all(int(opt.state[p]["step"]) == 2 for p in params)


def test_clip_leaves_unclipped_gradients_untouched() -> None:
    """Nothing to clip: no pass over the gradients (their version counters do not move)."""
    params = _params(3)
    _set_grads(params, 0, 1e-3)
    versions = [p.grad._version for p in params]
    total, factor = gradwell.clip.clip_(params, gradwell.clip.GlobalNorm(1.0))
    assert factor.item() == 1.0 and total.item() < 1.0
    assert [p.grad._version for p in params] == versions
    _set_grads(params, 0, 10.0)
    versions = [p.grad._version for p in params]
    gradwell.clip.clip_(params, gradwell.clip.GlobalNorm(1.0))
    assert all(p.grad._version > v for p, v in zip(params, versions))
