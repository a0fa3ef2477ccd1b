"""Rules that turn recorded statistics into findings with evidence and remedies.

>>> findings = gradwell.diagnose.diagnose(mon.history)     # what mon.findings() returns
>>> findings = gradwell.diagnose.diagnose(gradwell.watch.load("run.jsonl"))

Rules, thresholds and their literature: ``docs/diagnosis.md``.
"""

from __future__ import annotations

from typing import Any

from . import instability, rules, training
from .finding import KINDS, SEVERITIES, Finding
from .thresholds import Thresholds

__all__ = ["diagnose", "Finding", "Thresholds", "KINDS", "SEVERITIES"]

#: every rule, in one visible table (each takes a ``rules.View`` and returns a Finding or None)
_RULES = (rules.nonfinite, training.divergence, rules.exploding, rules.vanishing,
          instability.attention_logits, instability.output_logits, rules.saturation,
          rules.dead_units, instability.adam_epsilon, training.unobserved)


def diagnose(history: Any, thresholds: Thresholds | None = None) -> list[Finding]:
    """Findings for a ``gradwell.watch.History``, errors first, then by kind and step.

    Args:
        history: ``mon.history`` or ``gradwell.watch.load(path)``.
        thresholds: rule thresholds; default ``Thresholds()``.
    """
    if thresholds is None:
        thresholds = Thresholds()
    if not isinstance(thresholds, Thresholds):
        raise TypeError("thresholds must be a gradwell.diagnose.Thresholds or None, got "
                        f"{type(thresholds).__qualname__}")
    if not hasattr(history, "series") or not hasattr(history, "meta"):
        raise TypeError("history must be a gradwell.watch.History (mon.history or "
                        f"gradwell.watch.load(path)), got {type(history).__qualname__}")
    if len(history) == 0:
        return []
    view = rules.View(history, thresholds)
    found = [f for f in (rule(view) for rule in _RULES) if f is not None]
    order = {k: i for i, k in enumerate(KINDS)}
    sev = {k: i for i, k in enumerate(SEVERITIES)}
    return sorted(found, key=lambda f: (sev[f.severity], order[f.kind], f.step))
