"""Where the monitor's gradients come from: the optimizer that steps them and the loss scaler.

* **The optimizer** (``watch(model, optimizer=opt)``): its step hooks record the step; a
  gradwell optimizer that computes every gradient norm itself hands them over
  (:func:`handed_over_norms`), so monitoring costs no second pass.
* **The loss scaler** (``watch(model, scaler=scaler)``, a ``torch.amp.GradScaler``). With float16
  mixed precision the backward runs on ``scaler.scale(loss) = S * loss`` (Micikevicius et al.
  2018, "Mixed precision training"), so every gradient is the true one times the loss scale
  ``S`` (65536 by default) until ``scaler.unscale_(optimizer)`` (or ``scaler.step``) divides the
  parameter gradients by ``S``. The monitor divides what is still scaled: a parameter gradient
  norm read before the unscale by ``S`` (:func:`still_scaled`), the RMS of the gradient that
  flows back into a layer's output (taken during backward: always scaled) by ``S``. A step
  whose gradients overflow while ``S > 1`` is the scaler's business (it skips the step and
  lowers ``S``): :func:`overflowed` tells the monitor so, and no ``nonfinite`` finding is raised.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .._checks import invalid
from .layers import LayerIndex

__all__ = ["check_optimizer", "reuses_norms", "handed_over_norms", "check_scaler",
           "loss_scale", "still_scaled", "overflowed", "overflow_event"]


def check_optimizer(optimizer: Any, index: LayerIndex) -> torch.optim.Optimizer | None:
    if optimizer is None:
        return None
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError("optimizer must be a torch.optim.Optimizer (torch's or gradwell's), got "
                        f"{type(optimizer).__module__}.{type(optimizer).__qualname__}")
    held = {id(p) for g in optimizer.param_groups for p in g["params"]}
    if not any(id(p) in held for p in index.params):
        raise ValueError("optimizer holds none of the model's parameters: pass the optimizer "
                         "that trains this model")
    return optimizer


def reuses_norms(optimizer: Any) -> bool:
    """True if the gradwell optimizer computes all L2 gradient norms itself this step."""
    try:
        from ..optim.optimizer import Optimizer as GradwellOptimizer
    except ImportError:    # pragma: no cover - optim is part of the package
        return False
    if not isinstance(optimizer, GradwellOptimizer):
        return False
    clip = getattr(optimizer, "clip", None)
    if clip is not None:
        return float(getattr(clip, "norm_type", 2.0)) == 2.0
    return bool(getattr(optimizer, "skip_nonfinite", False))


def handed_over_norms(optimizer: Any, params: list[Tensor],
                      device: torch.device) -> Tensor | None:
    """The optimizer's pre-clip gradient norms of this step, one per tensor of ``params``
    (float32 on ``device``), or None when it hands none over.

    The hand-over: after ``step()`` the optimizer holds ``last_grad_norms = (params,
    per_tensor_norms, total)``, the L2 norm of every gradient it was given, computed before
    clipping (gradwell's optimizers do when they clip or skip non-finite steps). Parameters
    the optimizer does not hold get a zero norm.
    """
    last = getattr(optimizer, "last_grad_norms", None)
    if last is None:
        return None
    held, per_tensor = last[0], last[1]
    if len(held) != len(per_tensor):
        raise ValueError(f"optimizer.last_grad_norms holds {len(held)} parameters but "
                         f"{len(per_tensor)} norms; expected (params, per_tensor_norms, total)")
    pos = {id(p): i for i, p in enumerate(held)}
    zero = torch.zeros((), device=device)
    picked = [per_tensor[pos[id(p)]] if id(p) in pos else zero for p in params]
    return torch.stack([n.to(device, torch.float32) for n in picked])


_SCALER_API = ("scale", "unscale_", "step", "update", "is_enabled", "get_scale")


def check_scaler(scaler: Any) -> Any:
    """``scaler`` if it is None or a ``torch.amp.GradScaler``-like object, else a TypeError."""
    if scaler is not None and not all(callable(getattr(scaler, m, None)) for m in _SCALER_API):
        raise invalid("scaler", "None or a torch.amp.GradScaler (the one whose scale(loss) "
                      "you call backward on)", scaler, TypeError)
    return scaler


def loss_scale(scaler: Any, device: torch.device) -> Tensor | None:
    """The scale ``S`` the current backward ran with (float64 0-dim on ``device``, a copy: the
    scaler's ``update()`` changes its own in place), or None when nothing is scaled (no
    scaler, a disabled one, or one that has not scaled a loss yet). No host read."""
    if scaler is None or not scaler.is_enabled():
        return None
    get = getattr(scaler, "_get_scale_async", None)     # torch's GradScaler: no device sync
    s = get() if get is not None else scaler.get_scale()
    if s is None:
        return None
    return torch.as_tensor(s).detach().to(device, torch.float64).clone().reshape(())


def still_scaled(scaler: Any, optimizer: Any = None) -> bool:
    """Whether the parameter gradients still carry the loss scale: ``scaler.unscale_`` has not
    run for ``optimizer`` this step (for any optimizer, when ``optimizer`` is None)."""
    from torch.amp.grad_scaler import OptState
    states = getattr(scaler, "_per_optimizer_states", {})
    if optimizer is not None:
        states = {id(optimizer): states[id(optimizer)]} if id(optimizer) in states else {}
    return not any(s.get("stage") in (OptState.UNSCALED, OptState.STEPPED)
                   for s in states.values())


def overflowed(scale: float | None, total_grad_norm: float, loss: float,
               loss_given: bool) -> bool:
    """A loss-scale overflow: non-finite gradients with a finite (or not given) loss while the
    scale is above 1, which the scaler skips. With ``S <= 1`` the gradients overflow without
    any scaling, and a non-finite loss is the model's: both are real non-finite steps."""
    bad_loss = math.isinf(loss) or (math.isnan(loss) and loss_given)
    return (scale is not None and scale > 1 and not math.isfinite(total_grad_norm)
            and not bad_loss)


def overflow_event(history: Any, step: int, row: Any, extra: dict[str, Any]
                   ) -> dict[str, Any] | None:
    """The ``amp_overflow`` event of a loss-scale overflow (:func:`overflowed`) of the recorded
    ``row`` of ``step``, added to ``history``; None when the step did not overflow."""
    if extra.get("loss_scale") is None:
        return None
    if not overflowed(extra["loss_scale"], history.value(row, "total_grad_norm"),
                      history.value(row, "loss"), extra.get("loss_given", False)):
        return None
    event = {"kind": "amp_overflow", "step": int(step), "loss_scale": extra["loss_scale"],
             "summary": "the gradients overflowed float16 at loss scale "
                        f"{extra['loss_scale']:g}; the GradScaler skips the step and "
                        "lowers the scale"}
    history.add_event(event)
    return event
