"""A small real training run on scikit-learn's bundled digits, with faults injected on demand."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

import gradwell

#: 400 steps of SGD (momentum 0.9, weight decay 1e-2): the final loss is stable to ~1% when a
#: few batches are left out, so a 10% criterion measures the guard, not noise.
STEPS, LR, WD = 400, 0.1, 1e-2
_DATA: tuple[torch.Tensor, torch.Tensor] | None = None


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """The 1797 8x8 digits, scaled to [0, 1] (bundled with scikit-learn: no download)."""
    global _DATA
    if _DATA is None:
        from sklearn.datasets import load_digits
        d = load_digits()
        _DATA = (torch.tensor(d.data, dtype=torch.float32) / 16.0,
                 torch.tensor(d.target, dtype=torch.int64))
    return _DATA


def make_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                         nn.Linear(64, 10))


def full_loss(model: nn.Module) -> float:
    x, y = digits()
    with torch.no_grad():
        return float(nn.functional.cross_entropy(model(x), y))


@dataclass
class Faults:
    """Which faults to inject, at which (wall-clock) iterations."""

    nan_input: tuple[int, ...] = ()
    inf_input: tuple[int, ...] = ()
    nan_loss: tuple[int, ...] = ()
    nan_grad: tuple[int, ...] = ()
    inf_grad: tuple[int, ...] = ()
    scale_input: tuple[int, ...] = ()          # inputs multiplied by 1e4
    lr_burst: tuple[int, int, float] | None = None  # (start, stop, multiplier)


@dataclass
class Run:
    model: nn.Module
    optimizer: torch.optim.Optimizer
    losses: list[float]
    statuses: list[str] = field(default_factory=list)
    guard: Any = None

    @property
    def final_loss(self) -> float:
        return full_loss(self.model)


def batches(steps: int, batch: int = 64, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    n = digits()[0].shape[0]
    order: list[torch.Tensor] = []
    while len(order) * batch < steps * batch:
        perm = torch.randperm(n, generator=gen)
        order.extend(perm[i:i + batch] for i in range(0, n - batch + 1, batch))
    return order[:steps]


def train(steps: int = STEPS, faults: Faults | None = None, guard_kwargs: dict | None = None,
          make_opt: Callable[[nn.Module], torch.optim.Optimizer] | None = None,
          lr: float = LR, skip: tuple[int, ...] = (), seed: int = 0) -> Run:
    """SGD with momentum and weight decay on digits, the learning rate decaying linearly
    (``lr * (1 - it / steps)``, set by the loop each step like many training scripts, times
    ``guard.lr_scale``). ``guard_kwargs`` None means unguarded; ``skip``: batches left out;
    ``seed`` picks the initialisation and the batch order."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add contention on a shared machine
    try:
        return _train(steps, faults or Faults(), guard_kwargs, make_opt, lr, skip, seed)
    finally:
        torch.set_num_threads(threads)


def _train(steps: int, faults: Faults, guard_kwargs: dict | None,
           make_opt: Callable[[nn.Module], torch.optim.Optimizer] | None, lr: float,
           skip: tuple[int, ...], seed: int) -> Run:
    x_all, y_all = digits()
    model = make_model(seed)
    opt = make_opt(model) if make_opt else torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9,
                                                           weight_decay=WD)
    base_lrs = [g["lr"] for g in opt.param_groups]
    guard = gradwell.guard.Guard(model, opt, **guard_kwargs) if guard_kwargs is not None else None
    run = Run(model, opt, [], guard=guard)
    for it, idx in enumerate(batches(steps, seed=seed)):
        if it in skip:
            continue
        x, y = x_all[idx].clone(), y_all[idx]
        if it in faults.nan_input:
            x[3, 10] = float("nan")
        if it in faults.inf_input:
            x[5, 20] = float("inf")
        if it in faults.scale_input:
            x = x * 1e4
        mult = 1.0 - it / steps
        if faults.lr_burst and faults.lr_burst[0] <= it < faults.lr_burst[1]:
            mult *= faults.lr_burst[2]
        scale = guard.lr_scale if guard is not None else 1.0
        for g, base in zip(opt.param_groups, base_lrs):
            g["lr"] = base * mult * scale
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x), y)
        if it in faults.nan_loss:
            loss = loss * float("nan")
        loss.backward()
        if it in faults.nan_grad:
            model[2].weight.grad[1, 1] = float("nan")
        if it in faults.inf_grad:
            model[4].weight.grad[2, 3] = float("inf")
        run.losses.append(float(loss.detach()))
        if guard is None:
            opt.step()
        else:
            run.statuses.append(guard.step(loss))
    return run


def state_copy(model: nn.Module, opt: torch.optim.Optimizer) -> dict[str, Any]:
    return {"model": copy.deepcopy(model.state_dict()), "opt": copy.deepcopy(opt.state_dict())}


def assert_same_state(a: dict[str, Any], b: dict[str, Any]) -> None:
    """Bitwise equality of two ``state_copy`` results."""
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    sa, sb = a["opt"]["state"], b["opt"]["state"]
    assert sa.keys() == sb.keys()
    for i in sa:
        assert sa[i].keys() == sb[i].keys()
        for k in sa[i]:
            va, vb = sa[i][k], sb[i][k]
            assert (torch.equal(va, vb) if isinstance(va, torch.Tensor) else va == vb), (i, k)
    ga = [{k: v for k, v in g.items()} for g in a["opt"]["param_groups"]]
    gb = [{k: v for k, v in g.items()} for g in b["opt"]["param_groups"]]
    assert ga == gb

