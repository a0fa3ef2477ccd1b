"""``lr_find``: the learning-rate range test (Smith 2017, "Cyclical Learning Rates for Training
Neural Networks", section 3.3; as in fastai's ``lr_find`` and Lightning's ``Tuner.lr_find``).

On a deep copy of the model and optimizer, train for ``steps`` mini-batches while the learning
rate grows geometrically, ``lr_i = start * (end / start) ** (i / (steps - 1))``, and record the
loss. While it runs, the loss is smoothed by a bias-corrected exponential moving average,
``m_i = beta m_{i-1} + (1 - beta) loss_i``, ``ema_i = m_i / (1 - beta ** (i + 1))``; the test
stops at the *divergence point*, the first step whose ``ema`` exceeds ``diverge`` times its
lowest value so far (or whose loss is not finite). fastai and Lightning take ``beta = 0.98``;
over 100 steps that average lags ~50 steps (4 decades of learning rate here), so gradwell uses
``beta = 0.8`` and, for the reported curve ``smoothed`` and the suggestion, runs the same
average forwards and then backwards over the losses before the divergence point (capped at
``diverge`` x the lowest): a zero-phase smoothing that does not shift the curve to the right.

Suggestion rules (``result.rule`` says which one gave ``result.suggested_lr``):

* ``"steepest"``: the learning rate where the smoothed loss falls fastest against ``log lr``
  (the most negative slope on the final descent to the minimum, which starts where the curve
  leaves its plateau by 10 % of the drop; Smith's "the loss starts decreasing quickly",
  Lightning's rule). Needs a descent of at least ``3`` points.
* ``"divergence"``: one tenth of the divergence learning rate (Smith's upper bound of the
  cyclical range, divided by the usual factor 10; without a divergence, of the lr at the
  smoothed minimum, fastai's ``minimum / 10``).

The default ``"steepest"`` falls back to ``"divergence"`` when the curve has no decreasing
stretch, and says so.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from .._checks import check_choice, check_int, check_number
from .batches import check_loader, cycle, optimizer_step
from .optimizers import OptimizerSpec, base_lrs, make_optimizer, scale_lrs

__all__ = ["lr_find", "LRFindResult", "RULES"]

RULES = ("steepest", "divergence")
_SKIP_START = 5          # the first points: the EMA has seen too few losses to mean much


@dataclass
class LRFindResult:
    """The range test's record (group 0's learning rate; the other groups kept their ratios)."""

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    divergence_lr: float | None
    suggested_lr: float
    rule: str
    explanation: str
    group_ratios: list[float] = field(default_factory=lambda: [1.0])

    def figure(self) -> Any:
        """The loss against the learning rate (log scale) with the suggestion and the
        divergence point marked: a matplotlib ``Figure`` on an Agg canvas (no pyplot)."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(7.5, 4.2), layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        ax.plot(self.lrs, self.losses, color="0.75", lw=1, label="loss")
        ax.plot(self.lrs, self.smoothed, color="C0", lw=2, label="smoothed loss")
        ax.axvline(self.suggested_lr, color="C2", ls="--",
                   label=f"suggested {self.suggested_lr:.2e} ({self.rule})")
        if self.divergence_lr is not None:
            ax.axvline(self.divergence_lr, color="C3", ls=":",
                       label=f"divergence {self.divergence_lr:.2e}")
        finite = [v for v in self.smoothed if math.isfinite(v)]
        if finite:
            lo, hi = min(finite), max(finite[0], min(finite) * 1.5)
            ax.set_ylim(lo - 0.1 * (hi - lo + 1e-12), hi + 0.25 * (hi - lo + 1e-12))
        ax.set_xscale("log")
        ax.set_xlabel("learning rate (parameter group 0)", fontsize=11)
        ax.set_ylabel("training loss", fontsize=11)
        ax.set_title("learning-rate range test (Smith 2017)", fontsize=12)
        ax.tick_params(labelsize=11)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=11)
        return fig

    def plot(self, path: str | Path) -> Path:
        """Save :meth:`figure` as a PNG; returns the path."""
        out = Path(path)
        self.figure().savefig(out, dpi=90)
        return out

    def __str__(self) -> str:
        div = f"{self.divergence_lr:.3g}" if self.divergence_lr is not None else "none"
        return (f"lr_find: suggested lr {self.suggested_lr:.3g} ({self.explanation}); "
                f"divergence at {div}; {len(self.lrs)} steps")


