"""The guard's check of the objects it is given (numbers use :mod:`gradwell._checks`)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["check_models", "check_monitor", "check_has_grads", "with_grads"]


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


def check_monitor(monitor: Any, scaler: Any) -> Any:
    """``monitor`` (None or a ``gradwell.watch`` monitor); the guard's ``scaler`` becomes the
    monitor's if it has none, so a float16 run's monitor reads unscaled gradients."""
    if monitor is None:
        return None
    if not callable(getattr(getattr(monitor, "history", None), "add_event", None)):
        raise TypeError("monitor must be a gradwell.watch monitor (mon = "
                        f"gradwell.watch(model)), got {type(monitor).__qualname__}")
    if scaler is not None and getattr(monitor, "scaler", None) is None:
        monitor.scaler = scaler
    return monitor


def with_grads(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """The optimizer's parameters that have a gradient."""
    return [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]


def check_has_grads(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """:func:`with_grads`; a RuntimeError when none has one: the step would silently do
    nothing (no ``backward()`` since the last ``zero_grad``, or a second ``guard.step`` for
    one backward)."""
    params = with_grads(optimizer)
    if not params:
        raise RuntimeError("guard.step() found no gradients: call loss.backward() before "
                           "guard.step(loss), once per optimizer step")
    return params
