"""Where a non-finite value first appeared, worked out from one recorded step.

The search follows the order in which values are computed within a step, so that the first
place named is the origin and not one of the many places the NaN spread to afterwards:

1. ``weights``: a layer whose parameters already hold NaN/Inf (the previous update broke them);
2. ``forward``: the first module, in execution order, whose output is non-finite;
3. ``loss``: the loss is non-finite although every watched output was finite;
4. ``backward``: the first layer, in backward order, whose output gradient is non-finite;
5. ``gradient``: the parameter gradient nearest the loss that is non-finite;
6. ``overflow``: nothing above, but the first module whose output spread is not finite although
   its mean is: its values are all finite (a NaN/Inf value makes the mean's sum non-finite),
   only their float32 sum of squares overflowed (an RMS above ~1.8e19 / sqrt(values)).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .history import History

__all__ = ["nonfinite_event", "Screen"]

#: statistics that are NaN by design where they were not measured (sampled updates, Adam's
#: state, the loss when none was given, logit hooks): never a sign of NaN/Inf in the step, and
#: not read by :func:`nonfinite_event`, so :class:`Screen` leaves them out
SAMPLED = ("loss", "update_ratio", "adam_eps_share", "update_cosine", "log_z_rms",
           "attention_logit_max")


class Screen:
    """A cheap first look at each row: could it hold the first non-finite step? (Most rows are
    finite except for the statistics that are NaN by design: then no event is worked out.)"""

    def __init__(self, history: History) -> None:
        idx, start, self.loss_at = [], 0, None
        for stat, names in history.columns.items():
            if stat == "loss":
                self.loss_at = start
            elif stat not in SAMPLED:
                idx.extend(range(start, start + len(names)))
            start += len(names)
        self.checked = np.asarray(idx, dtype=np.int64)

    def suspect(self, row: np.ndarray, loss_given: bool) -> bool:
        loss = math.nan if self.loss_at is None else float(row[self.loss_at])
        return (not np.isfinite(row[self.checked]).all() or math.isinf(loss)
                or (math.isnan(loss) and loss_given))


def _bad(x: float) -> bool:
    return not math.isfinite(x)


def nonfinite_event(history: History, step: int, row: np.ndarray,
                    extra: dict[str, Any]) -> dict[str, Any] | None:
    """The ``{"kind": "nonfinite", ...}`` event for ``row``, or None if it is all finite."""
    rec = history.as_record(step, row)
    bad_params = [n for n, v in rec["param_grad_norm"].items() if _bad(v)]
    bad_layers = [n for n, v in rec["grad_norm"].items() if _bad(v)]
    owner = {q: x["name"] for x in history.meta.get("layers", []) for q in x["params"]}
    where, layer, param = _origin(rec, extra, bad_params, owner)
    if where is None:
        return None
    return {"kind": "nonfinite", "step": int(step), "where": where, "layer": layer,
            "parameter": param, "nonfinite_params": len(bad_params),
            "params": len(rec["param_grad_norm"]), "nonfinite_layers": bad_layers,
            "loss": rec["loss"]["loss"]}


def _origin(rec: dict[str, Any], extra: dict[str, Any], bad_params: list[str],
            owner: dict[str, str]) -> tuple[str | None, str | None, str | None]:
    for name, v in rec["weight_norm"].items():
        if _bad(v):
            return "weights", name, None
    ran = extra.get("ran", {})
    means = rec.get("out_mean", {})
    for name in extra.get("forward_order", []):
        if ran.get(name) and _bad(means.get(name, 0.0)):
            return "forward", name, None
    loss = rec["loss"]["loss"]
    if math.isinf(loss) or (math.isnan(loss) and extra.get("loss_given")):
        return "loss", None, None
    og = rec.get("out_grad_rms", {})
    for name in extra.get("backward_order", []):
        if _bad(og.get(name, 0.0)):
            return "backward", name, None
    if bad_params:
        param = bad_params[-1]                      # registration order ~ forward order
        return "gradient", owner.get(param), param
    spread = rec.get("out_std", {})
    for name in extra.get("forward_order", []):
        if ran.get(name) and _bad(spread.get(name, 0.0)):
            return "overflow", name, None
    return None, None, None
