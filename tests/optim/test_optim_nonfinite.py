"""``skip_nonfinite=True``: a step whose gradients hold NaN/Inf changes nothing and is counted.

At step ``k`` one gradient element is set to NaN, +Inf or -Inf. Parameters, every state tensor
(step counters included) and the group hyperparameters must be bitwise what they were, and the
run afterwards must match a torch run that never saw that batch. ``k = 0`` is the very first
step, before any state exists.
"""

from __future__ import annotations

import math

import pytest
import torch

import gradwell
from optim_harness import (BASE_LR, NAMES, assert_bitwise_equal, assert_params_close, rel_err,
                           assert_state_close, backward_at, gw, paths, roundtrip, snapshot,
                           twin_models)

STEPS = 20
KW = {"SGD": {"momentum": 0.9, "nesterov": True}, "Adagrad": {"lr_decay": 0.01},
      "RMSprop": {"centered": True, "momentum": 0.5}, "Adadelta": {"weight_decay": 0.01},
      "Adam": {"amsgrad": True}, "AdamW": {}}
BAD = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def corrupt(model, value: float) -> None:
    model.fc1.weight.grad[1, 2] = value


def lockstep_with_bad_steps(ref, got, ref_model, got_model, bad_steps, spoil, ref_clip=None,
                            steps=STEPS):
    """gradwell sees every batch (``spoil(model)`` corrupts the bad ones; each is checked to
    change no bit); torch sees only the good ones, and the parameters must agree after every
    good step."""
    for k in range(steps):
        backward_at(got_model, got, k)
        if k in bad_steps:
            spoil(got_model)
            before = snapshot(got_model, got)
            got.step()
            assert_bitwise_equal(before, snapshot(got_model, got), f"skipped step {k}")
            continue
        got.step()
        backward_at(ref_model, ref, k)
        if ref_clip is not None:
            ref_clip(ref_model.parameters())
        ref.step()
        assert_params_close(ref_model, got_model, f"step {k}")
    assert got.skipped_steps == len(bad_steps)


def run_with_bad_steps(name, kw, path_kw, bad_steps, value, clip=None, ref_clip=None):
    """A drop-in with ``skip_nonfinite=True`` against torch's namesake (``foreach=False``)."""
    ref_model, got_model = twin_models()
    ref = getattr(torch.optim, name)(ref_model.parameters(), foreach=False, **kw)
    got = gw(name)(got_model.parameters(), skip_nonfinite=True, clip=clip, **kw, **path_kw)
    lockstep_with_bad_steps(ref, got, ref_model, got_model, bad_steps,
                            lambda m: corrupt(m, value), ref_clip)
    assert_state_close(ref, got, lenient_untouched=False)
    return got


CASES = [pytest.param(name, path_kw, id=f"{name}-{path}")
         for name in NAMES for path, path_kw in paths(name)[:2]]


@pytest.mark.parametrize("name, path_kw", CASES)
@pytest.mark.parametrize("bad, at", [("nan", 0), ("inf", 1), ("-inf", 7), ("nan", 7)])
def test_bad_step_is_skipped_exactly(name, path_kw, bad, at) -> None:
    """``at=0``: no state exists yet; ``at=1``: ``extra`` gets its first gradient then."""
    kw = {"lr": BASE_LR[name], **KW[name]}
    run_with_bad_steps(name, kw, path_kw, {at}, BAD[bad])


@pytest.mark.parametrize("name, path_kw", CASES)
def test_several_bad_steps_are_counted_and_survive_a_checkpoint(name, path_kw) -> None:
    kw = {"lr": BASE_LR[name], **KW[name]}
    got = run_with_bad_steps(name, kw, path_kw, {0, 3, 4, 11}, math.nan)
    fresh = gw(name)(got.param_groups[0]["params"], skip_nonfinite=True, **kw, **path_kw)
    fresh.load_state_dict(roundtrip(got.state_dict()))
    assert fresh.skipped_steps == 4


@pytest.mark.parametrize("name, path_kw", CASES)
@pytest.mark.parametrize("norm_type", [2.0, math.inf])
def test_skip_together_with_clip_matches_clip_grad_norm(name, path_kw, norm_type) -> None:
    kw = {"lr": BASE_LR[name], **KW[name]}
    run_with_bad_steps(
        name, kw, path_kw, {2, 9}, math.inf,
        clip=gradwell.clip.GlobalNorm(0.3, norm_type=norm_type),
        ref_clip=lambda ps: torch.nn.utils.clip_grad_norm_(ps, 0.3, norm_type=norm_type))


