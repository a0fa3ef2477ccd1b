"""ZClip: clip gradient-norm spikes detected by a z-score against running statistics.

Kumar, Owen, Roy Chowdhury & Güra 2025, "ZClip: Adaptive Spike Mitigation for LLM
Pre-Training" (arXiv:2504.02507), Algorithm 1. The norms of the first ``warmup`` steps are only
recorded; their mean and (population) variance start the statistics (non-finite norms among them
are left out). Then, at every step, with
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

All statistics are 0-dim tensors on the gradients' device and every branch after warmup is a
``torch.where`` (about twenty scalar ops a step), so a step never reads a value back to the
host. A non-finite norm leaves the statistics alone. The EMAs are written as
``torch.lerp(mu, g, 1 - alpha)``, the same update.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .._checks import check_int, check_number
from .base import Clipper, check_positive

__all__ = ["ZClip"]

_KEYS = ("step", "mean", "var", "warm")


class ZClip(Clipper):
    """Clip a gradient norm whose z-score against its EMA mean and variance exceeds ``z_thresh``.

    Args:
        alpha: EMA decay in (0, 1) (paper: 0.97).
        z_thresh: z-score above which a norm is a spike, > 0 (paper: 2.5).
        warmup: steps whose norms initialise the statistics, a positive int (paper: 25);
            nothing is clipped before.
        eps: added to the standard deviation in the z-score, > 0.
        reciprocal: clip a spike to ``mu + z_thresh**2 / z * sigma`` (paper) instead of
            ``mu + z_thresh * sigma``.
    """

    scales_globally = True
    stateful = True

    def __init__(self, alpha: float = 0.97, z_thresh: float = 2.5, warmup: int = 25, *,
                 eps: float = 1e-6, reciprocal: bool = True) -> None:
        self.alpha = check_number("alpha", alpha, 0, 1, low_open=True, high_open=True,
                                  note=" (the EMA decay)")
        self.z_thresh = check_positive("z_thresh", z_thresh)
        self.warmup = check_int("warmup", warmup, 1, " (steps before clipping starts)")
        self.eps = check_positive("eps", eps)
        self.reciprocal = bool(reciprocal)

    def __call__(self, grads: list[Tensor], params: list[Tensor], norms: list[Tensor],
                 total: Tensor, state: dict[str, Any] | None = None) -> Tensor:
        s = self._tensors(self.own_state(state), total)
        g = total.detach().to(s["mean"].dtype)
        s["step"] += 1  # a Python int: the warm-up branch is decided without a host read
        if s["step"] <= self.warmup:
            return self._warm_up(s, g).to(total.dtype)
        std = s["var"].sqrt()
        z = (g - s["mean"]) / (std + self.eps)
        spike = z > self.z_thresh  # False for a NaN norm
        if self.reciprocal:
            clipped = s["mean"] + (self.z_thresh ** 2) * std / z
        else:
            clipped = s["mean"] + self.z_thresh * std
        g_eff = torch.where(spike, clipped, g)
        ok = torch.isfinite(g)
        new_mean = torch.lerp(s["mean"], g_eff, 1 - self.alpha)
        new_var = torch.lerp(s["var"], (g_eff - new_mean).square(), 1 - self.alpha)
        s["mean"].copy_(torch.where(ok, new_mean, s["mean"]))
        s["var"].copy_(torch.where(ok, new_var, s["var"]))
        return torch.where(spike, clipped / (g + 1e-6), 1.0).to(total.dtype)

    def _warm_up(self, s: dict[str, Any], g: Tensor) -> Tensor:
        """Record the norm; after the last warmup step, start the statistics from the record."""
        warm = s["warm"]
        warm[s["step"] - 1].copy_(torch.where(torch.isfinite(g), g, math.nan))
        if s["step"] == self.warmup:
            finite = ~torch.isnan(warm)
            n = finite.sum().clamp(min=1)
            mean = torch.where(finite, warm, 0.0).sum() / n
            s["mean"].copy_(mean)
            s["var"].copy_(torch.where(finite, (warm - mean).square(), 0.0).sum() / n)
        return torch.ones_like(g)

    def _tensors(self, s: dict[str, Any], total: Tensor) -> dict[str, Any]:
        if not s:
            dtype = total.dtype if total.dtype in (torch.float32, torch.float64) else torch.float32
            dev = total.device
            s.update(step=0, mean=torch.zeros((), dtype=dtype, device=dev),
                     var=torch.zeros((), dtype=dtype, device=dev),
                     warm=torch.full((self.warmup,), math.nan, dtype=dtype, device=dev))
        elif s["mean"].device != total.device:
            s.update({k: s[k].to(total.device) for k in ("mean", "var", "warm")})
        return s

    def statistics(self, state: dict[str, Any] | None = None) -> tuple[Tensor, Tensor]:
        """``(mean, std)`` of the gradient norm in ``state`` (default: the clipper's own) as
        0-dim tensors, zeros before the first step."""
        s = self.own_state(state)
        if not s:
            return torch.tensor(0.0), torch.tensor(0.0)
        return s["mean"].clone(), s["var"].sqrt()

    @property
    def stats(self) -> tuple[Tensor, Tensor]:
        """``(mean, std)`` from calls without ``state=``."""
        return self.statistics()

    def check_state(self, state: dict[str, Any]) -> dict[str, Any]:
        if not state:
            return {}
        if set(state) != set(_KEYS):
            raise ValueError(f"ZClip state must have keys {sorted(_KEYS)}, got {sorted(state)}")
        if state["warm"].shape != (self.warmup,):
            raise ValueError(f"ZClip state was saved with warmup={state['warm'].shape[0]}, but "
                             f"this ZClip has warmup={self.warmup}")
        return {"step": int(state["step"]),
                **{k: state[k].detach().clone() for k in _KEYS if k != "step"}}

    def __repr__(self) -> str:
        extra = "" if self.reciprocal else ", reciprocal=False"
        return (f"ZClip(alpha={self.alpha}, z_thresh={self.z_thresh}, warmup={self.warmup}"
                f"{extra})")
