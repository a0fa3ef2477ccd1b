"""Rules on the course of training rather than on one layer: divergence and blind spots.

* ``divergence`` - the learning rate is too high: the loss climbs far above its running
  minimum and above where it started and does not come back (error), or the weights move by
  far more than Karpathy's rule-of-thumb update/weight ratio of ~1e-3 per step (info alone;
  quoted in the error) (``Thresholds.divergence_factor``, ``update_ratio_high``). Wortsman et al. 2023 study exactly this failure at small scale.
* ``unobserved`` - watched modules whose hooks never fired (a monitor attached after the first
  ``torch.compile``'d call, a module that never runs): their columns are NaN; said, not hidden.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from . import remedies
from .finding import Finding
from .instability import update_cosine

__all__ = ["divergence", "unobserved"]


def _fmt(x: float) -> str:
    return f"{x:.3g}"


class LossCourse(NamedTuple):
    """Where the loss diverged (see :func:`_loss_divergence`)."""

    step: int             # the first step of the divergence (or of the first leap)
    loss: float           # the loss there
    low: float            # its running minimum before it
    first: float          # the first loss
    died: bool = False    # it came back only because every gradient became exactly 0
    leaps: int = 0        # how many leaps, when they are the criterion (else 0)
    recovered: bool = False   # leaps, but the run ends below where it started


def _loss_divergence(v: Any) -> LossCourse | None:
    """The first finite step whose loss is ``divergence_factor`` x its running minimum and
    above the first loss, when the run does not recover: the median of the last
    ``divergence_steps`` losses is still that high (against the lowest loss before them), or
    the record turns non-finite right after,
    or it came back only because every gradient became exactly 0 (``died``: a dead model, at
    chance loss, no longer learns). Otherwise *leaps* count: such steps whose loss the next
    step halves; at least ``divergence_steps`` of them, reported from the first, mean a run
    that has not learned since when the last losses are no lower than the first, and an
    unstable one (``recovered``) when it ends below where it started."""
    _, _, loss = v.history.series("loss")
    loss = loss[:, 0]
    ok = np.isfinite(loss)
    steps, loss = v.steps[ok], loss[ok]
    if loss.size < 2:
        return None
    run_min = np.minimum.accumulate(loss)[:-1]
    later = loss[1:]
    hit = (run_min > 0) & (later > v.th.divergence_factor * run_min) & (later > loss[0])
    n = min(v.th.divergence_steps, hit.size)
    broke = v.history.first_nonfinite() is not None and not v.finite[-1]
    total = v.total[v.finite]
    died = bool(hit.any() and total.size > n and (total[-n:] == 0).all() and (total > 0).any())
    # the last n losses against the lowest loss before them: one lucky batch among them
    # (a short, noisy run) cannot set the bar they are measured against
    tail, before = float(np.median(later[-n:])), float(loss[:loss.size - n].min())
    hits = np.flatnonzero(hit)
    if tail > v.th.divergence_factor * before and tail > loss[0] or (
            broke and hit[-1]) or died:
        k = int(hits[-1])
        for j in hits[::-1]:        # back to the start of the last run of hits (gaps <= n)
            if k - j > n:
                break
            k = int(j)
        return LossCourse(int(steps[k + 1]), float(later[k]), float(run_min[k]),
                          float(loss[0]), died)
    # leaps: excursions the next loss undoes by half at least (a loss that climbs and then
    # falls as training goes on, from a lucky low first batch, has none)
    nxt = hits[hits + 1 < later.size]
    leaps = nxt[later[nxt + 1] <= later[nxt] / 2]
    if leaps.size < v.th.divergence_steps:
        return None
    k = int(leaps[0])
    return LossCourse(int(steps[k + 1]), float(later[k]), float(run_min[k]), float(loss[0]),
                      leaps=int(leaps.size), recovered=tail < loss[0])


def _course(c: LossCourse, th: Any) -> str:
    """What the loss did after the step :func:`_loss_divergence` names."""
    if c.died:
        return ("; it came back only because every gradient then became exactly 0: the model "
                "died, it did not recover")
    if c.recovered:
        return (f"; {c.leaps} steps like it, each halved by the next loss: the run is unstable "
                "at this learning rate, although its last losses are below its first")
    if c.leaps:
        return (f"; {c.leaps} steps like it, and the median of the last {th.divergence_steps} "
                "losses is no lower than the first: the run has not learned since")
    return ""


def _update_too_large(v: Any) -> tuple[int, float] | None:
    """``(first step, median over measured steps of the model's update/weight ratio)`` when
    ``||delta w|| / ||w||`` over all layers with a measured ratio is above
    ``update_ratio_high`` on most measured steps (all layers together, so a layer that starts
    at zero, as LoRA's B, cannot set it)."""
    upd, w = v.update[v.finite], v.weight[v.finite]
    measured = np.isfinite(upd).any(axis=1)
    if measured.sum() < 2:
        return None
    upd, w = upd[measured], w[measured]
    ok = np.isfinite(upd) & np.isfinite(w)
    with np.errstate(invalid="ignore", divide="ignore"):
        typical = (np.sqrt(np.where(ok, (upd * w) ** 2, 0).sum(axis=1))
                   / np.sqrt(np.where(ok, w ** 2, 0).sum(axis=1)))
    high = typical > v.th.update_ratio_high
    if high.mean() < v.th.persist_share:
        return None
    first = int(v.steps[v.finite][measured][int(np.argmax(high))])
    return first, float(np.median(typical))


def divergence(v: Any) -> Finding | None:
    """The loss diverges or the updates are far too large for the weights."""
    by_loss, by_update = _loss_divergence(v), _update_too_large(v)
    if by_loss is None and by_update is None:
        return None
    th, ev, texts, steps = v.th, {}, [], []
    if by_loss is not None:
        c = by_loss
        ev.update(loss=c.loss, loss_running_min=c.low, loss_first=c.first, loss_step=c.step,
                  died=c.died, excursions=c.leaps, recovered=c.recovered)
        texts.append(f"loss {_fmt(c.loss)} at step {c.step} is {_fmt(c.loss / c.low)} x its "
                     f"running minimum {_fmt(c.low)} (threshold {th.divergence_factor:g} x) "
                     f"and above its first value {_fmt(c.first)}" + _course(c, th))
        steps.append(c.step)
    if by_update is not None:
        step, typical = by_update
        ev["update_ratio_median"] = typical
        texts.append(f"the weights move by {_fmt(typical)} of their norm per step "
                     f"(threshold {th.update_ratio_high:g}; healthy is about 1e-3, Karpathy)")
        steps.append(step)
    ev["criteria"] = texts
    ev["summary"] = "; ".join(texts)
    ev["optimizer"] = v.meta.get("optimizer")
    cos = update_cosine(v)
    if cos is not None:              # recorded with an Adam-family optimizer=: evidence only
        ev["update_cosine_median"] = cos
    # large updates alone are worth knowing (info); weights that move by more than their own
    # norm per step (10 x update_ratio_high) or a loss that leaps and recovers are a warning;
    # a loss that diverges is an error
    sev = "error" if by_loss is not None and not by_loss.recovered else (
        "warning" if by_loss is not None or by_update[1] > 10 * th.update_ratio_high
        else "info")
    return Finding("divergence", None, min(steps), sev, ev, remedies.for_divergence(ev, v.meta))


def unobserved(v: Any) -> Finding | None:
    """Watched modules with no output statistics on any recorded step."""
    if "out_mean" not in v.history.columns:
        return None
    _, names, means = v.history.series("out_mean")
    silent = [n for j, n in enumerate(names) if np.isnan(means[:, j]).all()
              and not np.isinf(means[:, j]).any()]
    # a child whose parent ran and used its weights functionally (nn.MultiheadAttention calls
    # out_proj's weight inside F.multi_head_attention_forward) is not unobserved
    fired = set(names) - set(silent)
    # a layer whose weights other modules hold (T5's ``shared``, called as each stack's
    # ``embed_tokens``) is used through them: its own forward need not run
    tied = {x["name"] for x in v.meta.get("layers", []) if x.get("tied")}
    silent = [n for n in silent if not _has_fired_ancestor(n, fired) and n not in tied]
    if not silent or v.history.first_nonfinite() is not None and len(silent) < len(names):
        return None
    ev = {"modules": silent, "watched": len(names),
          "summary": f"the forward hooks of {len(silent)} of {len(names)} watched modules never "
                     "fired, so their activation columns are empty (NaN)"}
    ran = {n for e in v.history.events_of("no_grad_forward") for n in e["modules"]}
    quiet = [n for n in silent if n in ran]
    layers = {x["name"] for x in v.meta.get("layers", [])}
    if quiet:                # they ran, without grad: no statistics, and no gradient for them
        ev["no_grad"] = quiet
        ev["summary"] = (f"{len(quiet)} of {len(names)} watched modules ran only without grad "
                         "(torch.no_grad, or inside a reentrant activation checkpoint whose "
                         "inputs need no grad), so their activation columns are empty (NaN)"
                         + ("; their parameters got no gradient" if layers & set(quiet) else ""))
    severity = "warning" if layers & set(quiet) else "info"
    return Finding("unobserved", (quiet or silent)[0], int(v.steps[0]), severity, ev,
                   remedies.for_unobserved(ev, v.meta))


def _has_fired_ancestor(name: str, fired: set[str]) -> bool:
    """Whether a watched module enclosing ``name`` (by qualified-name prefix) produced outputs."""
    parts = name.split(".")
    return any(".".join(parts[:i]) in fired for i in range(1, len(parts)))
