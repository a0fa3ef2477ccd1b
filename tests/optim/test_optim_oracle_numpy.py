"""gradwell (and torch) against the NumPy oracle written from the papers.

Two kinds of test:

* *agreement*: with torch's departures switched on, the oracle reproduces torch.optim and
  gradwell, step for step over 50 steps, within 1e-10 relative (the oracle is checked against
  torch first, so a failure says which side is wrong);
* *departures*: the paper's own form is what gradwell computes where the two coincide (Adadelta
  with lr=1, Adam's Algorithm 1, Duchi's Adagrad, Nesterov's look-ahead points, AdamW's lambda)
  and measurably differs where torch departs (eps placement, AMSGrad's max, dampening's first
  step), so docs/optimizers.md's statements are tested, not just written.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.optim import lr_scheduler

import numpy_oracle as oracle
from optim_harness import DTYPE, X, Y, gw

STEPS = 50
TOL = 1e-10
DIFFERENT = 1e-6   # a departure must show at least this relative difference
XN, YN = X.numpy(), Y.numpy()


def make_mlp() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(),
                               torch.nn.Linear(4, 3)).to(DTYPE)


def run_torch(make_opt, make_sched=None) -> list[list[np.ndarray]]:
    model = make_mlp()
    opt = make_opt(model.parameters())
    sched = make_sched(opt) if make_sched else None
    traj = []
    for k in range(STEPS):
        opt.zero_grad()
        F.mse_loss(model(X[k]), Y[k]).backward()
        opt.step()
        if sched:
            sched.step()
        traj.append([p.detach().numpy().copy() for p in model.parameters()])
    return traj


def run_oracle(rule: oracle.Rule, lookahead: bool = False) -> list[list[np.ndarray]]:
    params = [p.detach().numpy().copy() for p in make_mlp().parameters()]
    traj = []
    for k in range(STEPS):
        at = rule.lookahead(params) if lookahead else params
        _, grads = oracle.mlp_loss_grad(at, XN[k], YN[k])
        rule.step(params, grads)
        traj.append(rule.lookahead(params) if lookahead else [p.copy() for p in params])
    return traj


def max_rel(a, b) -> tuple[float, int]:
    """Largest relative difference over the trajectories, and the step where it occurs."""
    worst, where = 0.0, -1
    for k, (pa, pb) in enumerate(zip(a, b)):
        for x, y in zip(pa, pb):
            err = float(np.max(np.abs(x - y)) / max(np.max(np.abs(y)), 1e-12))
            if not err <= worst:
                worst, where = err, k
    return worst, where


def assert_agree(got, ref, what: str) -> None:
    err, k = max_rel(got, ref)
    assert err <= TOL, f"{what}: relative error {err:.3e} at step {k} > {TOL:g}"


def assert_differ(a, b, what: str) -> None:
    err, _ = max_rel(a, b)
    assert err >= DIFFERENT, f"{what}: expected a visible departure, max difference {err:.3e}"


def both_agree(name: str, kw: dict, rule: oracle.Rule, lookahead: bool = False) -> None:
    want = run_oracle(rule, lookahead)
    ref = run_torch(lambda ps: getattr(torch.optim, name)(ps, foreach=False, **kw))
    assert_agree(ref, want, f"oracle vs torch.optim.{name}{kw} (oracle self-check)")
    got = run_torch(lambda ps: gw(name)(ps, **kw))
    assert_agree(got, want, f"gradwell.optim.{name}{kw} vs oracle")


AGREEMENT = [
    ("SGD", {"lr": 0.05}, lambda: oracle.Momentum(0.05, 0.0)),
    ("SGD", {"lr": 0.05, "momentum": 0.9}, lambda: oracle.Momentum(0.05, 0.9)),
    ("SGD", {"lr": 0.05, "momentum": 0.9, "dampening": 0.3, "weight_decay": 0.1},
     lambda: oracle.Momentum(0.05, 0.9, 0.3, weight_decay=0.1)),
    ("SGD", {"lr": 0.05, "momentum": 0.5, "maximize": True},
     lambda: oracle.Momentum(0.05, 0.5, maximize=True)),
    ("Adagrad", {"lr": 0.05}, lambda: oracle.Adagrad(0.05)),
    ("Adagrad", {"lr": 0.05, "lr_decay": 0.02, "initial_accumulator_value": 0.3,
                 "weight_decay": 0.1, "eps": 1e-6},
     lambda: oracle.Adagrad(0.05, 1e-6, 0.02, 0.3, weight_decay=0.1)),
    ("RMSprop", {"lr": 0.01}, lambda: oracle.RMSprop(0.01, 0.99, 1e-8)),
    ("RMSprop", {"lr": 0.01, "centered": True, "momentum": 0.7, "weight_decay": 0.05},
     lambda: oracle.RMSprop(0.01, 0.99, 1e-8, True, 0.7, weight_decay=0.05)),
    ("Adadelta", {}, lambda: oracle.Adadelta(rho=0.9, eps=1e-6)),
    ("Adadelta", {"lr": 0.5, "rho": 0.8, "weight_decay": 0.05, "maximize": True},
     lambda: oracle.Adadelta(0.8, 1e-6, 0.5, weight_decay=0.05, maximize=True)),
    ("Adam", {"lr": 0.01}, lambda: oracle.Adam(0.01)),
    ("Adam", {"lr": 0.01, "betas": (0.8, 0.99), "amsgrad": True, "weight_decay": 0.1},
     lambda: oracle.Adam(0.01, (0.8, 0.99), amsgrad=True, weight_decay=0.1)),
    ("AdamW", {"lr": 0.01, "weight_decay": 0.5},
     lambda: oracle.Adam(0.01, decoupled_lambda=0.01 * 0.5)),
    ("AdamW", {"lr": 0.01, "weight_decay": 0.5, "amsgrad": True, "maximize": True},
     lambda: oracle.Adam(0.01, amsgrad=True, decoupled_lambda=0.005, maximize=True)),
]


@pytest.mark.parametrize("name, kw, rule", AGREEMENT, ids=[f"{n}-{k}" for n, k, _ in AGREEMENT])
def test_oracle_torch_and_gradwell_agree(name, kw, rule) -> None:
    both_agree(name, kw, rule())


def test_adagrad_is_duchi_et_al() -> None:
    """Duchi et al.'s diagonal rule with delta = eps, outside the square root."""
    both_agree("Adagrad", {"lr": 0.1, "eps": 1e-3}, oracle.Adagrad(0.1, eps=1e-3))


