"""The lab's view of a trial's gradients: per-layer gradient norms and findings.

Every trial is watched. When :mod:`gradwell.watch` is available its monitor records the
statistics and produces the findings; otherwise :class:`GradRecorder` records per-layer gradient
norms itself (one ``torch._foreach_norm`` pass and one host transfer per recorded step) and
:func:`basic_findings` applies the two textbook rules (vanishing, non-finite).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

__all__ = ["layer_weights", "GradRecorder", "basic_findings", "grad_ratio"]

#: first/last-layer gradient-norm ratio below which gradients are called vanishing.
VANISHING_RATIO = 1e-4


def layer_weights(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """``(layer name, weight)`` for every matrix or filter bank, in definition (input-to-output)
    order: Linear/Conv weights and each recurrent ``weight_ih``/``weight_hh``."""
    out = []
    for name, p in model.named_parameters():
        if p.dim() >= 2:
            out.append((name.removesuffix(".weight"), p))
    return out


class GradRecorder:
    """Per-layer gradient L2 norms every ``every`` steps, kept as rows
    ``(step, layer index, layer name, "grad_norm", value)``."""

    def __init__(self, model: nn.Module, every: int = 10) -> None:
        self.layers = layer_weights(model)
        self.every = max(1, int(every))
        self.rows: list[tuple[int, int, str, str, float]] = []

    def step(self, step: int) -> None:
        """Record after ``backward()`` of step ``step`` (1-based) if it is a recorded step."""
        if (step - 1) % self.every:
            return
        grads = [p.grad if p.grad is not None else torch.zeros(()) for _, p in self.layers]
        values = torch.stack(torch._foreach_norm(grads)).tolist()
        self.rows.extend((step, i, name, "grad_norm", v)
                         for i, ((name, _), v) in enumerate(zip(self.layers, values)))

    def norms_by_step(self) -> dict[int, list[float]]:
        """``{step: [norm of layer 0, layer 1, ...]}``."""
        out: dict[int, list[float]] = {}
        for step, _, _, stat, v in self.rows:
            if stat == "grad_norm":
                out.setdefault(step, []).append(v)
        return out


def grad_ratio(norms_by_step: dict[int, list[float]]) -> float | None:
    """Median over recorded steps of ``||g_first layer|| / ||g_last layer||`` (None if nothing
    was recorded or the last layer's gradient is zero at every step)."""
    ratios = sorted(n[0] / n[-1] for n in norms_by_step.values()
                    if len(n) >= 2 and n[-1] > 0 and math.isfinite(n[0] / n[-1]))
    return ratios[len(ratios) // 2] if ratios else None


def basic_findings(recorder: GradRecorder, diverged_step: int | None) -> list[dict[str, Any]]:
    """The fallback diagnosis: ``vanishing`` when the first/last-layer gradient ratio is below
    :data:`VANISHING_RATIO` (Glorot & Bengio 2010; He et al. 2015), ``nonfinite`` on NaN/Inf."""
    findings = []
    by_step = recorder.norms_by_step()
    ratio = grad_ratio(by_step)
    if ratio is not None and ratio < VANISHING_RATIO and recorder.layers:
        findings.append({
            "kind": "vanishing", "layer": recorder.layers[0][0], "step": min(by_step),
            "severity": "error" if ratio < 1e-8 else "warning",
            "evidence": {"first_last_ratio": ratio, "threshold": VANISHING_RATIO},
            "remedies": ["use ReLU with He (kaiming) init", "add batch normalisation",
                         "add residual connections"]})
    bad = [s for s, n in by_step.items() if not all(math.isfinite(v) for v in n)]
    if bad or diverged_step is not None:
        step = min(bad) if bad else diverged_step
        findings.append({
            "kind": "nonfinite", "layer": "", "step": step, "severity": "error",
            "evidence": {"first_nonfinite_step": step},
            "remedies": ["lower the learning rate", "clip gradients (GlobalNorm)",
                         "skip non-finite steps (skip_nonfinite=True)"]})
    return findings
