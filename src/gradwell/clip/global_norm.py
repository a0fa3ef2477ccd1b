"""Clipping by global norm: rescale all gradients together when their joint norm is too large.

.. math:: g \\leftarrow g \\cdot \\min\\left(1, \\frac{c}{\\lVert g \\rVert_p + 10^{-6}}\\right)

where :math:`\\lVert g \\rVert_p` is the norm of all gradients concatenated. Pascanu, Mikolov &
Bengio 2013, "On the difficulty of training recurrent neural networks", Algorithm 1. The direction
of the step is kept; only its length is capped. The ``1e-6`` follows
``torch.nn.utils.clip_grad_norm_``, the numerical reference.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import Clipper, check_positive

__all__ = ["GlobalNorm"]


class GlobalNorm(Clipper):
    """Scale all gradients by ``min(1, max_norm / (total_norm + 1e-6))``.

    Args:
        max_norm: the largest allowed norm, > 0.
        norm_type: the p of the p-norm, > 0, or ``math.inf`` (the largest absolute element).
    """

    scales_globally = True

    def __init__(self, max_norm: float, norm_type: float = 2.0) -> None:
        self.max_norm = check_positive("max_norm", max_norm)
        self.norm_type = check_positive("norm_type", norm_type, allow_inf=True)

    def __call__(self, grads: list[Tensor], params: list[Tensor], norms: list[Tensor],
                 total: Tensor) -> Tensor:
        return torch.clamp(self.max_norm / (total + 1e-6), max=1.0)

    def __repr__(self) -> str:
        p = "inf" if math.isinf(self.norm_type) else self.norm_type
        return f"GlobalNorm(max_norm={self.max_norm}, norm_type={p})"