def test_adadelta_with_lr_one_is_zeiler_algorithm_1() -> None:
    """Zeiler's paper has no learning rate; torch's lr=1.0 is exactly Algorithm 1."""
    both_agree("Adadelta", {"lr": 1.0, "rho": 0.95, "eps": 1e-6},
               oracle.Adadelta(rho=0.95, eps=1e-6))


def test_adadelta_lr_scales_the_step_but_not_the_accumulated_update() -> None:
    got = run_torch(lambda ps: gw("Adadelta")(ps, lr=0.3))
    assert_agree(got, run_oracle(oracle.Adadelta(0.9, 1e-6, 0.3)), "Adadelta lr=0.3")
    assert_differ(got, run_oracle(oracle.Adadelta(0.9, 1e-6, 0.3, accumulate_scaled=True)),
                  "accumulating the scaled step")


def test_rmsprop_is_the_lecture_rule_and_eps_sits_outside_the_root() -> None:
    """alpha=0.9, eps=0: Tieleman & Hinton's lecture 6e exactly; eps goes outside sqrt."""
    both_agree("RMSprop", {"lr": 0.01, "alpha": 0.9, "eps": 0.0}, oracle.RMSprop(0.01, 0.9, 0.0))
    got = run_torch(lambda ps: gw("RMSprop")(ps, lr=0.01, eps=1e-3))
    assert_agree(got, run_oracle(oracle.RMSprop(0.01, 0.99, 1e-3)), "RMSprop eps=1e-3")
    assert_differ(got, run_oracle(oracle.RMSprop(0.01, 0.99, 1e-3, eps_inside_sqrt=True)),
                  "eps inside the square root")