def _copies(model: nn.Module, optimizer: Any) -> tuple[nn.Module, torch.optim.Optimizer]:
    """Deep copies of the model and of the optimizer on the copy's parameters."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__qualname__}")
    if isinstance(optimizer, torch.optim.Optimizer):
        held = {id(p) for g in optimizer.param_groups for p in g["params"]}
        if not any(id(p) in held for p in model.parameters()):
            raise ValueError("optimizer holds none of the model's parameters: pass the optimizer "
                             "that trains this model (or a name such as 'adam')")
        try:
            return copy.deepcopy((model, optimizer))      # one memo: the copy's opt has the
        except Exception as e:                            # copy's parameters
            raise TypeError(f"lr_find could not copy the model and optimizer ({e}); pass "
                            "optimizer as a name or a factory params -> Optimizer") from e
    twin = copy.deepcopy(model)
    return twin, make_optimizer(optimizer, twin.parameters())


def _check(start: float, end: float, steps: int, beta: float, diverge: float, rule: str) -> None:
    low = check_number("start", start, 0, low_open=True)
    check_number("end", end, low, low_open=True, note=f" (above start={start!r})")
    check_int("steps", steps, 2)
    check_number("beta", beta, 0, 1, high_open=True, note=" (the loss smoothing)")
    check_number("diverge", diverge, 1, low_open=True, note=" (a factor over the lowest loss)")
    check_choice("rule", rule, RULES)


def _descent_start(smoothed: np.ndarray, lo: int) -> int:
    """Start of the final descent to the minimum at ``lo``: the last point before it still
    within 10 % (of the total drop) of the plateau level, so noise on the plateau is ignored."""
    top = float(smoothed[_SKIP_START])
    level = top - 0.1 * (top - float(smoothed[lo]))
    above = np.flatnonzero(smoothed[_SKIP_START:lo] >= level)
    return _SKIP_START + int(above[-1]) if above.size else _SKIP_START


def suggest(lrs: np.ndarray, smoothed: np.ndarray, divergence_lr: float | None,
            rule: str = "steepest") -> tuple[float, str, str]:
    """``(lr, rule used, explanation)`` for a finished test (see the module docstring)."""
    ok = np.isfinite(smoothed)
    if rule == "steepest" and ok.sum() > _SKIP_START + 2:
        lo = int(np.nanargmin(np.where(ok, smoothed, np.nan)))
        first = _descent_start(smoothed, lo)
        if lo - first >= 2:
            slope = np.gradient(smoothed[first:lo + 1], np.log10(lrs[first:lo + 1]))
            i = first + int(np.argmin(slope))
            return float(lrs[i]), "steepest", "steepest descent of the smoothed loss"
    ref, what = ((divergence_lr, "divergence lr") if divergence_lr is not None else
                 (float(lrs[int(np.nanargmin(np.where(ok, smoothed, np.nan)))])
                  if ok.any() else float(lrs[0]), "lr at the lowest smoothed loss"))
    note = "" if rule == "divergence" else " (no decreasing stretch for the steepest rule)"
    return ref / 10.0, "divergence", f"{what} / 10{note}"


def lr_find(model: nn.Module, loader: Any, loss_fn: Callable[..., torch.Tensor],
            optimizer: torch.optim.Optimizer | OptimizerSpec = "adam", *, start: float = 1e-7,
            end: float = 10.0, steps: int = 100, beta: float = 0.8, diverge: float = 4.0,
            rule: str = "steepest") -> LRFindResult:
    """The learning-rate range test (Smith 2017) on a copy of ``model``; see the module doc.

    Args:
        model: the model; it, its optimizer and torch's global random state are left exactly
            as they were (the test trains a deep copy, in train mode, under a forked RNG).
        loader: (inputs, targets) batches; re-iterated when it runs out before ``steps``.
        loss_fn: ``loss_fn(model(inputs), targets)`` -> scalar tensor.
        optimizer: the user's optimizer (copied with its state; param groups keep their lr
            ratios, group 0 follows the schedule), a name (``"adam"``, ``"sgd"``,
            ``"momentum"``, ...) or a factory ``params -> Optimizer``.
        start, end, steps: the geometric learning-rate schedule.
        beta: smoothing of the loss (see the module docstring for why not 0.98).
        diverge: stop once the smoothed loss exceeds this multiple of its minimum (4, as both).
        rule: ``"steepest"`` or ``"divergence"``.
    """
    _check(start, end, steps, beta, diverge, rule)
    check_loader(loader)
    with torch.random.fork_rng(devices=[]):
        net, opt = _copies(model, optimizer)
        base = base_lrs(opt)
        net.train()
        lrs, losses, divergence = _run(net, opt, base, cycle(loader), loss_fn,
                                       (start, end, steps, beta, diverge))
    del net, opt
    smoothed = zero_phase(np.array(losses[:-1] if divergence is not None else losses), beta,
                          diverge)
    lrs_ok = np.array(lrs[:len(smoothed)])
    lr, used, why = suggest(lrs_ok, smoothed, divergence, rule)
    return LRFindResult(lrs, losses, smoothed.tolist() + [math.nan] * (len(lrs) - len(smoothed)),
                        divergence, lr, used, why,
                        [b / base[0] for b in base])


def _run(net: nn.Module, opt: torch.optim.Optimizer, base: list[float], batches: Any,
         loss_fn: Callable[..., torch.Tensor], sched: tuple) -> tuple[list, list, Any]:
    start, end, steps, beta, diverge = sched
    lrs, losses = [], []
    avg, best = 0.0, math.inf
    for i in range(steps):
        lr = start * (end / start) ** (i / (steps - 1))
        scale_lrs(opt, lr, base)
        loss = float(optimizer_step(net, opt, next(batches), loss_fn))
        avg = beta * avg + (1 - beta) * loss
        s = avg / (1 - beta ** (i + 1))
        lrs.append(lr)
        losses.append(loss)
        if not math.isfinite(loss) or s > diverge * best:
            return lrs, losses, lr
        best = min(best, s)
    return lrs, losses, None


def _ema(x: np.ndarray, beta: float) -> np.ndarray:
    out, m = np.empty_like(x), 0.0
    for i, v in enumerate(x):
        m = beta * m + (1 - beta) * v
        out[i] = m / (1 - beta ** (i + 1))
    return out


def zero_phase(losses: np.ndarray, beta: float, cap: float) -> np.ndarray:
    """The bias-corrected EMA run forwards, then backwards (no lag), over ``losses`` capped at
    ``cap`` x their minimum."""
    if losses.size == 0:
        return losses.astype(float)
    x = np.minimum(losses.astype(float), cap * float(np.min(losses)))
    return _ema(_ema(x, beta)[::-1], beta)[::-1]
