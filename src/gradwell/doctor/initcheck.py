"""The check at initialisation: one forward and backward pass on the first batch under
``gradwell.watch``, before any step.

Per weight matrix: the gradient norm (gradient flow, input to output), the relative gradient
``||dL/dW|| / ||W||``, and the weights' standard deviation against the two classic scales,
He et al. 2015 ``sqrt(2 / fan_in)`` (ReLU) and Glorot & Bengio 2010 ``sqrt(2 / (fan_in +
fan_out))``. Per activation module: the saturated share (sigmoid/tanh) or the dead share
(ReLU), as the monitor measures them. The findings are :mod:`gradwell.diagnose`'s on this one
step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from .. import watch
from ..diagnose import Finding
from ..nn.init import fans
from .batches import batch_loss

__all__ = ["InitCheck", "LayerScale", "check_init"]


@dataclass(frozen=True)
class LayerScale:
    """One weight matrix at initialisation."""

    name: str
    grad_norm: float
    relative_grad: float
    weight_std: float
    he_std: float
    glorot_std: float


@dataclass
class InitCheck:
    """What :func:`check_init` measured: ``layers`` (input to output), ``activations``
    (``{module: (statistic, share)}``) and the diagnosis of the step."""

    loss: float
    layers: list[LayerScale] = field(default_factory=list)
    activations: dict[str, tuple[str, float]] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)

    @property
    def gradient_span(self) -> float | None:
        """Largest over smallest relative gradient among the weight matrices (1 = even flow)."""
        rel = [x.relative_grad for x in self.layers if x.relative_grad > 0]
        return max(rel) / min(rel) if len(rel) >= 2 else None


def _scales(model: nn.Module) -> list[LayerScale]:
    out = []
    for name, p in model.named_parameters():
        if p.dim() < 2 or p.grad is None:
            continue
        fan_in, fan_out = fans(p)
        g, w = p.grad.detach().float().norm().item(), p.detach().float().norm().item()
        out.append(LayerScale(name.removesuffix(".weight"), g, g / w if w > 0 else math.inf,
                              p.detach().float().std().item() if p.numel() > 1 else 0.0,
                              math.sqrt(2.0 / fan_in), math.sqrt(2.0 / (fan_in + fan_out))))
    return out


def _activation_shares(history: Any) -> dict[str, tuple[str, float]]:
    out: dict[str, tuple[str, float]] = {}
    for stat in ("saturated", "dead"):
        if not history.columns.get(stat):
            continue
        _, names, values = history.series(stat)
        for n, v in zip(names, values[-1]):
            if np.isfinite(v):
                out[n] = (stat, float(v))
    return out


def check_init(make_model: Callable[[], nn.Module], batch: Any,
               loss_fn: Callable[..., torch.Tensor], seed: int = 0) -> InitCheck:
    """Build ``make_model()`` under ``seed`` and measure one forward/backward on ``batch``."""
    torch.manual_seed(seed)
    model = make_model()
    model.train()
    with watch.watch(model, updates=False) as mon:
        loss = batch_loss(model, batch, loss_fn)
        loss.backward()
        mon.step(loss)
        history = mon.history
        findings = list(mon.findings())
    return InitCheck(float(loss.detach()), _scales(model), _activation_shares(history), findings)
