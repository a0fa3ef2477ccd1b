"""Adadelta (Zeiler 2012), as a transformation and the ``Adadelta`` drop-in.

Zeiler 2012, "ADADELTA: An Adaptive Learning Rate Method" (arXiv:1212.5701), Algorithm 1:

.. math::

    E[g^2]_t = \\rho E[g^2]_{t-1} + (1-\\rho) g_t^2

    \\Delta_t = \\frac{\\sqrt{E[\\Delta^2]_{t-1} + \\epsilon}}{\\sqrt{E[g^2]_t + \\epsilon}}\\, g_t,
    \\qquad E[\\Delta^2]_t = \\rho E[\\Delta^2]_{t-1} + (1-\\rho) \\Delta_t^2

and :math:`\\theta_t = \\theta_{t-1} - \\eta \\Delta_t`. The paper has no learning rate: torch's
``lr=1.0`` (the default) reproduces it exactly. With another ``lr`` torch scales only the step
taken; the accumulator :math:`E[\\Delta^2]` still collects the unscaled :math:`\\Delta_t`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..clip.base import Clipper
from .base import Transform, chain, check_range
from .dropin import DropIn
from .optimizer import ParamsT
from .weight_decay import add_decayed_weights

__all__ = ["scale_by_adadelta", "Adadelta"]


class scale_by_adadelta(Transform):  # noqa: N801
    """``sqrt(E[d^2] + eps) / sqrt(E[g^2] + eps) * g``, updating both running averages."""

    state_keys = ("step", "square_avg", "acc_delta")

    def __init__(self, rho: float = 0.9, eps: float = 1e-6) -> None:
        self.defaults = {"rho": rho, "eps": eps}
        self.check(self.defaults)

    def check(self, group: dict[str, Any]) -> None:
        check_range("rho", group["rho"], 0.0, 1.0, high_open=True)
        check_range("eps", group["eps"])

    def init(self, param: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        return {"step": torch.zeros((), dtype=torch.float32, device=param.device),
                "square_avg": torch.zeros_like(param, memory_format=torch.preserve_format),
                "acc_delta": torch.zeros_like(param, memory_format=torch.preserve_format)}

    def update(self, updates: list[Tensor], states: list[dict[str, Any]], params: list[Tensor],
               group: dict[str, Any]) -> list[Tensor]:
        rho, eps = group["rho"], group["eps"]
        torch._foreach_add_([s["step"] for s in states], 1)
        sq = [s["square_avg"] for s in states]
        acc = [s["acc_delta"] for s in states]
        torch._foreach_mul_(sq, rho)
        torch._foreach_addcmul_(sq, updates, updates, 1 - rho)
        std = torch._foreach_add(sq, eps)
        delta = torch._foreach_add(acc, eps)
        torch._foreach_div_(delta, std)  # sqrt(a) / sqrt(b) as sqrt(a / b): one root, not two
        del std
        torch._foreach_sqrt_(delta)
        torch._foreach_mul_(delta, updates)
        torch._foreach_mul_(acc, rho)
        torch._foreach_addcmul_(acc, delta, delta, 1 - rho)
        return list(delta)


_ADADELTA = chain(add_decayed_weights(), scale_by_adadelta())


class Adadelta(DropIn):
    """Drop-in for ``torch.optim.Adadelta``, plus ``clip=`` and ``skip_nonfinite=``.

    torch has no fused Adadelta kernel; gradwell runs ``torch._foreach_*`` ops.
    """

    def __init__(self, params: ParamsT, lr: float | Tensor = 1.0, rho: float = 0.9,
                 eps: float = 1e-6, weight_decay: float = 0, foreach: bool | None = None, *,
                 capturable: bool = False, maximize: bool = False, differentiable: bool = False,
                 clip: Clipper | None = None, skip_nonfinite: bool = False) -> None:
        super().__init__(params, _ADADELTA, lr, clip=clip, skip_nonfinite=skip_nonfinite,
                         rho=rho, eps=eps, weight_decay=weight_decay, foreach=foreach,
                         capturable=capturable, maximize=maximize, differentiable=differentiable)