def test_adam_is_algorithm_1_not_the_efficient_form() -> None:
    got = run_torch(lambda ps: gw("Adam")(ps, lr=0.01, eps=1e-3))
    assert_agree(got, run_oracle(oracle.Adam(0.01, eps=1e-3)), "Adam Algorithm 1")
    assert_differ(got, run_oracle(oracle.Adam(0.01, eps=1e-3, efficient_form=True)),
                  "Adam Section 2 efficient form")


@pytest.mark.parametrize("betas", [(0.9, 0.999), (0.9, 0.9)])
def test_amsgrad_keeps_the_max_of_uncorrected_second_moments(betas) -> None:
    got = run_torch(lambda ps: gw("Adam")(ps, lr=0.01, betas=betas, amsgrad=True))
    assert_agree(got, run_oracle(oracle.Adam(0.01, betas, amsgrad=True)), "AMSGrad raw max")
    assert_differ(got, run_oracle(oracle.Adam(0.01, betas, amsgrad=True,
                                              amsgrad_max_of="corrected")),
                  "AMSGrad max of bias-corrected moments")


def test_adamw_weight_decay_is_lr_times_paper_lambda_under_a_schedule() -> None:
    """L&H Algorithm 2 with eta_t = cosine schedule: paper lambda = lr * torch weight_decay."""
    lr, wd = 0.01, 0.5

    def eta(t: int) -> float:   # CosineAnnealingLR(T_max=STEPS): value used at step t (1-based)
        return 0.5 * (1 + math.cos(math.pi * (t - 1) / STEPS))

    def sched(o):
        return lr_scheduler.CosineAnnealingLR(o, T_max=STEPS)

    got = run_torch(lambda ps: gw("AdamW")(ps, lr=lr, weight_decay=wd), sched)
    ref = run_torch(lambda ps: torch.optim.AdamW(ps, lr=lr, weight_decay=wd, foreach=False), sched)
    want = run_oracle(oracle.Adam(lr, decoupled_lambda=lr * wd, schedule=eta))
    assert_agree(ref, want, "oracle vs torch AdamW (self-check)")
    assert_agree(got, want, "gradwell AdamW vs L&H Algorithm 2")
    assert_differ(got, run_oracle(oracle.Adam(lr, decoupled_lambda=wd, schedule=eta)),
                  "torch's weight_decay used as the paper's lambda")


def test_nesterov_parameters_are_sutskever_look_ahead_points() -> None:
    """torch/gradwell store theta + mu v of Sutskever et al.'s NAG (Bengio et al. 2013)."""
    want = run_oracle(oracle.Momentum(0.05, 0.9, nesterov=True), lookahead=True)
    got = run_torch(lambda ps: gw("SGD")(ps, lr=0.05, momentum=0.9, nesterov=True))
    assert_agree(got, want, "Nesterov SGD vs look-ahead points")
    assert_differ(got, run_oracle(oracle.Momentum(0.05, 0.9, nesterov=True)),
                  "Nesterov SGD vs Sutskever's theta itself")


def test_dampening_spares_the_first_step() -> None:
    got = run_torch(lambda ps: gw("SGD")(ps, lr=0.05, momentum=0.9, dampening=0.5))
    assert_agree(got, run_oracle(oracle.Momentum(0.05, 0.9, 0.5)), "dampened momentum")
    assert_differ(got, run_oracle(oracle.Momentum(0.05, 0.9, 0.5, undampened_first_step=False)),
                  "dampening applied on step 1 too")
