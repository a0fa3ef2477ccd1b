"""Argument checks for the guard: each error names the argument, the value and what is allowed."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

__all__ = ["check_int", "check_unit_interval", "check_optional_positive", "check_models"]


def check_int(name: str, value: Any, minimum: int = 1) -> int:
    """``value`` if it is an int >= ``minimum``, else ValueError."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def check_unit_interval(name: str, value: Any) -> float:
    """``value`` if it is a number in (0, 1], else ValueError."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not (ok and 0 < value <= 1):
        raise ValueError(f"{name} must be a number in (0, 1], got {value!r}")
    return float(value)


def check_optional_positive(name: str, value: Any) -> float | None:
    """``value`` if it is None or a positive finite number, else ValueError."""
    if value is None:
        return None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not (ok and 0 < value < math.inf):
        raise ValueError(f"{name} must be a positive number or None (off), got {value!r}")
    return float(value)


def check_models(model: Any, optimizer: Any, scheduler: Any, scaler: Any) -> dict[int, str]:
    """Check the objects a Guard is given; return ``id(param) -> name`` for ``model``.

    Every parameter the optimizer updates must be a parameter of ``model``: otherwise a rollback
    (which restores ``model.state_dict()``) would silently miss some of them.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__qualname__}")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError("optimizer must be a torch.optim.Optimizer (torch's or gradwell's), got "
                        f"{type(optimizer).__qualname__}")
    names = {id(p): n for n, p in model.named_parameters()}
    foreign = [p for g in optimizer.param_groups for p in g["params"] if id(p) not in names]
    if foreign:
        shapes = ", ".join(str(tuple(p.shape)) for p in foreign[:5])
        raise ValueError(
            f"optimizer updates {len(foreign)} parameter(s) that are not parameters of model "
            f"(shapes {shapes}{', ...' if len(foreign) > 5 else ''}); a rollback restores "
            "model.state_dict(), so pass the model whose parameters the optimizer updates")
    for obj, label in ((scheduler, "scheduler"), (scaler, "scaler")):
        if obj is not None and not all(hasattr(obj, m) for m in ("state_dict", "load_state_dict")):
            raise TypeError(f"{label} must have state_dict() and load_state_dict() (a torch LR "
                            f"scheduler / torch.amp.GradScaler), got {type(obj).__qualname__}")
    if scheduler is not None and getattr(scheduler, "optimizer", optimizer) is not optimizer:
        raise ValueError("scheduler drives a different optimizer than the one given to Guard")
    return names
