"""The diagnosis rules: recorded statistics in, :class:`Finding` objects out.

Every rule reads only finite recorded steps (a non-finite step is the ``nonfinite`` rule's),
asks that its condition persist (``Thresholds.persist_share``), and reports the first step at
which the condition held. The rules and their literature are in ``docs/diagnosis.md``.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from .._modules import ROOT
from . import remedies
from .finding import Finding
from .thresholds import Thresholds

__all__ = ["View", "vanishing", "exploding", "nonfinite", "saturation", "dead_units"]


class View:
    """The arrays the rules need, taken once from a ``History``."""

    def __init__(self, history: Any, th: Thresholds) -> None:
        self.th, self.meta = th, history.meta
        self.steps, self.layers, self.grad = history.series("grad_norm")
        self.weight = history.series("weight_norm")[2]
        self.update = history.series("update_ratio")[2]
        self.total = history.series("total_grad_norm")[2][:, 0]
        self.finite = np.isfinite(self.total) & np.isfinite(self.grad).all(axis=1)
        info = {x["name"]: x for x in self.meta.get("layers", [])}
        used = (self.grad[self.finite] > 0).any(axis=0)   # all False when no step is finite
        #: weight matrices/kernels that received gradients, in registration order; embedding
        #: tables are lookups (only the rows of the batch's tokens get a gradient), not layers
        #: a gradient flows through, so they are left out
        self.matrix = [i for i, n in enumerate(self.layers)
                       if info.get(n, {}).get("weight_ndim", 0) >= 2 and used[i]
                       and not str(info.get(n, {}).get("type", "")).endswith("Embedding")]
        self.history = history
        with np.errstate(divide="ignore", invalid="ignore"):
            # relative gradient ||dW|| / ||W||; undefined (NaN) for a zero weight (LoRA's B)
            self.rel = np.where(self.weight > 0, self.grad / self.weight, np.nan)
        self.og_ratio = self._depth_trend(history)

    def _depth_trend(self, history: Any) -> np.ndarray | None:
        """Back-propagated gradient RMS, first hidden layer / last hidden layer, per step.

        Only for plain stacks (Glorot & Bengio's setting): in a residual or attention network a
        layer's output gradient does not pass through the layers above it in series (a query
        projection's goes through the softmax), so the ratio says nothing about depth."""
        # a layer that holds other layers (the model's own parameters, ROOT; a container with
        # a parameter of its own) outputs what its children compute: no point of the chain
        chain = [i for i in self.matrix if self.layers[i] != ROOT
                 and not any(n.startswith(self.layers[i] + ".") for n in self.layers)]
        if ("out_grad_rms" not in history.columns or len(chain) < 3
                or self.meta.get("residual") or self.meta.get("attention")):
            return None
        og = history.series("out_grad_rms")[2]
        first, last_hidden = chain[0], chain[-2]
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = og[:, first] / og[:, last_hidden]
        return ratio

    def persists(self, cond: np.ndarray) -> bool:
        """``cond`` (one bool per finite step) holds in enough of all, or of the latest, steps."""
        if cond.size == 0:
            return False
        share = self.th.persist_share
        return bool(cond.mean() >= share or cond[-self.th.window:].mean() >= share)

    def first_step(self, cond: np.ndarray) -> int:
        return int(self.steps[self.finite][np.argmax(cond)])



def _fmt(x: float) -> str:
    return f"{x:.3g}"


def _quiet(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """numpy's nan-reductions without the all-NaN-column warning (a module that never ran)."""
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        return fn(*args, **kwargs)


def reference(v: View, rel: np.ndarray) -> tuple[np.ndarray, str]:
    """Per step, the median relative gradient of the upper half of the weight layers (those
    nearest the output, in registration order): a typical layer that the gradient has
    reached, whatever the architecture (one outlier such as a 2-row embedding cannot set it)."""
    upper = rel[:, rel.shape[1] // 2:]
    n = upper.shape[1]
    return (_quiet(np.nanmedian, upper, axis=1, keepdims=True),
            f"the median of the {n} weight layers nearest the output")


def still_learning(v: View, idx: list[int], flagged: np.ndarray) -> np.ndarray:
    """Per weight layer of ``idx``: whether, over the finite steps where it is ``flagged``
    (steps x layers), its median measured update/weight ratio is at least ``vanishing_update``
    x the median of the upper half's (the reference layers of :func:`reference`) and at most
    ``update_ratio_high``. Such a layer learns at a healthy rate although its gradient is
    small: Adam's step is invariant to the gradient's scale (Kingma & Ba 2015). One that moves
    by more than ``update_ratio_high`` per step is not learning but thrashing (a post-LN
    transformer under Adam at lr 0.03: ~0.8 per step). False where no update was measured."""
    upd = v.update[v.finite][:, idx]
    out = np.zeros(len(idx), dtype=bool)
    upper = upd[:, len(idx) // 2:]
    for j in np.flatnonzero(flagged.any(axis=0)):
        rows = flagged[:, j]
        own, ref = _quiet(np.nanmedian, upd[rows, j]), _quiet(np.nanmedian, upper[rows])
        out[j] = bool(ref > 0 and v.th.vanishing_update * ref <= own <= v.th.update_ratio_high)
    return out


def vanishing(v: View) -> Finding | None:
    """Relative gradients ``vanishing_ratio`` below the reference layer's (:func:`reference`),
    or the back-propagated gradient shrinking by ``depth_trend`` from the last to the first
    hidden layer (Glorot & Bengio 2010)."""
    th, idx = v.th, v.matrix
    if len(idx) < 2 or not v.finite.any():
        return None
    rel = v.rel[v.finite][:, idx]
    ref, ref_text = reference(v, rel)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = rel / ref
    learning = still_learning(v, idx, ratio < th.vanishing_ratio)
    ratio[:, learning] = np.nan            # moved by the optimizer although their gradient is small
    by_ratio = (ratio < th.vanishing_ratio).any(axis=1)
    og = v.og_ratio[v.finite] if v.og_ratio is not None else None
    by_depth = og < 1.0 / th.depth_trend if og is not None else np.zeros_like(by_ratio)
    cond = by_ratio | by_depth
    if not v.persists(cond):
        return None
    med = _quiet(np.nanmedian, ratio, axis=0)
    affected = {v.layers[i]: float(r) for i, r in zip(idx, med) if r < th.vanishing_ratio}
    worst = v.layers[idx[int(np.nanargmin(np.where(np.isnan(med), np.inf, med)))]]
    ev: dict[str, Any] = {
        "reference": ref_text,
        "relative_grad_vs_reference": affected,
        "smallest_ratio": float(_quiet(np.nanmin, med)),
        "relative_grad": {v.layers[i]: float(x)
                          for i, x in zip(idx, _quiet(np.nanmedian, rel, axis=0))},
        "weight_layers": len(idx)}
    if learning.any():
        ev["still_learning"] = [v.layers[i] for i, k in zip(idx, learning) if k]
    criteria = []
    if v.persists(by_ratio):
        criteria.append(f"relative gradient ||g||/||w|| of {len(affected)} of {len(idx)} weight "
                        f"layers below {th.vanishing_ratio:g} x {ref_text} (smallest "
                        f"{_fmt(ev['smallest_ratio'])} x, at {worst})")
    if og is not None:
        ev["backprop_grad_first_over_last_hidden"] = float(_quiet(np.nanmedian, og))
        if v.persists(by_depth):
            criteria.append(f"back-propagated gradient RMS at the first hidden layer "
                            f"{_fmt(ev['backprop_grad_first_over_last_hidden'])} x the last "
                            f"hidden layer's (threshold 1/{th.depth_trend:g})")
    if not criteria:         # each criterion alone is below persistence, together above it
        criteria.append(f"relative gradient below {th.vanishing_ratio:g} x {ref_text} or "
                        f"back-propagated gradient shrinking {th.depth_trend:g}x with depth")
    sat = v.history.columns.get("saturated")
    if sat:
        shares = v.history.series("saturated")[2][v.finite]
        if np.isfinite(shares).any():
            per_module = _quiet(np.nanmedian, shares, axis=0)
            ev["saturated_share_max"] = float(_quiet(np.nanmax, per_module))
    ev["criteria"] = criteria
    ev["summary"] = "; ".join(criteria)
    sev = "error" if ev["smallest_ratio"] < th.vanishing_error else "warning"
    return Finding("vanishing", worst, v.first_step(cond), sev, ev,
                   remedies.for_vanishing(ev, v.meta, v.th.saturation_share))


def _spike(v: View) -> tuple[int, float] | None:
    """First finite step whose total norm is ``spike_factor`` x the median before it."""
    th, t, steps = v.th, v.total[v.finite], v.steps[v.finite]
    for k in range(th.spike_min_history, t.size):
        ref = np.median(t[max(0, k - th.spike_history):k])
        if ref > 0 and t[k] > th.spike_factor * ref:
            return int(steps[k]), float(t[k] / ref)
    return None


def exploding(v: View) -> Finding | None:
    """Relative gradients above ``exploding_relative_grad``, a back-propagated gradient that
    grows with depth, a spike or a growth of the total norm (Pascanu et al. 2013)."""
    th, idx = v.th, v.matrix
    if not v.finite.any():
        return None
    rel = v.rel[v.finite][:, idx] if idx else np.zeros((int(v.finite.sum()), 0))
    cond = (rel > th.exploding_relative_grad).any(axis=1)
    if v.og_ratio is not None:
        cond = cond | (v.og_ratio[v.finite] > th.depth_trend)
    hits: dict[str, int] = {}
    if v.persists(cond):
        hits["persistent"] = v.first_step(cond)
    spike = _spike(v)
    if spike is not None:
        hits["spike"] = spike[0]
    t = v.total[v.finite]
    growth = (float(np.median(t[-5:]) / np.median(t[:5])) if t.size >= 10 and np.median(t[:5]) > 0
              else 0.0)
    if growth > th.growth_factor:
        hits["growth"] = int(v.steps[v.finite][5])
    if not hits:
        return None
    ev = _exploding_evidence(v, rel, idx, hits, spike)
    if "growth" in hits:
        ev["growth"] = growth
    ev["summary"] = "; ".join(_exploding_texts(v, ev, hits)) + (
        f" (total gradient norm up to {_fmt(ev['total_grad_norm_max'])}, median "
        f"{_fmt(ev['total_grad_norm_median'])})")
    worst = None
    if idx:
        worst = v.layers[idx[int(_quiet(np.nanargmax, _quiet(np.nanmedian, rel, axis=0)))]]
    sev = "error" if (ev["max_relative_grad"] > 100 * th.exploding_relative_grad
                      or v.history.first_nonfinite() is not None) else "warning"
    return Finding("exploding", worst, min(hits.values()), sev, ev,
                   remedies.for_exploding(ev, v.meta))


def _exploding_evidence(v: View, rel: np.ndarray, idx: list[int], hits: dict[str, int],
                        spike: tuple[int, float] | None) -> dict[str, Any]:
    t = v.total[v.finite]
    before = t[v.steps[v.finite] < min(hits.values())]
    ev: dict[str, Any] = {
        "criteria": sorted(hits),
        "first_step": min(hits.values()),
        "total_grad_norm_median": float(np.median(t)),
        "total_grad_norm_p10": float(np.percentile(t, 10)),
        "total_grad_norm_max": float(t.max()),
        "max_relative_grad": float(_quiet(np.nanmax, rel)) if rel.size else float("nan"),
        "relative_grad": {v.layers[i]: float(x)
                          for i, x in zip(idx, _quiet(np.nanmedian, rel, axis=0))}
        if rel.size else {}}
    if before.size >= v.th.spike_min_history:
        ev["healthy_norm_p10"] = float(np.percentile(before, 10))
    upd = v.update[v.finite]
    if np.isfinite(upd).any():
        with np.errstate(divide="ignore"):
            logs = np.log10(upd[upd > 0])
            ev["log10_update_ratio_median"] = float(_quiet(np.nanmedian, logs))
    if spike is not None:
        ev["spike_step"], ev["spike_factor"] = spike
    if v.og_ratio is not None:
        og = v.og_ratio[v.finite]
        ev["backprop_grad_first_over_last_hidden"] = float(_quiet(np.nanmedian, og))
    return ev


def _exploding_texts(v: View, ev: dict[str, Any], hits: dict[str, int]) -> list[str]:
    """One text per criterion that fired: what, the measured number, the threshold."""
    th, out = v.th, []
    if "persistent" in hits:
        if ev["max_relative_grad"] > th.exploding_relative_grad:
            out.append(f"relative gradient ||g||/||w|| up to {_fmt(ev['max_relative_grad'])} "
                       f"(threshold {th.exploding_relative_grad:g})")
        trend = ev.get("backprop_grad_first_over_last_hidden")
        if trend is not None and trend > th.depth_trend:
            out.append(f"back-propagated gradient RMS at the first hidden layer {_fmt(trend)} x "
                       f"the last hidden layer's (threshold {th.depth_trend:g})")
    if "spike" in hits:
        out.append(f"total gradient norm {_fmt(ev['spike_factor'])} x the median of the steps "
                   f"before step {ev['spike_step']} (threshold {th.spike_factor:g} x)")
    if "growth" in hits:
        out.append(f"total gradient norm grew {_fmt(ev['growth'])} x from the first to the last "
                   f"5 recorded steps (threshold {th.growth_factor:g} x)")
    return out or ["relative gradient or depth trend above threshold in most steps"]


def nonfinite(v: View) -> Finding | None:
    """The first step with NaN/Inf anywhere, and where it appeared first (exact, never
    downsampled)."""
    event = v.history.first_nonfinite()
    if event is None:
        return None
    ev = {k: x for k, x in event.items() if k not in ("kind", "step")}
    place = event.get("parameter") or event.get("layer") or "the loss"
    bad = event.get("nonfinite_params", 0)
    first = (f"float32 overflow first at {place}: its outputs are finite (their mean is) but "
             "so large that their sum of squares overflows float32 (an RMS above ~1.8e19 / "
             "sqrt(values))" if event.get("where") == "overflow"
             else f"NaN/Inf first in the {event.get('where')} at {place}")
    ev["summary"] = (f"{first}; {bad} of {event.get('params', 0)} parameter gradients "
                     "non-finite" + _unreached(event, bad))
    before = v.total[v.finite & (v.steps < int(event["step"]))]
    if before.size:
        ev["preceding_median_grad_norm"] = float(np.median(before))
    boom = exploding(v)
    ev["preceded_by_exploding"] = boom is not None
    replayed = next((e for e in v.history.events if e.get("kind") == "guard"
                     and e.get("origin")), None)   # the guard replayed under gradwell.locate
    if replayed is not None:
        ev["origin"], ev["triage"] = replayed["origin"], replayed.get("triage")
        ev["summary"] += f"; guard replay ({replayed.get('triage')}): {replayed['origin']['text']}"
    return Finding("nonfinite", event.get("layer"), int(event["step"]), "error", ev,
                   remedies.for_nonfinite(ev, v.meta))


def _unreached(event: dict[str, Any], bad: int) -> str:
    """Why a non-finite statistic that reached no parameter gradient may not be a NaN/Inf."""
    if bad:
        return ""
    if event.get("where") == "backward":
        return (" (it reached no parameter: e.g. at positions an embedding's padding_idx "
                "drops, or through an op whose input needs no gradient)")
    loss = event.get("loss")
    if event.get("where") == "forward" and loss is not None and math.isfinite(loss):
        return (" and the loss finite: a later op absorbed the NaN/Inf (a mask, a norm), or "
                "the output's values are finite but so large that their float32 sum "
                "overflows (above ~3.4e38 in all)")
    return ""


def _share_rule(v: View, stat: str, limit: float,
                error: float) -> tuple[str, int, str, dict[str, float]] | None:
    if stat not in v.history.columns or not v.history.columns[stat]:
        return None
    _, names, share = v.history.series(stat)
    share = share[v.finite]
    if share.size == 0 or np.isnan(share).all():
        return None
    cond = np.nan_to_num(share, nan=0.0) > limit
    if not v.persists(cond.any(axis=1)):
        return None
    med = _quiet(np.nanmedian, share, axis=0)
    affected = {n: float(s) for n, s in zip(names, med) if s > limit}
    if not affected:
        return None
    worst = max(affected, key=affected.get)
    sev = "error" if affected[worst] > error else "warning"
    return worst, v.first_step(cond.any(axis=1)), sev, affected


def saturation(v: View) -> Finding | None:
    """Share of sigmoid/tanh outputs in the flat tails above ``saturation_share``
    (Glorot & Bengio 2010; Karpathy's |tanh| > 0.97)."""
    th = v.th
    got = _share_rule(v, "saturated", th.saturation_share, th.saturation_error)
    if got is None:
        return None
    worst, step, sev, affected = got
    kinds = {a["name"]: a["activation"] for a in v.meta.get("activations", [])}
    ev = {"saturated_share": affected, "activation": kinds.get(worst),
          "summary": f"{affected[worst]:.0%} of {kinds.get(worst)} outputs in the flat tails "
                     f"(|tanh| > 0.97 or |sigmoid - 0.5| > 0.485; threshold "
                     f"{th.saturation_share:.0%} of outputs) in {len(affected)} module(s)"}
    if v.meta.get("residual"):
        sev = "info"
        ev["summary"] += ("; the network has residual connections, which carry the gradient "
                          "past saturated units")
    return Finding("saturation", worst, step, sev, ev, remedies.for_saturation(ev, v.meta))


def dead_units(v: View) -> Finding | None:
    """Share of ReLU units that are zero over the whole batch above ``dead_share``
    (Maas et al. 2013; Lu et al. 2019)."""
    th = v.th
    got = _share_rule(v, "dead", th.dead_share, th.dead_error)
    if got is None:
        return None
    worst, step, sev, affected = got
    ev = {"dead_share": affected,
          "summary": f"{affected[worst]:.0%} of units output 0 for the whole batch "
                     f"(threshold {th.dead_share:.0%}) in {len(affected)} module(s)"}
    if affected[worst] <= th.dead_error and (v.meta.get("residual") or vanishing(v) is None):
        sev = "info"
        ev["summary"] += (f"; at most {th.dead_error:.0%} and the gradient still reaches every "
                          "weight layer (no vanishing finding)")
    return Finding("dead_units", worst, step, sev, ev, remedies.for_dead(ev, v.meta))
