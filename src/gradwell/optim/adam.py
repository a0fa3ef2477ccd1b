"""Adam (Kingma & Ba 2015), AMSGrad (Reddi, Kale & Kumar 2018) and AdamW (Loshchilov & Hutter 2019).

Kingma & Ba 2015, "Adam: A Method for Stochastic Optimization" (ICLR), Algorithm 1:

.. math::

    m_t = \\beta_1 m_{t-1} + (1-\\beta_1) g_t, \\qquad
    v_t = \\beta_2 v_{t-1} + (1-\\beta_2) g_t^2

    u_t = \\frac{m_t / (1-\\beta_1^t)}{\\sqrt{v_t} / \\sqrt{1-\\beta_2^t} + \\epsilon}

and :math:`\\theta_t = \\theta_{t-1} - \\alpha u_t`. This is torch's form: the paper adds
:math:`\\epsilon` to :math:`\\sqrt{\\hat v_t}`, i.e. after the bias correction, exactly as here.

AMSGrad (Reddi et al. 2018, "On the Convergence of Adam and Beyond", ICLR) keeps
:math:`\\hat v^{max}_t = \\max(\\hat v^{max}_{t-1}, v_t)` and uses it in the denominator. The paper
has no bias correction; torch (and gradwell) divide the running maximum by
:math:`\\sqrt{1-\\beta_2^t}` as in Adam.

AdamW: ``Adam`` with ``decoupled_weight_decay=True`` (see :mod:`gradwell.optim.weight_decay`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from torch.optim.adam import adam as torch_adam

from ..clip.base import Clipper
from .base import Quotient, Transform, chain, check_range, scalar_steps
from .dropin import DropIn, check_betas, fused_groups
from .optimizer import GroupBatch, ParamsT
from .weight_decay import add_decayed_weights

__all__ = ["scale_by_adam", "Adam", "AdamW"]


class scale_by_adam(Transform):  # noqa: N801
    """Adam's bias-corrected moment ratio ``m_hat / (sqrt(v_hat) + eps)``; AMSGrad optional."""

    state_keys = ("step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq")

    def __init__(self, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 amsgrad: bool = False) -> None:
        self.defaults = {"betas": tuple(betas), "eps": eps, "amsgrad": amsgrad}
        self.check(self.defaults)

    def check(self, group: dict[str, Any]) -> None:
        check_betas(group["betas"])
        check_range("eps", group["eps"])

    def init(self, param: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        state = {"step": torch.zeros((), dtype=torch.float32, device=param.device),
                 "exp_avg": torch.zeros_like(param, memory_format=torch.preserve_format),
                 "exp_avg_sq": torch.zeros_like(param, memory_format=torch.preserve_format)}
        if group["amsgrad"]:
            state["max_exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        return state

    def update(self, updates: list[Tensor], states: list[dict[str, Any]], params: list[Tensor],
               group: dict[str, Any]) -> Quotient:
        beta1, beta2 = (float(b) for b in group["betas"])
        steps = [s["step"] for s in states]
        m = [s["exp_avg"] for s in states]
        v = [s["exp_avg_sq"] for s in states]
        torch._foreach_add_(steps, 1)
        torch._foreach_lerp_(m, updates, 1 - beta1)
        torch._foreach_mul_(v, beta2)
        torch._foreach_addcmul_(v, updates, updates, 1 - beta2)
        if group["amsgrad"]:
            vmax = [s["max_exp_avg_sq"] for s in states]
            torch._foreach_maximum_(vmax, v)
            v = vmax
        t = scalar_steps(steps)
        denom = torch._foreach_sqrt(v)
        torch._foreach_div_(denom, [math.sqrt(1 - beta2 ** k) for k in t])
        torch._foreach_add_(denom, group["eps"])
        torch._foreach_mul_(denom, [1 - beta1 ** k for k in t])
        return Quotient(m, list(denom))


_ADAM_COUPLED = chain(add_decayed_weights(), scale_by_adam())
_ADAM_DECOUPLED = chain(scale_by_adam(), add_decayed_weights())


class Adam(DropIn):
    """Drop-in for ``torch.optim.Adam``: same arguments and numbers, plus ``clip=`` and
    ``skip_nonfinite=``. Uses torch's fused kernel when it can, folding in the clip and skip."""

    has_fused_kernel = True

    def __init__(self, params: ParamsT, lr: float | Tensor = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0, amsgrad: bool = False, *, foreach: bool | None = None,
                 maximize: bool = False, capturable: bool = False, differentiable: bool = False,
                 fused: bool | None = None, decoupled_weight_decay: bool = False,
                 clip: Clipper | None = None, skip_nonfinite: bool = False) -> None:
        super().__init__(params, _ADAM_COUPLED, lr, clip=clip, skip_nonfinite=skip_nonfinite,
                         betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                         foreach=foreach, maximize=maximize, capturable=capturable,
                         differentiable=differentiable, fused=fused,
                         decoupled_weight_decay=decoupled_weight_decay)

    def check_group(self, group: dict[str, Any]) -> None:
        super().check_group(group)
        if group.get("foreach"):  # torch's foreach Adam cannot take Tensor hyperparameters
            for name, v in (("lr", group["lr"]), ("betas[0]", group["betas"][0]),
                            ("betas[1]", group["betas"][1])):
                if isinstance(v, Tensor):
                    raise ValueError(f"{name} as a Tensor is not supported for capturable=False "
                                     "and foreach=True; allowed: a float, or foreach=None/False")

    def _transform_for(self, group: dict[str, Any]) -> Transform:
        return _ADAM_DECOUPLED if group.get("decoupled_weight_decay") else _ADAM_COUPLED

    def _fused_kernel(self, b: GroupBatch, factor: Tensor | None,
                      found_inf: Tensor | None) -> None:
        g = b.group
        amsgrad = g["amsgrad"]
        lists = [b.params, b.grads, [s["exp_avg"] for s in b.states],
                 [s["exp_avg_sq"] for s in b.states],
                 [s["max_exp_avg_sq"] for s in b.states] if amsgrad else [],
                 [s["step"] for s in b.states]]
        beta1, beta2 = (float(x) for x in g["betas"])
        for (ps, gs, ms, vs, vmax, st), scale, inf in fused_groups(lists, factor, found_inf):
            torch_adam(ps, gs, ms, vs, vmax, st, fused=True, grad_scale=scale, found_inf=inf,
                       decoupled_weight_decay=g["decoupled_weight_decay"], amsgrad=amsgrad,
                       beta1=beta1, beta2=beta2, lr=g["lr"], weight_decay=g["weight_decay"],
                       eps=g["eps"], maximize=g["maximize"])


class AdamW(Adam):
    """Drop-in for ``torch.optim.AdamW`` (Adam with decoupled weight decay, default 0.01)."""

    def __init__(self, params: ParamsT, lr: float | Tensor = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, *, maximize: bool = False,
                 foreach: bool | None = None, capturable: bool = False,
                 differentiable: bool = False, fused: bool | None = None,
                 clip: Clipper | None = None, skip_nonfinite: bool = False) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach,
                         maximize=maximize, capturable=capturable, differentiable=differentiable,
                         fused=fused, decoupled_weight_decay=True, clip=clip,
                         skip_nonfinite=skip_nonfinite)
