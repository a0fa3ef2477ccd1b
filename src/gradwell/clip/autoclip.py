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

    def __init__(self, percentile: float = 10.0, history: int = 1000) -> None:
        ok = (isinstance(percentile, (int, float)) and not isinstance(percentile, bool)
              and not math.isnan(percentile) and 0 < percentile <= 100)
        if not ok:
            raise ValueError(f"percentile must be a number in (0, 100], got {percentile!r}")
        if not isinstance(history, int) or isinstance(history, bool) or history < 1:
            raise ValueError(f"history must be a positive int (how many norms to keep), "
                             f"got {history!r}")
        self.percentile = float(percentile)
        self.history = history
        self._buf: Tensor | None = None   # ring buffer of norms, NaN where empty
        self._pos: Tensor | None = None   # int64 index of the next slot

    def __call__(self, grads: list[Tensor], params: list[Tensor], norms: list[Tensor],
                 total: Tensor) -> Tensor:
        buf, pos = self._buffers(total)
        value = total.detach().reshape(1).to(buf.dtype)
        ok = torch.isfinite(value)
        slot = pos.reshape(1)
        buf.index_copy_(0, slot, torch.where(ok, value, buf.index_select(0, slot)))
        pos.add_(ok.reshape(()).to(pos.dtype)).remainder_(self.history)
        threshold = torch.nanquantile(buf, self.percentile / 100.0).to(total.dtype)
        return torch.clamp(threshold / (total + 1e-6), max=1.0)

    def _buffers(self, total: Tensor) -> tuple[Tensor, Tensor]:
        if self._buf is None or self._buf.device != total.device:
            dtype = total.dtype if total.dtype in (torch.float32, torch.float64) else torch.float32
            if self._buf is None:
                self._buf = torch.full((self.history,), math.nan, dtype=dtype,
                                       device=total.device)
                self._pos = torch.zeros((), dtype=torch.int64, device=total.device)
            else:
                self._buf = self._buf.to(total.device)
                self._pos = self._pos.to(total.device)  # type: ignore[union-attr]
        return self._buf, self._pos  # type: ignore[return-value]

    @property
    def norms(self) -> Tensor:
        """The recorded norms, oldest first (a copy; reads the buffer)."""
        if self._buf is None:
            return torch.empty(0)
        rolled = torch.roll(self._buf, -int(self._pos))  # type: ignore[arg-type]
        return rolled[~torch.isnan(rolled)].clone()

    def state_dict(self) -> dict[str, Any]:
        if self._buf is None:
            return {}
        return {"history": self._buf.clone(), "pos": self._pos.clone()}  # type: ignore[union-attr]

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            self._buf = self._pos = None
            return
        if set(state) != {"history", "pos"}:
            raise ValueError("AutoClip state must have keys ['history', 'pos'], got "
                             f"{sorted(state)}")
        buf = state["history"]
        if buf.shape != (self.history,):
            raise ValueError(f"AutoClip state holds a history of {tuple(buf.shape)}, but this "
                             f"AutoClip has history={self.history}")
        self._buf = buf.detach().clone()
        self._pos = state["pos"].detach().clone().to(buf.device)

    def __repr__(self) -> str:
        return f"AutoClip(percentile={self.percentile}, history={self.history})"
