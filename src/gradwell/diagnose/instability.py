"""Rules for the instabilities of large transformers, seen at small scale (Wortsman et al. 2023).

* ``output_logits`` - the RMS of ``log Z = logsumexp(logits)`` (``log_z_rms``, measured at the
  logits module) rose above ``Thresholds.output_log_z`` during training and stays there on
  most measured steps: output-logit divergence; remedy z-loss (PaLM, Chowdhery et al. 2022).
* ``attention_logits`` - ``max |q.k| * scale`` (``attention_logit_max``; ``scale`` the module's
  softmax scaling, ``1 / sqrt(d)`` by default) of an attention module above
  ``Thresholds.attention_logit``: attention-logit growth toward one-hot softmax
  weights (Dehghani et al. 2023; entropy collapse, Zhai et al. 2023); remedy QK-layernorm.
* ``adam_epsilon`` - with an Adam-family ``optimizer=``: more than ``Thresholds.adam_eps_share``
  of the weight-matrix coordinates have ``sqrt(v_hat) < eps``, so their updates are damped by
  epsilon (Wortsman et al. 2023, "AdamW epsilon"); the update/gradient cosine is quoted.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import remedies
from .finding import Finding
from .rules import _fmt, _quiet

__all__ = ["output_logits", "attention_logits", "adam_epsilon", "update_cosine"]


def _measured(v: Any, stat: str) -> tuple[np.ndarray, list[str], np.ndarray] | None:
    """``(steps, columns, values)`` of ``stat`` on finite steps where it was measured."""
    if not v.history.columns.get(stat):
        return None
    _, names, vals = v.history.series(stat)
    vals, steps = vals[v.finite], v.steps[v.finite]
    keep = np.isfinite(vals).any(axis=1)
    if not keep.any():
        return None
    return steps[keep], names, vals[keep]


def output_logits(v: Any) -> Finding | None:
    """``log_z_rms`` rose above ``output_log_z`` during training (it started below) and stays
    there on most measured steps. A model whose logits are that large from the first step has
    a scale problem, not a drift: that is the exploding rule's."""
    got = _measured(v, "log_z_rms")
    if got is None:
        return None
    steps, (name,), vals = got
    lz, th = vals[:, 0], v.th.output_log_z
    first = float(lz[np.isfinite(lz)][0])
    cond = np.nan_to_num(lz, nan=0.0) > th
    if first > th or not v.persists(cond):
        return None
    med, peak = float(np.nanmedian(lz)), float(np.nanmax(lz))
    ev = {"logits": name, "log_z_rms_first": first, "log_z_rms_median": med,
          "log_z_rms_max": peak, "z_loss_1e-4": 1e-4 * med ** 2,
          "summary": f"RMS of log Z = logsumexp of the logits of {name} rose from {_fmt(first)} "
                     f"to a median of {_fmt(med)}, up to {_fmt(peak)} (threshold {th:g}): the "
                     f"output logits drift away from log Z = 0; a z-loss of 1e-4 log^2 Z would "
                     f"add {_fmt(1e-4 * med ** 2)} to the loss"}
    return Finding("output_logits", name, int(steps[np.argmax(cond)]), "warning", ev,
                   remedies.for_output_logits(ev, v.meta))


def attention_logits(v: Any) -> Finding | None:
    """``attention_logit_max`` of some attention module above ``attention_logit`` on most
    measured steps."""
    got = _measured(v, "attention_logit_max")
    if got is None:
        return None
    steps, names, vals = got
    th = v.th.attention_logit
    cond = (np.nan_to_num(vals, nan=0.0) > th).any(axis=1)
    if not v.persists(cond):
        return None
    peak = _quiet(np.nanmax, vals, axis=0)
    affected = {n: float(x) for n, x in zip(names, peak) if x > th}
    worst = max(affected, key=affected.get)
    sites = {s["name"]: s for s in v.meta.get("attention_sites", [])}
    ev = {"attention_logit_max": affected, "attention_modules": len(names),
          "rotary": bool(sites.get(worst, {}).get("rotary")),
          "qk_norm": any(s.get("qk_norm") for s in sites.values()),
          "scale": sites.get(worst, {}).get("scale"),
          "summary": f"max |q.k| x scale (the softmax's logit) over sampled positions up to "
                     f"{_fmt(affected[worst])} at {worst} (threshold {th:g}) in "
                     f"{len(affected)} of {len(names)} attention modules: the softmax turns "
                     "one-hot"}
    if ev["rotary"]:
        ev["summary"] += " (q and k read before the rotary embedding, which keeps their norms)"
    return Finding("attention_logits", worst, int(steps[np.argmax(cond)]), "warning", ev,
                   remedies.for_attention_logits(ev, v.meta))


def update_cosine(v: Any) -> float | None:
    """The median over measured steps of ``cos(delta w, -g)``, or None if not recorded."""
    got = _measured(v, "update_cosine")
    return None if got is None else float(np.nanmedian(got[2][:, 0]))


def adam_epsilon(v: Any) -> Finding | None:
    """More than ``adam_eps_share`` of the weight-matrix coordinates (embedding tables left
    out: rows of tokens not in the batch get no gradient) have ``sqrt(v_hat) < eps``."""
    got = _measured(v, "adam_eps_share")
    if got is None or not v.matrix:
        return None
    steps, names, vals = got
    idx = v.matrix
    numel = {x["name"]: x.get("numel", 1) for x in v.meta.get("layers", [])}
    sizes = np.array([numel.get(names[i], 1) for i in idx], dtype=float)
    share = vals[:, idx]
    ok = np.isfinite(share)
    with np.errstate(invalid="ignore", divide="ignore"):
        total = np.where(ok, share, 0) @ sizes / (ok @ sizes)
    th = v.th.adam_eps_share
    cond = np.nan_to_num(total, nan=0.0) > th
    if not v.persists(cond):
        return None
    med = _quiet(np.nanmedian, share, axis=0)
    per_layer = {names[i]: float(x) for i, x in zip(idx, med) if x > th}
    worst = max(per_layer, key=per_layer.get) if per_layer else names[idx[int(np.nanargmax(med))]]
    ev: dict[str, Any] = {"eps_share_median": float(np.nanmedian(total)),
                          "eps_share_by_layer": per_layer, "optimizer": v.meta.get("optimizer")}
    ev["summary"] = (f"{ev['eps_share_median']:.0%} of the weight-matrix coordinates have "
                     f"sqrt(v_hat) < eps (threshold {th:.0%}): their updates are damped by "
                     "Adam's epsilon")
    cos = update_cosine(v)
    if cos is not None:
        ev["update_cosine_median"] = cos
        ev["summary"] += f"; the update's cosine with -grad is {_fmt(cos)} (median)"
    return Finding("adam_epsilon", worst, int(steps[np.argmax(cond)]), "warning", ev,
                   remedies.for_adam_epsilon(ev, v.meta))
