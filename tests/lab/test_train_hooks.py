"""``run_trial(trial, hooks=Hooks(...))``: each hook's effect on the first optimizer step,
against the same step written out in plain torch."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from gradwell.lab.data import digits
from gradwell.lab.spec import parse_spec
from gradwell.lab.train import Hooks, run_trial
from gradwell.nn import MLP

LR, SEED, BATCH = 0.1, 3, 32


def _trial(steps: int = 1):
    return parse_spec({"name": "t", "base": {"depth": 2, "width": 16, "optimizer": "sgd",
                                             "lr": LR, "seed": SEED, "batch_size": BATCH},
                       "budget": {"steps": steps}, "record": {"eval_every": 100}}).trials()[0]


def _first_batch():
    d = digits()
    idx = torch.randperm(len(d.y_train), generator=torch.Generator().manual_seed(SEED))[:BATCH]
    return d.x_train[idx], d.y_train[idx]


def _run(hooks: Hooks, steps: int = 1) -> tuple[nn.Module, nn.Module]:
    """(the model as built, the model after training)."""
    kept = {}

    def prepare(model, trial):
        kept["init"], kept["model"] = copy.deepcopy(model), model

    result = run_trial(_trial(steps), hooks=Hooks(**{**hooks.__dict__, "prepare": prepare}))
    assert result.status == "done", result.error
    return kept["init"], kept["model"]


def _torch_step(model: nn.Module, objective) -> nn.Module:
    """One plain-torch SGD step on the first batch minimising ``objective(out, y)``."""
    model = copy.deepcopy(model)
    x, y = _first_batch()
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    objective(model(x), y).backward()
    opt.step()
    return model


def _assert_same(a: nn.Module, b: nn.Module, **tol) -> None:
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p, q, msg=name, **tol)


def test_no_hooks_is_one_plain_sgd_step():
    init, trained = _run(Hooks())
    _assert_same(trained, _torch_step(init, nn.functional.cross_entropy))


def test_build_replaces_the_model():
    init, trained = _run(Hooks(build=lambda cfg, data: MLP(data.n_in, data.n_out, 1, 8)))
    assert [b.linear.out_features for b in init.blocks] == [8]
    _assert_same(trained, _torch_step(init, nn.functional.cross_entropy))


def test_penalty_and_loss_weight_enter_the_objective():
    hooks = Hooks(penalty=lambda out: 0.01 * out.pow(2).mean(), loss_weight=0.5)
    init, trained = _run(hooks)
    ref = _torch_step(init, lambda out, y: 0.5 * nn.functional.cross_entropy(out, y)
                      + 0.01 * out.pow(2).mean())
    _assert_same(trained, ref)


def test_lr_factor_is_applied_from_step_one():
    seen = []

    def factor(step):
        seen.append(step)
        return 0.0 if step <= 2 else 1.0

    init, trained = _run(Hooks(lr_factor=factor), steps=2)
    _assert_same(trained, init, rtol=0, atol=0)           # steps 1 and 2 had lr 0
    assert seen[:2] == [1, 2]
    _, half = _run(Hooks(lr_factor=lambda step: 0.5))
    ref = _torch_step(init, lambda out, y: 0.5 * nn.functional.cross_entropy(out, y))
    _assert_same(half, ref)


def test_float16_gradients_underflow_and_grad_scaler_restores_them():
    """With the loss weighted by 2^-24 (its gradients below float16's range), a float16 step
    leaves the first layer nearly untouched; with GradScaler it matches the float32 step."""
    w = 2.0 ** -24
    init, fp16 = _run(Hooks(loss_weight=w, autocast=torch.float16))
    _, scaled = _run(Hooks(loss_weight=w, autocast=torch.float16, loss_scale=True))
    ref = _torch_step(init, lambda out, y: w * nn.functional.cross_entropy(out, y))
    moved = lambda m: (m.blocks[0].linear.weight - init.blocks[0].linear.weight).norm().item()
    assert moved(ref) > 0
    assert moved(fp16) < 0.1 * moved(ref)
    assert moved(scaled) == pytest.approx(moved(ref), rel=0.05)
