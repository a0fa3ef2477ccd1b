"""Optimizer x path x clipper cases, built the same way on every rank and in the reference."""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import nn

import gradwell
from gradwell.clip import AGC, AutoClip, GlobalNorm, Value, ZClip
from gradwell.optim import Optimizer, chain, scale_by_adam

import harness

OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "SGD": lambda p, **k: gradwell.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True,
                                             weight_decay=1e-3, **k),
    "Adagrad": lambda p, **k: gradwell.optim.Adagrad(p, lr=0.05, weight_decay=1e-3, **k),
    "RMSprop": lambda p, **k: gradwell.optim.RMSprop(p, lr=0.01, momentum=0.5, centered=True,
                                                     **k),
    "Adadelta": lambda p, **k: gradwell.optim.Adadelta(p, lr=1.0, weight_decay=1e-3, **k),
    "Adam": lambda p, **k: gradwell.optim.Adam(p, lr=0.01, amsgrad=True, **k),
    "AdamW": lambda p, **k: gradwell.optim.AdamW(p, lr=0.01, **k),
}

#: fused (the default where torch has a kernel) and the foreach transformation path
PATHS: dict[str, dict[str, Any]] = {"default": {}, "foreach": {"foreach": True}}

CLIPPERS: dict[str, Callable[[nn.Module], Any]] = {
    "none": lambda m: None,
    "Value": lambda m: Value(0.02),
    "GlobalNorm": lambda m: GlobalNorm(0.1),
    "GlobalNorm-inf": lambda m: GlobalNorm(0.02, norm_type=math.inf),
    "AGC": lambda m: AGC(0.01, exclude=m[4]),
    "AutoClip": lambda m: AutoClip(50.0, history=8),
    "ZClip": lambda m: ZClip(warmup=2, z_thresh=0.5),
}


#: the fast test's share of the matrix: every optimizer, path and clipper at least once
QUICK = ["SGD/default/AGC", "Adagrad/foreach/GlobalNorm", "RMSprop/default/ZClip",
         "Adadelta/foreach/Value", "Adam/default/AutoClip", "AdamW/foreach/GlobalNorm-inf",
         "AdamW/default/none", "chain(AGC, adam)"]


def names(quick: bool = False) -> list[str]:
    """All cases, or the :data:`QUICK` share of them."""
    if quick:
        return list(QUICK)
    out = [f"{o}/{p}/{c}" for o in OPTIMIZERS for p in PATHS for c in CLIPPERS]
    return out + ["chain(AGC, adam)", "chain(GlobalNorm, adam)"]


def build(name: str, model: nn.Module) -> torch.optim.Optimizer:
    if name.startswith("chain("):
        clipper = AGC(0.01) if "AGC" in name else GlobalNorm(0.1)
        return Optimizer(model.parameters(), chain(clipper, scale_by_adam()), lr=0.01,
                         skip_nonfinite=True)
    opt, path, clip = name.split("/")
    return OPTIMIZERS[opt](model.parameters(), clip=CLIPPERS[clip](model), skip_nonfinite=True,
                           **PATHS[path])


def train(name: str, model: nn.Module, rank: int, world: int, nan_step: int | None = None,
          nan_rank: int = 1, nan_input: bool = False) -> torch.optim.Optimizer:
    """``harness.STEPS`` steps on this rank's share of each batch. At ``nan_step`` a NaN is
    written into the local gradient of the middle layer's weight on ``nan_rank`` only (in the
    reference, world 1, into the whole gradient), or with ``nan_input`` into the last example
    of the batch (on the last rank: its loss is NaN)."""
    x, y = harness.data()
    if nan_step is not None and nan_input:
        x[nan_step, -1, 0] = float("nan")
        nan_step = None
    inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    opt = build(name, inner)
    for s in range(harness.STEPS):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(harness.part(x[s], rank, world)),
                                      harness.part(y[s], rank, world))
        loss.backward()
        if s == nan_step and (rank == nan_rank or world == 1):
            g = inner[2].weight.grad
            g = g.to_local() if hasattr(g, "to_local") else g
            g.view(-1)[0] = float("nan")
        opt.step()
    return opt
