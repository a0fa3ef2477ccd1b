"""Weight decay, coupled (L2 regularisation) and decoupled (AdamW).

*Coupled* (the classic L2 penalty :math:`\\tfrac{\\lambda}{2}\\lVert\\theta\\rVert^2`, added to the
gradient before any preconditioning; torch.optim's ``weight_decay`` everywhere except AdamW):

.. math:: u = g + \\lambda\\, \\theta

*Decoupled* (Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization", ICLR; Algorithm 2,
line 12), added *after* the adaptive step so that it is not rescaled by Adam's denominator:

.. math:: u = \\text{adam}(g) + \\lambda\\, \\theta \\quad\\Rightarrow\\quad
          \\theta \\leftarrow \\theta - \\eta\\,\\text{adam}(g) - \\eta\\lambda\\,\\theta

This is torch's ``AdamW`` (``param.mul_(1 - lr * weight_decay)`` first, which is the same thing).
The paper multiplies the decay by a schedule multiplier :math:`\\eta_t` only, not by the
learning rate :math:`\\alpha`; torch (and gradwell) scale it by the full learning rate.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .base import Transform, check_range

__all__ = ["add_decayed_weights"]


class add_decayed_weights(Transform):  # noqa: N801
    """``u + weight_decay * p``: coupled L2 before a preconditioner, decoupled after it.

    The position in the chain decides: ``chain(add_decayed_weights(wd), scale_by_adam())`` is
    Adam with L2 (coupled), ``chain(scale_by_adam(), add_decayed_weights(wd))`` is AdamW
    (decoupled), as in optax.

    Args:
        weight_decay: lambda >= 0.
    """

    def __init__(self, weight_decay: float = 0.0) -> None:
        self.defaults = {"weight_decay": weight_decay}
        self.check(self.defaults)

    def check(self, group: dict[str, Any]) -> None:
        check_range("weight_decay", group["weight_decay"])

    def update(self, updates: list[Tensor], states: list[dict[str, Any]], params: list[Tensor],
               group: dict[str, Any]) -> list[Tensor]:
        wd = group["weight_decay"]
        if isinstance(wd, Tensor) or wd != 0:
            return list(torch._foreach_add(updates, params, alpha=wd))
        return updates
