"""AutoClip: clip to a percentile of the gradient norms seen so far.

Seetharaman, Wichern, Pardo & Le Roux 2020, "AutoClip: Adaptive Gradient Clipping for Source
Separation Networks" (IEEE MLSP), section 2. At step :math:`t`, with the global gradient norm
:math:`\\lVert g_t\\rVert` appended to the history :math:`h = (\\lVert g_1\\rVert, \\dots,
\\lVert g_t\\rVert)`:

.. math::

    \\eta_c(t) = \\operatorname{percentile}_p(h), \\qquad
    g_t \\leftarrow g_t \\cdot
        \\min\\left(1, \\frac{\\eta_c(t)}{\\lVert g_t\\rVert + 10^{-6}}\\right)

The percentile interpolates linearly (``numpy.percentile``'s default), and the scaling is
``torch.nn.utils.clip_grad_norm_``'s, as in the paper's code. The paper keeps the whole history;
gradwell keeps the last ``history`` norms in a preallocated ring buffer on the gradients' device
(bounded memory; empty slots hold NaN and ``torch.nanquantile`` ignores them), so a step reads
nothing back to the host. A non-finite norm is not recorded.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .._checks import check_int, check_number
from .base import Clipper

__all__ = ["AutoClip"]


class AutoClip(Clipper):
    """Scale gradients down to the ``percentile``-th percentile of the recent norm history.

    Args:
        percentile: p in (0, 100]; the paper finds p = 10 works across tasks.
        history: how many recent norms are kept (a positive int); the paper keeps all of them.
            The quantile costs O(history) per step.
    """

    scales_globally = True
    stateful = True

    def __init__(self, percentile: float = 10.0, history: int = 1000) -> None:
        self.percentile = check_number("percentile", percentile, 0, 100, low_open=True)
        self.history = check_int("history", history, 1, " (how many norms to keep)")

    def __call__(self, grads: list[Tensor], params: list[Tensor], norms: list[Tensor],
                 total: Tensor, state: dict[str, Any] | None = None) -> Tensor:
        buf, pos = self._buffers(self.own_state(state), total)
        value = total.detach().reshape(1).to(buf.dtype)
        ok = torch.isfinite(value)
        slot = pos.reshape(1)
        buf.index_copy_(0, slot, torch.where(ok, value, buf.index_select(0, slot)))
        pos.add_(ok.reshape(()).to(pos.dtype)).remainder_(self.history)
        threshold = torch.nanquantile(buf, self.percentile / 100.0).to(total.dtype)
        return torch.clamp(threshold / (total + 1e-6), max=1.0)

    def _buffers(self, state: dict[str, Any], total: Tensor) -> tuple[Tensor, Tensor]:
        """The ring buffer of norms (NaN where empty) and the int64 index of the next slot."""
        if "history" not in state:
            dtype = total.dtype if total.dtype in (torch.float32, torch.float64) else torch.float32
            state["history"] = torch.full((self.history,), math.nan, dtype=dtype,
                                          device=total.device)
            state["pos"] = torch.zeros((), dtype=torch.int64, device=total.device)
        elif state["history"].device != total.device:
            state["history"] = state["history"].to(total.device)
            state["pos"] = state["pos"].to(total.device)
        return state["history"], state["pos"]

    def recorded(self, state: dict[str, Any] | None = None) -> Tensor:
        """The norms recorded in ``state`` (default: the clipper's own), oldest first (reads
        the buffer). An optimizer's state for its ``clip=``: ``opt.clip_state["clip"]``."""
        state = self.own_state(state)
        if "history" not in state:
            return torch.empty(0)
        rolled = torch.roll(state["history"], -int(state["pos"]))
        return rolled[~torch.isnan(rolled)].clone()

    @property
    def norms(self) -> Tensor:
        """The norms recorded by calls without ``state=``, oldest first."""
        return self.recorded()

    def check_state(self, state: dict[str, Any]) -> dict[str, Any]:
        if not state:
            return {}
        if set(state) != {"history", "pos"}:
            raise ValueError("AutoClip state must have keys ['history', 'pos'], got "
                             f"{sorted(state)}")
        buf = state["history"]
        if buf.shape != (self.history,):
            raise ValueError(f"AutoClip state holds a history of {tuple(buf.shape)}, but this "
                             f"AutoClip has history={self.history}")
        return {"history": buf.detach().clone(),
                "pos": state["pos"].detach().clone().to(buf.device)}

    def __repr__(self) -> str:
        return f"AutoClip(percentile={self.percentile}, history={self.history})"
