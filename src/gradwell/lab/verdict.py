"""Verdicts: pass criteria checked against a run's stored results.

A built-in experiment may carry a verdict function ``verdict(results, quick) -> [Criterion]``;
``gradwell lab run`` prints each criterion with the measured numbers and exits 1 when one fails.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any, Callable

from .store import Store

__all__ = ["Criterion", "Results", "Verdict"]


@dataclass(frozen=True)
class Criterion:
    """One pass criterion: the claim, what was expected, what was measured, and the outcome."""

    claim: str
    expected: str
    measured: str
    passed: bool


Verdict = Callable[["Results", bool], list[Criterion]]


def _same(stored: Any, wanted: Any) -> bool:
    """``stored == wanted``, numbers (not bools) compared to 1e-9 relative."""
    numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool)
                  for x in (stored, wanted))
    return math.isclose(stored, wanted, rel_tol=1e-9) if numbers else stored == wanted


class Results:
    """One run's trials, for verdicts: select by configuration values, take medians."""

    def __init__(self, store: Store | None, run: str,
                 trials: list[dict[str, Any]] | None = None) -> None:
        self.store, self.run = store, run
        self.trials = store.trials(run) if trials is None else trials

    @classmethod
    def of(cls, trials: list[dict[str, Any]], store: Any = None, run: str = "") -> Results:
        """Results over ``trials`` (dicts as :meth:`Store.trials` returns them); ``store``
        (anything with ``metrics(key)``) only where a verdict reads curves."""
        return cls(store, run, trials)

    def select(self, **config: Any) -> list[dict[str, Any]]:
        """Trials whose resolved config has every ``key=value`` in ``config`` (numbers equal
        to 1e-9 relative, so ``lr=0.1 * 30`` finds the stored ``3``); labels are for display
        only, never matched."""
        return [t for t in self.trials
                if all(k in t["config"] and _same(t["config"][k], v) for k, v in config.items())]

    def values(self, key: str, **config: Any) -> list[float]:
        """``summary[key]`` of the selected trials, Nones left out."""
        return [t["summary"][key] for t in self.select(**config)
                if t["summary"].get(key) is not None]

    def median(self, key: str, **config: Any) -> float | None:
        """Median of :meth:`values` (None when there are none)."""
        vals = self.values(key, **config)
        return statistics.median(vals) if vals else None

    def labels(self) -> list[str]:
        """Distinct labels in run order."""
        return list(dict.fromkeys(t["label"] for t in self.trials))
