"""Robust spike detection: a z-score built from the median and the median absolute deviation.

For the last ``window`` healthy values :math:`x_1, \\dots, x_n` and a new value :math:`x`:

.. math::

    z = \\frac{x - \\operatorname{med}(x_i)}
             {\\max\\left(1.4826\\,\\operatorname{med}|x_i - \\operatorname{med}(x_i)|,\\;
                         f\\,m,\\; 10^{-12}\\right)}

The factor 1.4826 makes the MAD a consistent estimate of the standard deviation for normal data
(Rousseeuw & Croux 1993, "Alternatives to the Median Absolute Deviation", JASA); unlike a mean
and standard deviation, neither the median nor the MAD is dragged up by the spikes themselves.
The floor ``f * m``, with :math:`m` the largest :math:`|\\operatorname{med}(x_i)|` seen so far
(for a loss: about its level at the start of training), keeps a very flat history (a plateau,
full-batch training) from turning ordinary wobbles into "spikes". It is anchored to that peak,
not to the current median, because near convergence the median loss approaches 0 while single
batches with a hard example still cost a sizeable fraction of the starting loss: a floor that
shrank with the median made those healthy batches "spikes" (z in the hundreds). In log space
(``log=True``, for norms) the floor is ``f`` itself: a relative change. Only upward spikes count.
"""

from __future__ import annotations

import math
from collections import deque
from statistics import median
from typing import Any

__all__ = ["RobustZ", "LOSS_FLOOR", "LOG_NORM_FLOOR"]

MAD_TO_STD = 1.4826

#: The guard's floors. The loss: 10 % of its largest median. Near convergence a batch with hard
#: examples can cost half the starting loss while the median is near 0 (digits MLP, SGD with
#: momentum: 1.216 against a median of 0.059, starting loss 2.28; the next losses 0.039 and 0.012):
#: a 5 % floor read that as z = 10 and skipped a healthy step (tests/guard/test_loss_floor.py).
#: A loss back at its starting level still scores z > 6. The gradient norm, in log space:
#: 0.15, so on a flat history a norm must reach exp(6 * 0.15) = 2.5x its median to score
#: z = 6. Healthy runs that repeat one batch (full-batch training, overfitting a batch) can
#: double their gradient norm within a few steps while the loss keeps falling (Hugging Face
#: Llama from a config, AdamW 1e-3: 0.91 -> 1.79 at step 27, tests/guard/test_spike_floor.py);
#: with a 0.05 floor that read as z = 13 and the guard skipped and rolled back a healthy run.
LOSS_FLOOR = 0.1
LOG_NORM_FLOOR = 0.15


class RobustZ:
    """Robust z-scores of new values against a sliding window of accepted ones.

    Args:
        window: how many recent accepted values are kept.
        min_count: no z-score (``None``) until this many values were accepted.
        rel_floor: the floor on the scale as a fraction of the largest ``|median|`` seen (in
            log space: an absolute floor, i.e. a relative change of the value).
        log: score ``log(x)`` instead of ``x`` (for positive quantities such as norms).
    """

    def __init__(self, window: int = 100, min_count: int = 20, rel_floor: float = 0.05,
                 log: bool = False) -> None:
        self.window, self.min_count, self.rel_floor, self.log = window, min_count, rel_floor, log
        self.values: deque[float] = deque(maxlen=window)
        self.peak = 0.0          #: the largest |median| of the window seen so far
        self._cache: tuple[float, float] | None = None

    def _transform(self, x: float) -> float:
        if not self.log:
            return x
        return math.log(x) if x > 0 else -math.inf

    def score(self, x: float) -> float | None:
        """The robust z of ``x``; ``None`` while fewer than ``min_count`` values are known."""
        if len(self.values) < self.min_count:
            return None
        if self._cache is None:
            med = median(self.values)
            mad = median(abs(v - med) for v in self.values)
            self.peak = max(self.peak, abs(med))
            floor = self.rel_floor if self.log else self.rel_floor * self.peak
            self._cache = (med, max(MAD_TO_STD * mad, floor, 1e-12))
        med, scale = self._cache
        return (self._transform(x) - med) / scale

    def add(self, x: float) -> None:
        """Accept ``x`` into the window (non-finite values are ignored)."""
        t = self._transform(x)
        if math.isfinite(t):
            self.values.append(t)
            self._cache = None

    def state_dict(self) -> dict[str, Any]:
        return {"values": list(self.values), "peak": self.peak}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.values = deque(state["values"], maxlen=self.window)
        self.peak = float(state.get("peak", 0.0))
        self._cache = None
