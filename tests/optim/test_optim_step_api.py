"""The torch.optim.Optimizer API around ``step``: closures, zero_grad, hooks, add_param_group.

Each behaviour is checked against torch.optim doing the same thing on a twin model.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from optim_harness import (BASE_LR, NAMES, X, Y, assert_params_close, assert_state_close, gw,
                           loss_at, paths, twin_models)

STEPS = 50
KW = {"SGD": {"momentum": 0.9}, "Adagrad": {"lr_decay": 0.01}, "RMSprop": {"centered": True},
      "Adadelta": {"rho": 0.8}, "Adam": {"amsgrad": True}, "AdamW": {}}
CASES = [pytest.param(name, path_kw, id=f"{name}-{path}")
         for name in NAMES for path, path_kw in paths(name)[:2]]


def pair(name: str, path_kw: dict):
    ref_model, got_model = twin_models()
    kw = {"lr": BASE_LR[name], **KW[name]}
    ref = getattr(torch.optim, name)(ref_model.parameters(), foreach=False, **kw)
    got = gw(name)(got_model.parameters(), **kw, **path_kw)
    return ref_model, ref, got_model, got


@pytest.mark.parametrize("name, path_kw", CASES)
def test_closure_is_called_once_and_its_loss_returned(name: str, path_kw: dict) -> None:
    ref_model, ref, got_model, got = pair(name, path_kw)
    calls = {"ref": 0, "got": 0}

    def closure_for(model, opt, key, k):
        def closure():
            calls[key] += 1
            opt.zero_grad()
            loss = loss_at(model, k)
            loss.backward()
            return loss
        return closure

    for k in range(STEPS):
        ref_loss = ref.step(closure_for(ref_model, ref, "ref", k))
        got_loss = got.step(closure_for(got_model, got, "got", k))
        assert torch.is_tensor(got_loss) and abs(got_loss.item() - ref_loss.item()) <= (
            1e-10 * abs(ref_loss.item())), f"step {k}: loss {got_loss} != {ref_loss}"
        assert_params_close(ref_model, got_model, f"closure step {k}")
    assert calls["got"] == calls["ref"] == STEPS
    assert_state_close(ref, got)


@pytest.mark.parametrize("set_to_none", [True, False, None])
def test_zero_grad_like_torch(set_to_none) -> None:
    ref_model, ref, got_model, got = pair("Adam", {})
    for model, opt in ((ref_model, ref), (got_model, got)):
        loss_at(model, 1).backward()
        if set_to_none is None:
            opt.zero_grad()
        else:
            opt.zero_grad(set_to_none=set_to_none)
    for (n, r), g in zip(ref_model.named_parameters(), got_model.parameters()):
        assert (r.grad is None) == (g.grad is None), f"{n}: grad None-ness differs"
        if r.grad is not None:
            assert torch.equal(r.grad, g.grad), f"{n}: grad not zeroed like torch"


@pytest.mark.parametrize("name, path_kw", CASES)
def test_step_pre_and_post_hooks_like_torch(name: str, path_kw: dict) -> None:
    """A pre-hook that halves the gradients and a post-hook that records calls."""
    ref_model, ref, got_model, got = pair(name, path_kw)
    seen = []

    def halve(opt, args, kwargs):
        for p in (p for g in opt.param_groups for p in g["params"]):
            if p.grad is not None:
                p.grad.mul_(0.5)

    def record(opt, args, kwargs):
        seen.append(opt)

    for opt in (ref, got):
        opt.register_step_pre_hook(halve)
        opt.register_step_post_hook(record)
    for k in range(STEPS):
        for model, opt in ((ref_model, ref), (got_model, got)):
            opt.zero_grad()
            loss_at(model, k).backward()
            opt.step()
        assert_params_close(ref_model, got_model, f"hooked step {k}")
    assert seen.count(got) == STEPS and seen.count(ref) == STEPS


def test_removed_hook_no_longer_runs() -> None:
    _, _, got_model, got = pair("SGD", {})
    calls = []
    handle = got.register_step_post_hook(lambda o, a, k: calls.append(1))
    loss_at(got_model, 0).backward()
    got.step()
    handle.remove()
    got.step()
    assert calls == [1]


@pytest.mark.parametrize("name", NAMES)
def test_add_param_group_in_the_middle_of_a_run(name: str) -> None:
    """A new parameter joins at step 10 with its own lr, as when unfreezing a layer."""
    ref_model, ref, got_model, got = pair(name, {})
    extra = {m: torch.nn.Parameter(torch.full((3,), 0.5, dtype=torch.float64))
             for m in ("ref", "got")}
    for k in range(30):
        if k == 10:
            ref.add_param_group({"params": [extra["ref"]], "lr": BASE_LR[name] / 2})
            got.add_param_group({"params": [extra["got"]], "lr": BASE_LR[name] / 2})
        for key, model, opt in (("ref", ref_model, ref), ("got", got_model, got)):
            opt.zero_grad()
            out = model(X[k], k) + (extra[key] if k >= 10 else 0.0)
            F.mse_loss(out, Y[k]).backward()
            opt.step()
        assert_params_close(ref_model, got_model, f"step {k}")
        err = (extra["got"] - extra["ref"]).abs().max().item()
        assert err <= 1e-10 * extra["ref"].abs().max().item(), f"new group at step {k}: {err}"
    assert_state_close(ref, got)
