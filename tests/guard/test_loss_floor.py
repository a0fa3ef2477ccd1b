"""The guard's loss spike floor near convergence (gradwell.guard.spike.LOSS_FLOOR).

Mini-batch SGD with momentum on the digits MLP (the clean run of test_guard_clean_runs): at
step 443 one batch with hard examples costs 1.216 against a median of 0.059 over the last 100
steps, while the loss had started at 2.28. Torch shows the batch is no instability: the plain
run's next two losses are 0.039 and 0.012 and it converges. With a floor of 5 % of the peak
median the scale was 0.114 and z = 10 > 6: the guard skipped that healthy step. With 10 % it is
z = 5. A loss that climbs back above its starting level is still a spike, on a flat or a noisy
history alike.
"""

from __future__ import annotations

import random

from gradwell.guard.spike import LOSS_FLOOR, MAD_TO_STD, RobustZ

START, HARD = 2.28, 1.216


def _converged(rng: random.Random, floor: float = LOSS_FLOOR) -> RobustZ:
    """A history that starts at ``START`` and falls to a noisy plateau near 0.06."""
    z = RobustZ(window=100, min_count=20, rel_floor=floor)
    early = [START] * 30 + [START * 0.95 ** k for k in range(60)]   # the peak median: START
    late = [rng.choice([0.005, 0.01, 0.04, 0.06, 0.06, 0.08, 0.1, 0.27, 0.45])
            for _ in range(100)]                             # near convergence: heavy tails
    for x in early + late:                         # as the guard does: score, then accept
        z.score(x)
        z.add(x)
    return z


def _by_formula(z: RobustZ, x: float) -> float:
    """The robust z of x from the window and peak, independently of RobustZ.score."""
    vals = sorted(z.values)
    med = (vals[49] + vals[50]) / 2
    mads = sorted(abs(v - med) for v in vals)
    mad = (mads[49] + mads[50]) / 2
    return (x - med) / max(MAD_TO_STD * mad, z.rel_floor * z.peak)


def test_a_hard_batch_near_convergence_is_no_spike_and_a_return_to_the_start_is() -> None:
    z = _converged(random.Random(0))
    hard, back = z.score(HARD), z.score(START)
    assert abs(hard - _by_formula(z, HARD)) < 1e-9
    assert abs(z.peak - START) < 1e-9               # the peak is the early median
    assert hard < 6.0, hard                         # the healthy hard batch of step 443
    assert back > 6.0, back                         # the loss back at its start: a spike


def test_the_floor_is_what_keeps_the_hard_batch_below_the_threshold() -> None:
    z = _converged(random.Random(0), floor=0.05)    # the old 5 % floor, same history
    old = z.score(HARD)
    assert abs(old - _by_formula(z, HARD)) < 1e-9
    assert old > 6.0, old                           # it read the healthy batch as a spike
