"""Honest verdicts: a candidate *helps* only when its median score over at least
:data:`MIN_SEEDS` seeds beats the baseline's median by more than the seeds' spread.

``spread`` is the larger of the two ranges (max - min over seeds) of the baseline's and the
candidate's scores: the difference seeds alone make. ``improvement`` is the baseline's median
minus the candidate's (for a maximised metric, the other way round), so positive is better.
The bar a change must clear is ``max(spread, RELATIVE_FLOOR * |baseline median|)``: three
seeds of a run stuck at chance agree to 1e-4, and a 0.03 % "gain" there is no remedy.

* ``improvement > bar`` -> ``"helps"``;
* ``improvement < -bar`` -> ``"hurts"``;
* otherwise -> ``"no measurable change"``.

A candidate that diverged on a seed scores ``inf`` there (its median may still be finite);
one whose median is not finite hurts when the baseline's is finite.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

__all__ = ["Comparison", "compare", "seed_range", "VERDICTS", "MIN_SEEDS", "RELATIVE_FLOOR"]

VERDICTS = ("helps", "no measurable change", "hurts")
MIN_SEEDS = 3
#: the smallest change called measurable, as a share of the baseline's median score
RELATIVE_FLOOR = 0.01


@dataclass(frozen=True)
class Comparison:
    """A candidate's scores against the baseline's."""

    verdict: str
    improvement: float
    spread: float
    median: float
    baseline_median: float


def seed_range(xs: list[float]) -> float:
    """max - min over seeds (inf when a seed's score is not finite)."""
    finite = [x for x in xs if math.isfinite(x)]
    return max(finite) - min(finite) if len(finite) == len(xs) and xs else math.inf


def compare(baseline: list[float], scores: list[float], maximize: bool = False) -> Comparison:
    """The verdict of ``scores`` against ``baseline`` (same seeds, at least :data:`MIN_SEEDS`)."""
    if len(baseline) < MIN_SEEDS or len(scores) < MIN_SEEDS:
        raise ValueError(f"a verdict needs at least {MIN_SEEDS} seeds each; got "
                         f"{len(baseline)} baseline and {len(scores)} candidate scores")
    mb, mc = statistics.median(baseline), statistics.median(scores)
    sign = -1.0 if maximize else 1.0
    if math.isfinite(mb) and math.isfinite(mc):
        improvement = sign * (mb - mc)
    elif math.isfinite(mb) or math.isfinite(mc):     # exactly one of them blew up
        improvement = math.inf if math.isfinite(mc) else -math.inf
    else:
        improvement = 0.0
    spread = max(seed_range(baseline), seed_range(scores))
    bar = max(spread, RELATIVE_FLOOR * abs(mb)) if math.isfinite(mb) else spread
    if math.isinf(improvement):
        verdict = "helps" if improvement > 0 else "hurts"
    elif improvement > bar:
        verdict = "helps"
    elif improvement < -bar:
        verdict = "hurts"
    else:
        verdict = "no measurable change"
    return Comparison(verdict, improvement, spread, mc, mb)
