"""ZClip: clip gradient-norm spikes detected by a z-score against running statistics.

Kumar, Owen, Roy Chowdhury & Güra 2025, "ZClip: Adaptive Spike Mitigation for LLM
Pre-Training" (arXiv:2504.02507), Algorithm 1. The first ``warmup`` finite norms are only
recorded; their mean and (population) variance start the statistics. Then, at every step, with
:math:`g_t` the global gradient norm:

.. math::

    z_t = \\frac{g_t - \\mu_{t-1}}{\\sigma_{t-1} + \\epsilon}, \\qquad
    g^\\ast_t = \\begin{cases}
        \\mu_{t-1} + \\dfrac{z_{thres}^2}{z_t}\\,\\sigma_{t-1} & z_t > z_{thres}
            \\ \\text{(reciprocal clipping)} \\\\
        g_t & \\text{otherwise}
    \\end{cases}

    g \\leftarrow g \\cdot \\frac{g^\\ast_t}{g_t + 10^{-6}} \\ \\text{(spikes only)}, \\qquad
    \\mu_t = \\alpha\\mu_{t-1} + (1-\\alpha) g^\\ast_t, \\qquad
    \\sigma^2_t = \\alpha\\sigma^2_{t-1} + (1-\\alpha)(g^\\ast_t - \\mu_t)^2

The statistics are updated with the *clipped* norm, so a spike does not inflate them. Reciprocal
clipping pulls larger outliers further down (the paper's default); ``reciprocal=False`` clips
to the threshold itself, :math:`g^\\ast_t = \\mu_{t-1} + z_{thres}\\,\\sigma_{t-1}`.

All statistics are 0-dim tensors on the gradients' device, every branch is a ``torch.where``,
so a step never reads a value back to the host. A non-finite norm leaves the statistics alone.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .base import Clipper, check_positive

__all__ = ["ZClip"]

_KEYS = ("count", "mean", "var", "warm")


class ZClip(Clipper):
    """Clip a gradient norm whose z-score against its EMA mean and variance exceeds ``z_thresh``.

    Args:
        alpha: EMA decay in (0, 1) (paper: 0.97).
        z_thresh: z-score above which a norm is a spike, > 0 (paper: 2.5).
        warmup: number of finite norms used to initialise the statistics, a positive int
            (paper: 25); nothing is clipped before.
        eps: added to the standard deviation in the z-score, > 0.
        reciprocal: clip a spike to ``mu + z_thresh**2 / z * sigma`` (paper) instead of
            ``mu + z_thresh * sigma``.
    """

    scales_globally = True

    def __init__(self, alpha: float = 0.97, z_thresh: float = 2.5, warmup: int = 25, *,
                 eps: float = 1e-6, reciprocal: bool = True) -> None:
        ok = isinstance(alpha, (int, float)) and not isinstance(alpha, bool) and 0 < alpha < 1
        if not ok:
            raise ValueError(f"alpha must be a number in (0, 1) (the EMA decay), got {alpha!r}")
        self.alpha = float(alpha)
        self.z_thresh = check_positive("z_thresh", z_thresh)
        if not isinstance(warmup, int) or isinstance(warmup, bool) or warmup < 1:
            raise ValueError(f"warmup must be a positive int (steps before clipping starts), "
                             f"got {warmup!r}")
        self.warmup = warmup
        self.eps = check_positive("eps", eps)
        self.reciprocal = bool(reciprocal)
        self._state: dict[str, Tensor] = {}

    def __call__(self, grads: list[Tensor], params: list[Tensor], norms: list[Tensor],
                 total: Tensor) -> Tensor:
        s = self._tensors(total)
        g = total.detach().to(s["mean"].dtype)
        ok = torch.isfinite(g)
        warming = s["count"] < self.warmup
        self._record_warmup(s, g, ok & warming)
        spike, clipped = self._detect(s, g, warming)
        g_eff = torch.where(spike, clipped, g)
        new_mean = self.alpha * s["mean"] + (1 - self.alpha) * g_eff
        new_var = self.alpha * s["var"] + (1 - self.alpha) * (g_eff - new_mean) ** 2
        update = ok & ~warming
        s["mean"].copy_(torch.where(update, new_mean, s["mean"]))
        s["var"].copy_(torch.where(update, new_var, s["var"]))
        s["count"].add_(ok.to(s["count"].dtype))
        filled = warming & (s["count"] == self.warmup)
        s["mean"].copy_(torch.where(filled, s["warm"].mean(), s["mean"]))
        s["var"].copy_(torch.where(filled, s["warm"].var(correction=0), s["var"]))
        factor = torch.where(spike, clipped / (g + 1e-6), torch.ones_like(g))
        return factor.to(total.dtype)

    def _detect(self, s: dict[str, Tensor], g: Tensor, warming: Tensor) -> tuple[Tensor, Tensor]:
        """(is this norm a spike, the norm it is clipped to)."""
        std = s["var"].sqrt()
        z = (g - s["mean"]) / (std + self.eps)
        spike = ~warming & (z > self.z_thresh)
        if self.reciprocal:
            clipped = s["mean"] + (self.z_thresh ** 2) * std / z
        else:
            clipped = s["mean"] + self.z_thresh * std
        return spike, clipped

    def _record_warmup(self, s: dict[str, Tensor], g: Tensor, take: Tensor) -> None:
        slot = s["count"].clamp(max=self.warmup - 1).reshape(1)
        old = s["warm"].index_select(0, slot)
        s["warm"].index_copy_(0, slot, torch.where(take, g.reshape(1), old))

    def _tensors(self, total: Tensor) -> dict[str, Tensor]:
        if not self._state:
            dtype = total.dtype if total.dtype in (torch.float32, torch.float64) else torch.float32
            dev = total.device
            self._state = {"count": torch.zeros((), dtype=torch.int64, device=dev),
                           "mean": torch.zeros((), dtype=dtype, device=dev),
                           "var": torch.zeros((), dtype=dtype, device=dev),
                           "warm": torch.zeros(self.warmup, dtype=dtype, device=dev)}
        elif self._state["mean"].device != total.device:
            self._state = {k: v.to(total.device) for k, v in self._state.items()}
        return self._state

    @property
    def stats(self) -> tuple[Tensor, Tensor]:
        """``(mean, std)`` of the gradient norm as 0-dim tensors (zeros before the first step)."""
        if not self._state:
            return torch.tensor(0.0), torch.tensor(0.0)
        return self._state["mean"].clone(), self._state["var"].sqrt()

    def state_dict(self) -> dict[str, Any]:
        return {k: v.clone() for k, v in self._state.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            self._state = {}
            return
        if set(state) != set(_KEYS):
            raise ValueError(f"ZClip state must have keys {sorted(_KEYS)}, got {sorted(state)}")
        if state["warm"].shape != (self.warmup,):
            raise ValueError(f"ZClip state was saved with warmup={state['warm'].shape[0]}, but "
                             f"this ZClip has warmup={self.warmup}")
        self._state = {k: state[k].detach().clone() for k in _KEYS}

    def __repr__(self) -> str:
        extra = "" if self.reciprocal else ", reciprocal=False"
        return (f"ZClip(alpha={self.alpha}, z_thresh={self.z_thresh}, warmup={self.warmup}"
                f"{extra})")
