"""RMSprop (Tieleman & Hinton 2012), centred (Graves 2013), with momentum: transformation and drop-in.

Tieleman & Hinton 2012, Coursera "Neural Networks for Machine Learning", lecture 6e:

.. math::

    s_t = \\alpha s_{t-1} + (1-\\alpha) g_t^2, \\qquad
    u_t = \\frac{g_t}{\\sqrt{s_t - \\bar g_t^2} + \\epsilon}

where the centred variant (Graves 2013, "Generating Sequences With Recurrent Neural Networks",
eq. 38-41) subtracts the squared running mean :math:`\\bar g_t = \\alpha\\bar g_{t-1} +
(1-\\alpha) g_t` and the plain one does not. With momentum :math:`\\mu > 0` the update is the
buffer :math:`b_t = \\mu b_{t-1} + u_t` (Graves's form).

Where torch departs from the lecture: :math:`\\epsilon` is added *outside* the square root
(:math:`\\sqrt{s_t} + \\epsilon`; many texts write :math:`\\sqrt{s_t + \\epsilon}`), and
:math:`s_0 = 0` rather than 1, so the first steps are large (no bias correction).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.optim.adam import adam as torch_adam

from ..clip.base import Clipper
from .base import Quotient, Transform, chain, check_range
from .dropin import DropIn, fused_groups, run_with_steps
from .momentum import trace
from .optimizer import GroupBatch, ParamsT
from .weight_decay import add_decayed_weights

__all__ = ["scale_by_rms", "RMSprop"]


class scale_by_rms(Transform):  # noqa: N801
    """``g / (sqrt(E[g^2] - E[g]^2 if centered else E[g^2]) + eps)``."""

    state_keys = ("step", "square_avg", "grad_avg")

    def __init__(self, alpha: float = 0.99, eps: float = 1e-8, centered: bool = False) -> None:
        self.defaults = {"alpha": alpha, "eps": eps, "centered": centered}
        self.check(self.defaults)

    def check(self, group: dict[str, Any]) -> None:
        check_range("alpha", group["alpha"])
        check_range("eps", group["eps"])

    def init(self, param: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        state = {"step": torch.zeros((), dtype=torch.float32, device=param.device),
                 "square_avg": torch.zeros_like(param, memory_format=torch.preserve_format)}
        if group["centered"]:
            state["grad_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        return state

    def update(self, updates: list[Tensor], states: list[dict[str, Any]], params: list[Tensor],
               group: dict[str, Any]) -> Quotient:
        alpha = group["alpha"]
        torch._foreach_add_([s["step"] for s in states], 1)
        sq = [s["square_avg"] for s in states]
        torch._foreach_mul_(sq, alpha)
        torch._foreach_addcmul_(sq, updates, updates, 1 - alpha)
        if group["centered"]:
            ga = [s["grad_avg"] for s in states]
            torch._foreach_lerp_(ga, updates, 1 - alpha)
            avg = torch._foreach_addcmul(sq, ga, ga, -1)
            torch._foreach_sqrt_(avg)
        else:
            avg = torch._foreach_sqrt(sq)
        torch._foreach_add_(avg, group["eps"])
        return Quotient(updates, list(avg))


_RMSPROP = chain(add_decayed_weights(), scale_by_rms(), trace(0.0))


class RMSprop(DropIn):
    """Drop-in for ``torch.optim.RMSprop``, plus ``clip=`` and ``skip_nonfinite=``.

    torch has no fused RMSprop kernel. Plain RMSprop (no momentum, not centred) on the CPU runs
    in torch's fused *Adam* kernel instead, which computes exactly RMSprop's rule when
    ``beta1 = 0`` (the first moment is the gradient itself, read and written in place) and the
    bias corrections are 1 (a step counter so large that ``alpha ** t`` is 0): one pass over
    memory instead of five, with the clip factor and the non-finite flag inside it. Otherwise
    gradwell runs ``torch._foreach_*`` ops.
    """

    has_fused_kernel = True

    def __init__(self, params: ParamsT, lr: float | Tensor = 1e-2, alpha: float = 0.99,
                 eps: float = 1e-8, weight_decay: float = 0, momentum: float = 0,
                 centered: bool = False, capturable: bool = False, foreach: bool | None = None,
                 maximize: bool = False, differentiable: bool = False, *,
                 clip: Clipper | None = None, skip_nonfinite: bool = False) -> None:
        super().__init__(params, _RMSPROP, lr, clip=clip, skip_nonfinite=skip_nonfinite,
                         alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                         centered=centered, capturable=capturable, foreach=foreach,
                         maximize=maximize, differentiable=differentiable)

    def _fusable(self, b: GroupBatch) -> bool:
        g = b.group
        return (g["momentum"] == 0 and not g["centered"] and 0 <= g["alpha"] < 1
                and b.params[0].device.type == "cpu" and super()._fusable(b))

    def _fused_kernel(self, b: GroupBatch, factor: Tensor | None,
                      found_inf: Tensor | None) -> None:
        g = b.group
        lists = [b.params, b.grads, [s["square_avg"] for s in b.states],
                 [s["step"] for s in b.states]]
        for (ps, gs, sq, st), scale, inf in fused_groups(lists, factor, found_inf):
            no_correction = [_NO_BIAS_CORRECTION] * len(ps)  # alpha ** 1e30 == 0
            run_with_steps(st, inf, lambda: torch_adam(
                ps, gs, gs, sq, [], no_correction, fused=True, grad_scale=scale, found_inf=inf,
                amsgrad=False, beta1=0.0, beta2=float(g["alpha"]), lr=g["lr"],
                weight_decay=g["weight_decay"], eps=g["eps"], maximize=g["maximize"]))


_NO_BIAS_CORRECTION = torch.tensor(1e30)
