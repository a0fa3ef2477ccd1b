"""Composed transformations, applied by ``gradwell.optim.Optimizer``, against torch.optim.

Each torch optimizer is rebuilt from small transformations with ``chain`` and compared step
for step: coupled weight decay goes before the preconditioner, decoupled (AdamW) after it, and
RMSprop's momentum is ``trace`` after ``scale_by_rms``.
"""

from __future__ import annotations

import pytest
import torch
from torch.optim import lr_scheduler

import gradwell
from optim_harness import STEPS, lockstep, torch_opt, two_groups

O = gradwell.optim


def composed(make_transform, lr, **kw):
    return lambda m: O.Optimizer(m.parameters(), make_transform(), lr=lr, **kw)


SGD_CASES = [
    {"momentum": 0.0, "dampening": 0.0, "nesterov": False, "weight_decay": 0.0},
    {"momentum": 0.9, "dampening": 0.0, "nesterov": False, "weight_decay": 0.1},
    {"momentum": 0.9, "dampening": 0.4, "nesterov": False, "weight_decay": 0.0},
    {"momentum": 0.8, "dampening": 0.0, "nesterov": True, "weight_decay": 0.05},
]


@pytest.mark.parametrize("kw", SGD_CASES, ids=str)
@pytest.mark.parametrize("maximize", [False, True])
def test_sgd_from_decay_and_trace(kw, maximize) -> None:
    def make():
        return O.chain(O.add_decayed_weights(kw["weight_decay"]),
                       O.trace(kw["momentum"], kw["dampening"], kw["nesterov"]))
    lockstep(torch_opt("SGD", lr=0.05, maximize=maximize, **kw),
             composed(make, 0.05, maximize=maximize))


@pytest.mark.parametrize("kw", [
    {}, {"lr_decay": 0.02, "initial_accumulator_value": 0.3, "eps": 1e-6},
], ids=str)
@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_adagrad_from_scale_by_adagrad(kw, wd) -> None:
    lockstep(torch_opt("Adagrad", lr=0.05, weight_decay=wd, **kw),
             composed(lambda: O.chain(O.add_decayed_weights(wd), O.scale_by_adagrad(**kw)), 0.05))


@pytest.mark.parametrize("kw", [{}, {"alpha": 0.9, "eps": 1e-4}, {"centered": True}], ids=str)
@pytest.mark.parametrize("momentum", [0.0, 0.7])
def test_rmsprop_from_scale_by_rms_and_trace(kw, momentum) -> None:
    def make():
        parts = [O.add_decayed_weights(0.01), O.scale_by_rms(**kw)]
        return O.chain(*parts, O.trace(momentum)) if momentum else O.chain(*parts)
    lockstep(torch_opt("RMSprop", lr=0.01, weight_decay=0.01, momentum=momentum, **kw),
             composed(make, 0.01))


@pytest.mark.parametrize("kw", [{}, {"rho": 0.5, "eps": 1e-4}], ids=str)
@pytest.mark.parametrize("lr", [1.0, 0.3])
def test_adadelta_from_scale_by_adadelta(kw, lr) -> None:
    lockstep(torch_opt("Adadelta", lr=lr, weight_decay=0.02, **kw),
             composed(lambda: O.chain(O.add_decayed_weights(0.02), O.scale_by_adadelta(**kw)), lr))


ADAM_CASES = [{}, {"betas": (0.5, 0.9), "eps": 1e-4}, {"amsgrad": True}]


@pytest.mark.parametrize("kw", ADAM_CASES, ids=str)
def test_adam_with_coupled_decay_before_scale_by_adam(kw) -> None:
    lockstep(torch_opt("Adam", lr=0.01, weight_decay=0.1, **kw),
             composed(lambda: O.chain(O.add_decayed_weights(0.1), O.scale_by_adam(**kw)), 0.01))


@pytest.mark.parametrize("kw", ADAM_CASES, ids=str)
def test_adamw_is_decay_after_scale_by_adam(kw) -> None:
    def make():
        return O.chain(O.scale_by_adam(**kw), O.add_decayed_weights(0.1))
    lockstep(torch_opt("AdamW", lr=0.01, weight_decay=0.1, **kw), composed(make, 0.01))


def test_scale_by_adam_alone_has_torch_defaults() -> None:
    """``Optimizer(params, scale_by_adam())`` with lr 1e-3 is ``torch.optim.Adam()``."""
    lockstep(torch_opt("Adam"), composed(O.scale_by_adam, 1e-3))


def test_hyperparameters_live_in_param_groups() -> None:
    """Groups override the transformation's defaults under torch's names."""
    kw_a, kw_b = {"betas": (0.5, 0.9)}, {"lr": 0.003, "eps": 1e-4, "amsgrad": True}
    ref, got = lockstep(
        lambda m: torch.optim.Adam(two_groups(m, kw_a, kw_b), lr=0.01, foreach=False),
        lambda m: O.Optimizer(two_groups(m, kw_a, kw_b), O.scale_by_adam(), lr=0.01))
    for rg, gg in zip(ref.opt.param_groups, got.opt.param_groups):
        for key in ("lr", "betas", "eps", "amsgrad", "maximize"):
            assert gg[key] == rg[key], f"group {key}: {gg[key]!r} != torch's {rg[key]!r}"


def test_one_cycle_drives_betas_of_a_composed_optimizer() -> None:
    def sched(o):
        return lr_scheduler.OneCycleLR(o, max_lr=0.01, total_steps=STEPS)
    lockstep(torch_opt("Adam", lr=0.01), composed(O.scale_by_adam, 0.01), make_sched=sched)


@pytest.mark.parametrize("norm_type", [2.0, float("inf")])
def test_global_norm_as_chain_element_clips_each_group(norm_type) -> None:
    """In a chain the clipper sees one group's gradients: torch clips each group separately."""
    def ref_edit(m):
        groups = two_groups(m, {}, {})
        for g in groups:
            torch.nn.utils.clip_grad_norm_(g["params"], 0.2, norm_type=norm_type)

    def make(m):
        return O.Optimizer(two_groups(m, {}, {}), O.chain(
            gradwell.clip.GlobalNorm(0.2, norm_type=norm_type), O.scale_by_adam()), lr=0.01)

    lockstep(lambda m: torch.optim.Adam(two_groups(m, {}, {}), lr=0.01, foreach=False), make,
             ref_edit=ref_edit)


def test_value_clip_as_chain_element() -> None:
    def make(m):
        return O.Optimizer(m.parameters(), O.chain(gradwell.clip.Value(0.01), O.trace(0.9)),
                           lr=0.05)
    lockstep(torch_opt("SGD", lr=0.05, momentum=0.9), make,
             ref_edit=lambda m: torch.nn.utils.clip_grad_value_(m.parameters(), 0.01))


def test_chain_element_clip_leaves_grad_untouched() -> None:
    """Unlike ``clip=``, a chain element transforms updates, not ``p.grad`` (as optax does)."""
    model = torch.nn.Linear(3, 2).double()
    model.weight.grad = torch.full_like(model.weight, 5.0)
    model.bias.grad = torch.full_like(model.bias, -5.0)
    opt = O.Optimizer(model.parameters(), O.chain(gradwell.clip.Value(0.5)), lr=1.0)
    w0 = model.weight.detach().clone()
    opt.step()
    assert torch.equal(model.weight.grad, torch.full_like(model.weight, 5.0))
    assert torch.equal(model.weight.detach(), w0 - 0.5)