@pytest.mark.parametrize("name", NAMES)
def test_without_skip_nonfinite_a_nan_propagates_like_torch(name) -> None:
    """The guard is opt-in: by default a NaN gradient does to the parameters what torch does."""
    ref_model, got_model = twin_models()
    kw = {"lr": BASE_LR[name], **KW[name]}
    ref = getattr(torch.optim, name)(ref_model.parameters(), foreach=False, **kw)
    got = gw(name)(got_model.parameters(), **kw)
    for k in range(3):
        for model, opt in ((ref_model, ref), (got_model, got)):
            backward_at(model, opt, k)
            if k == 1:
                corrupt(model, math.nan)
            opt.step()
        assert_params_close(ref_model, got_model, f"step {k}")
    assert torch.isnan(got_model.fc1.weight).any()
    assert got.skipped_steps == 0


@pytest.mark.parametrize("name, path_kw", CASES)
def test_nan_in_one_group_skips_every_group(name, path_kw) -> None:
    """The check is global: a NaN in group B must also hold back group A's step."""
    from optim_harness import two_groups
    ref_model, got_model = twin_models()
    kw_b = {"lr": BASE_LR[name] / 2, "weight_decay": 0.01}
    ref = getattr(torch.optim, name)(two_groups(ref_model, {}, kw_b), lr=BASE_LR[name],
                                     foreach=False)
    got = gw(name)(two_groups(got_model, {}, kw_b), lr=BASE_LR[name], skip_nonfinite=True,
                   **path_kw)

    def nan_in_group_b(model):
        model.fc2.weight.grad[0, 0] = math.nan

    lockstep_with_bad_steps(ref, got, ref_model, got_model, {4}, nan_in_group_b, steps=12)


@pytest.mark.parametrize("path_kw", [{}, {"fused": False}])
def test_inf_is_judged_before_value_clipping(path_kw) -> None:
    """``Value`` would clamp an Inf to the limit; the raw gradient held an Inf, so skip."""
    ref_model, got_model = twin_models()
    ref = torch.optim.Adam(ref_model.parameters(), lr=0.01, foreach=False)
    got = gw("Adam")(got_model.parameters(), lr=0.01, clip=gradwell.clip.Value(0.25),
                     skip_nonfinite=True, **path_kw)
    lockstep_with_bad_steps(ref, got, ref_model, got_model, {3}, lambda m: corrupt(m, math.inf),
                            lambda ps: torch.nn.utils.clip_grad_value_(ps, 0.25), steps=10)


def test_transform_optimizer_skips_too() -> None:
    """``Optimizer(chain(...), skip_nonfinite=True)`` against torch SGD with momentum."""
    ref_model, got_model = twin_models()
    ref = torch.optim.SGD(ref_model.parameters(), lr=0.05, momentum=0.9, foreach=False)
    got = gradwell.optim.Optimizer(got_model.parameters(), gradwell.optim.trace(0.9), lr=0.05,
                                   skip_nonfinite=True)
    lockstep_with_bad_steps(ref, got, ref_model, got_model, {0, 5},
                            lambda m: corrupt(m, math.nan))


@pytest.mark.parametrize("name, path_kw", CASES)
def test_huge_but_finite_gradients_are_not_skipped(name, path_kw) -> None:
    """float32 gradients of 1e20 are finite (their squares are not): the step must happen.

    A detector built on the 2-norm overflows here (sum of squares > 3.4e38) and would drop a
    legitimate step; torch.optim takes it.
    """
    ref_p = torch.nn.Parameter(torch.linspace(-1.0, 1.0, 6))
    got_p = torch.nn.Parameter(ref_p.detach().clone())
    kw = {"lr": 1e-22 if name == "SGD" else BASE_LR[name]}
    ref = getattr(torch.optim, name)([ref_p], foreach=False, **kw)
    got = gw(name)([got_p], skip_nonfinite=True, **kw, **path_kw)
    for k in range(3):
        grad = torch.full((6,), 1e20) * (1.0 + 0.1 * k)
        ref_p.grad, got_p.grad = grad.clone(), grad.clone()
        ref.step()
        got.step()
    assert got.skipped_steps == 0, f"{got.skipped_steps} finite steps were skipped"
    assert rel_err(got_p, ref_p) <= 1e-6
