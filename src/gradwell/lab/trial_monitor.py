"""The lab's view of a trial's gradients: :mod:`gradwell.watch` records, the lab stores.

:class:`TrialMonitor` attaches ``gradwell.watch(model, optimizer=opt, every=N)`` to a trial and
turns its history into store rows: per-weight-matrix gradient norms (stat ``grad_norm``, input to
output, the quantity of the gradient-flow plots and of the first/last-layer ratio) and every
per-module statistic the monitor keeps (``module_grad_norm``, ``weight_norm``, ``update_ratio``,
``out_grad_rms``, ``out_mean``, ``out_std``, ``saturated``, ``dead``); its findings come from
:mod:`gradwell.diagnose`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["layer_weights", "TrialMonitor", "grad_ratio", "nonfinite_finding"]

LayerRow = tuple[int, int, str, str, float]


def layer_weights(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """``(parameter name, weight)`` for every matrix or filter bank (``dim >= 2``), in definition
    (input-to-output) order: Linear/Conv weights and each recurrent ``weight_ih``/``weight_hh``."""
    return [(name, p) for name, p in model.named_parameters() if p.dim() >= 2]


def grad_ratio(norms_by_step: dict[int, list[float]]) -> float | None:
    """Median over recorded steps of ``||g_first|| / ||g_last||`` (weight matrices; None when
    nothing finite was recorded)."""
    ratios = sorted(n[0] / n[-1] for n in norms_by_step.values()
                    if len(n) >= 2 and n[-1] > 0 and math.isfinite(n[0] / n[-1]))
    return ratios[len(ratios) // 2] if ratios else None


def nonfinite_finding(step: int) -> dict[str, Any]:
    """The finding recorded when the loss became NaN/Inf between recorded steps."""
    return {"kind": "nonfinite", "layer": None, "step": step, "severity": "error",
            "evidence": {"summary": f"the loss was not finite at step {step}"},
            "remedies": ["lower the learning rate", "clip gradients (gradwell.clip.GlobalNorm)",
                         "skip non-finite steps (skip_nonfinite=True)"]}


class TrialMonitor:
    """``gradwell.watch`` on one trial, recording every ``every`` optimizer steps."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, every: int = 10
                 ) -> None:
        from .. import watch

        self.weights = [name for name, _ in layer_weights(model)]
        self.mon = watch.watch(model, optimizer=optimizer, every=max(1, int(every)))

    def close(self) -> None:
        """Record the pending step and remove the hooks."""
        self.mon.close()

    def norms_by_step(self) -> dict[int, list[float]]:
        """``{step: [gradient norm of weight matrix 0, 1, ...]}`` (steps 1-based)."""
        steps, names, values = self.mon.history.series("param_grad_norm")
        cols = [names.index(n) for n in self.weights if n in names]
        return {int(s) + 1: [float(v) for v in row[cols]] for s, row in zip(steps, values)}

    def rows(self) -> list[LayerRow]:
        """Store rows ``(step, index, layer, stat, value)`` (steps 1-based)."""
        out: list[LayerRow] = []
        for step, norms in self.norms_by_step().items():
            out += [(step, i, n.removesuffix(".weight"), "grad_norm", v)
                    for i, (n, v) in enumerate(zip(self.weights, norms))]
        hist = self.mon.history
        for stat in hist.columns:
            if stat in ("loss", "total_grad_norm", "param_grad_norm"):
                continue
            steps, names, values = hist.series(stat)
            name = "module_grad_norm" if stat == "grad_norm" else stat
            for s, row in zip(steps, values):
                out += [(int(s) + 1, i, n, name, float(v))
                        for i, (n, v) in enumerate(zip(names, row))]
        return out

    def total_norms(self) -> list[tuple[int, float]]:
        """``(step, total gradient norm)`` of every recorded step."""
        steps, _, values = self.mon.history.series("total_grad_norm")
        return [(int(s) + 1, float(v)) for s, v in zip(steps, values[:, 0])]

    def findings(self) -> list[dict[str, Any]]:
        """The diagnosis, as JSON-able dicts (steps 1-based)."""
        out = []
        for f in self.mon.findings():
            d = f.to_dict()
            d["step"] = int(d["step"]) + 1
            d["evidence"] = _jsonable(d["evidence"])
            out.append(d)
        return out


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    return x
