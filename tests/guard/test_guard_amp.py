"""GradScaler ordering: unscale, then clip, then step; overflows are the scaler's business.

With a power-of-two scale, scaling and unscaling are exact in floating point, so a correctly
ordered AMP run equals the unscaled run bit for bit; clipping before unscaling does not.
"""

from __future__ import annotations

import torch
from torch import nn

import gradwell
from gradwell.clip import GlobalNorm, clip_
from gradwell.guard import Guard
from guard_helpers import batches, digits, make_model

STEPS = 25


def run(use_scaler: bool, *, guard_clip: bool = True, wrong_order: bool = False,
        optimizer: str = "torch") -> nn.Module:
    model = make_model(0)
    if optimizer == "torch":
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    else:
        opt = gradwell.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, clip=GlobalNorm(0.5))
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 12) if use_scaler else None
    guard = Guard(model, opt, scaler=scaler, clip=GlobalNorm(0.5) if guard_clip else None)
    x_all, y_all = digits()
    for it in range(STEPS):
        idx = batches(STEPS)[it]
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x_all[idx]), y_all[idx])
        (scaler.scale(loss) if scaler else loss).backward()
        if wrong_order:  # the classic mistake: clipping the still-scaled gradients
            clip_(model.parameters(), GlobalNorm(0.5))
        assert guard.step(loss) == "ok"
    return model


def same(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_scaler_run_equals_unscaled_run_with_guard_clip() -> None:
    assert same(run(True), run(False))


def test_scaler_run_equals_unscaled_run_with_optimizer_clip() -> None:
    assert same(run(True, guard_clip=False, optimizer="gradwell"),
                run(False, guard_clip=False, optimizer="gradwell"))


def test_clipping_before_unscale_is_detected_as_different() -> None:
    reference = run(False, guard_clip=False, wrong_order=True)
    assert not same(run(True, guard_clip=False, wrong_order=True), reference)


def test_overflows_are_skipped_without_rollback() -> None:
    model = make_model(0)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 20)
    guard = Guard(model, opt, scaler=scaler, max_bad_steps=2)
    x_all, y_all = digits()
    before = [p.detach().clone() for p in model.parameters()]
    statuses = []
    for it in range(4):
        idx = batches(4)[it]
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x_all[idx]), y_all[idx])
        scaler.scale(loss).backward()
        model[0].weight.grad[0, 0] = float("inf")  # what a float16 overflow looks like
        statuses.append(guard.step(loss))
    assert statuses == ["skipped"] * 4
    assert [e.reason for e in guard.events] == ["amp_overflow"] * 4
    assert scaler.get_scale() == 2.0 ** 16  # backed off by 0.5 after each overflow
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    assert guard.findings()[0].severity == "info"


def test_nonfinite_loss_with_scaler_counts_as_bad() -> None:
    model = make_model(0)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 8)
    guard = Guard(model, opt, scaler=scaler, max_bad_steps=2)
    x_all, y_all = digits()
    statuses = []
    for it in range(2):
        idx = batches(2)[it]
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x_all[idx]), y_all[idx]) * float("nan")
        scaler.scale(loss).backward()
        statuses.append(guard.step(loss))
    assert statuses == ["skipped", "rolled_back"]
