"""The optimizers ``lr_find`` and ``doctor`` build by name: a visible table of gradwell's
drop-ins with their usual starting learning rates."""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch

from .. import optim as goptim
from .._checks import invalid, one_of
from ..watch.adam import is_adam

__all__ = ["OPTIMIZERS", "make_optimizer", "OptimizerSpec", "adam_eps", "set_eps"]

#: name -> (gradwell drop-in, its keyword arguments including the default ``lr``)
OPTIMIZERS: dict[str, tuple[type, dict[str, Any]]] = {
    "adam": (goptim.Adam, {"lr": 1e-3}),
    "adamw": (goptim.AdamW, {"lr": 1e-3}),
    "sgd": (goptim.SGD, {"lr": 0.01}),
    "momentum": (goptim.SGD, {"lr": 0.01, "momentum": 0.9}),
    "nesterov": (goptim.SGD, {"lr": 0.01, "momentum": 0.9, "nesterov": True}),
    "rmsprop": (goptim.RMSprop, {"lr": 1e-3}),
}

OptimizerSpec = str | Callable[[Iterable[torch.Tensor]], torch.optim.Optimizer]


def make_optimizer(spec: OptimizerSpec, params: Iterable[torch.Tensor], *,
                   lr: float | None = None, clip: Any = None) -> torch.optim.Optimizer:
    """Build ``spec`` (a name of :data:`OPTIMIZERS`, or ``factory(params) -> Optimizer``).

    ``lr``, if given, replaces the learning rate of every group (a factory's groups are scaled
    together: their ratios stay); ``clip`` is passed to a named optimizer as ``clip=``; with a
    factory it must be None.
    """
    if isinstance(spec, str):
        if spec not in OPTIMIZERS:
            raise invalid("optimizer", one_of(OPTIMIZERS) + " or a function params -> "
                          "torch.optim.Optimizer", spec)
        cls, kw = OPTIMIZERS[spec]
        return cls(params, **{**kw, **({"lr": lr} if lr is not None else {})}, clip=clip)
    if not callable(spec):
        raise invalid("optimizer", one_of(OPTIMIZERS) + " or a function params -> "
                      "torch.optim.Optimizer", spec, TypeError)
    if clip is not None:
        raise ValueError("clip= needs a named optimizer (gradwell's drop-ins take clip=); "
                         "build the clipper into your optimizer factory instead")
    opt = spec(params)
    if not isinstance(opt, torch.optim.Optimizer):
        raise TypeError("the optimizer factory must return a torch.optim.Optimizer, got "
                        f"{type(opt).__qualname__}")
    if lr is not None:
        scale_lrs(opt, lr)
    return opt


def base_lrs(opt: torch.optim.Optimizer) -> list[float]:
    """Each group's learning rate; the first must be positive (the others are scaled by it)."""
    lrs = [float(g["lr"]) for g in opt.param_groups]
    if not lrs or lrs[0] <= 0:
        raise ValueError("the optimizer's first parameter group needs a positive lr (the "
                         f"others are scaled relative to it); got {lrs[:1]}")
    return lrs


def scale_lrs(opt: torch.optim.Optimizer, lr: float, base: list[float] | None = None) -> None:
    """Set group 0's lr to ``lr`` and every other group's in proportion (``base`` ratios)."""
    base = base or base_lrs(opt)
    for g, b in zip(opt.param_groups, base):
        g["lr"] = lr * b / base[0]


def adam_eps(opt: torch.optim.Optimizer) -> float | None:
    """The largest ``eps`` of ``opt``'s groups when it is of the Adam family (every group has
    ``betas`` and ``eps``: torch's and gradwell's Adam, AdamW, NAdam, RAdam ...), else None."""
    if not is_adam(opt):
        return None
    return max(float(g["eps"]) for g in opt.param_groups)


def set_eps(opt: torch.optim.Optimizer, eps: float) -> None:
    """Set Adam's epsilon of every parameter group (read at each step, as ``lr`` is)."""
    if adam_eps(opt) is None:
        raise ValueError(f"eps={eps:g} needs an Adam-family optimizer (groups with betas and "
                         f"eps); got {type(opt).__qualname__}")
    for g in opt.param_groups:
        g["eps"] = eps
