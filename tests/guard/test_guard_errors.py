"""Bad input gets a clear error naming the argument, the value and what is allowed."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import gradwell
from gradwell.guard import Guard
from guard_helpers import make_model


def model_and_opt():
    model = make_model(0)
    return model, torch.optim.SGD(model.parameters(), lr=0.1)


def test_optimizer_over_other_parameters() -> None:
    model, _ = model_and_opt()
    other = nn.Linear(3, 2)
    opt = torch.optim.SGD(list(model.parameters()) + list(other.parameters()), lr=0.1)
    with pytest.raises(ValueError, match=r"optimizer updates 2 parameter\(s\) that are not "
                                         r"parameters of model \(shapes \(2, 3\), \(2,\)\)"):
        Guard(model, opt)
    with pytest.raises(ValueError, match="not parameters of model"):
        Guard(other, torch.optim.SGD(model.parameters(), lr=0.1))


@pytest.mark.parametrize("kwargs,message", [
    ({"lr_factor": 0}, r"lr_factor must be a number in \(0, 1\], got 0"),
    ({"lr_factor": 1.5}, r"lr_factor must be a number in \(0, 1\], got 1.5"),
    ({"max_bad_steps": 0}, r"max_bad_steps must be an int >= 1, got 0"),
    ({"snapshot_every": 2.5}, r"snapshot_every must be an int >= 1, got 2.5"),
    ({"trust_after": -1}, r"trust_after must be an int >= 1, got -1"),
    ({"spike_z": 0}, r"spike_z must be a positive number or None \(off\), got 0"),
    ({"spike_z": -2.0}, r"spike_z must be a positive number or None \(off\), got -2.0"),
    ({"spike_window": 2}, r"spike_window must be an int >= 3, got 2"),
    ({"max_rollbacks": 0}, r"max_rollbacks must be an int >= 1, got 0"),
])
def test_bad_numbers(kwargs: dict, message: str) -> None:
    model, opt = model_and_opt()
    with pytest.raises(ValueError, match=message):
        Guard(model, opt, **kwargs)


def test_bad_objects() -> None:
    model, opt = model_and_opt()
    with pytest.raises(TypeError, match=r"model must be a torch.nn.Module, got list"):
        Guard([model], opt)
    with pytest.raises(TypeError, match=r"optimizer must be a torch.optim.Optimizer"):
        Guard(model, object())
    with pytest.raises(TypeError, match=r"clip must be a gradwell.clip object"):
        Guard(model, opt, clip=1.0)
    with pytest.raises(TypeError, match=r"scheduler must have state_dict\(\)"):
        Guard(model, opt, scheduler=object())
    other_opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(other_opt, 5)
    with pytest.raises(ValueError, match="scheduler drives a different optimizer"):
        Guard(model, opt, scheduler=sched)


def test_bad_loss() -> None:
    model, opt = model_and_opt()
    guard = Guard(model, opt)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)              # a backward has run
    with pytest.raises(ValueError, match=r"loss must hold one value, got shape \(3,\)"):
        guard.step(torch.ones(3))
    with pytest.raises(TypeError, match=r"loss must be a tensor or a number, got str"):
        guard.step("0.5")


def test_a_step_without_gradients_is_an_error_and_counts_nothing() -> None:
    model, opt = model_and_opt()
    guard = Guard(model, opt)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(RuntimeError, match=r"found no gradients: call loss.backward\(\)"):
        guard.step(torch.tensor(0.5))                  # backward forgotten
    assert guard.steps == 0
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_clip_errors_from_the_issue() -> None:
    with pytest.raises(ValueError, match=r"percentile must be a number in \(0, 100\], got 0"):
        gradwell.clip.AutoClip(0)
    with pytest.raises(ValueError, match=r"percentile must be a number in \(0, 100\], got 101"):
        gradwell.clip.AutoClip(101)
    with pytest.raises(ValueError, match=r"z_thresh must be a positive number, got 0"):
        gradwell.clip.ZClip(z_thresh=0)
