"""Adaptive clipping on a real run: a 1e4 input spike does no harm; and the fault suite holds
for other seeds (slow)."""

from __future__ import annotations

import math
from typing import Callable

import pytest
import torch

import gradwell
from guard_helpers import LR, WD, Faults, train

SPIKES = Faults(scale_input=(120, 200, 201))


def sgd_with(make_clip: Callable[[], gradwell.clip.Clipper]):
    return lambda model: gradwell.optim.SGD(model.parameters(), lr=LR, momentum=0.9,
                                            weight_decay=WD, clip=make_clip())


@pytest.mark.parametrize("make_clip", [lambda: gradwell.clip.ZClip(),
                                       lambda: gradwell.clip.AutoClip(50),
                                       lambda: gradwell.clip.AGC(0.05)],
                         ids=["ZClip", "AutoClip", "AGC"])
def test_adaptive_clipping_absorbs_input_spikes(make_clip) -> None:
    unclipped_clean = train().final_loss
    unclipped_spiked = train(faults=SPIKES).final_loss
    assert unclipped_spiked > 3 * unclipped_clean  # the spikes really harm a plain run
    clean = train(make_opt=sgd_with(make_clip)).final_loss
    spiked = train(make_opt=sgd_with(make_clip), faults=SPIKES).final_loss
    assert abs(spiked - clean) <= 0.10 * clean, (spiked, clean)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("name", ["nan_input", "nan_grad", "inputs_x1e4", "lr_burst"])
def test_fault_suite_other_seeds(seed: int, name: str) -> None:
    from test_guard_faults import GUARD, SCENARIOS
    clean = train(seed=seed).final_loss
    unguarded = train(faults=SCENARIOS[name], seed=seed).final_loss
    assert not math.isfinite(unguarded) or unguarded > 3 * clean
    guarded = train(faults=SCENARIOS[name], guard_kwargs=GUARD, seed=seed)
    assert abs(guarded.final_loss - clean) <= 0.10 * clean, (
        guarded.final_loss, clean, [str(e) for e in guarded.guard.events])
