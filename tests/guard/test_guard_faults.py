"""Fault injection on a real training run (digits, SGD): unguarded runs are harmed, guarded ones
end within 10% of the clean run, and skipped steps are exact."""

from __future__ import annotations

import math

import pytest
import torch

import gradwell
from guard_helpers import Faults, assert_same_state, state_copy, train

GUARD = {"snapshot_every": 20, "trust_after": 5}

SCENARIOS = {
    "nan_input": Faults(nan_input=(50, 150)),
    "inf_input": Faults(inf_input=(60, 300)),
    "nan_loss": Faults(nan_loss=(70,)),
    "nan_grad": Faults(nan_grad=(80, 81)),
    "inf_grad": Faults(inf_grad=(90,)),
    "inputs_x1e4": Faults(scale_input=(120, 200, 201)),
    "lr_burst": Faults(lr_burst=(150, 155, 30.0)),
}


@pytest.fixture(scope="module")
def clean_loss() -> float:
    return train().final_loss


def test_guard_changes_nothing_on_a_clean_run(clean_loss: float) -> None:
    plain = train()
    guarded = train(guard_kwargs=GUARD)
    assert set(guarded.statuses) == {"ok"}
    assert all(e.action == "trusted" for e in guarded.guard.events)
    assert_same_state(state_copy(plain.model, plain.optimizer),
                      state_copy(guarded.model, guarded.optimizer))


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_unguarded_is_harmed_guarded_recovers(name: str, clean_loss: float) -> None:
    faults = SCENARIOS[name]
    unguarded = train(faults=faults).final_loss
    assert not math.isfinite(unguarded) or unguarded > 3 * clean_loss, (
        f"{name}: the fault must really harm an unguarded run ({unguarded} vs {clean_loss})")
    guarded = train(faults=faults, guard_kwargs=GUARD)
    assert abs(guarded.final_loss - clean_loss) <= 0.10 * clean_loss, (
        name, guarded.final_loss, clean_loss, [str(e) for e in guarded.guard.events])
    bad = [e for e in guarded.guard.events if e.action != "trusted"]
    assert bad, "the guard must have acted"
    if name == "lr_burst":
        assert "rolled_back" in guarded.statuses
        assert guarded.guard.lr_scale < 1.0
    else:
        assert "rolled_back" not in guarded.statuses


@pytest.mark.parametrize("name", ["nan_input", "inf_input", "nan_loss", "nan_grad", "inf_grad",
                                  "inputs_x1e4"])
def test_skipped_steps_are_exact(name: str) -> None:
    """The guarded run equals, bit for bit, a run in which the bad batches never came."""
    faults = SCENARIOS[name]
    guarded = train(faults=faults, guard_kwargs=GUARD)
    skipped = tuple(i for i, s in enumerate(guarded.statuses) if s == "skipped")
    assert skipped
    never_came = train(skip=skipped)
    assert_same_state(state_copy(never_came.model, never_came.optimizer),
                      state_copy(guarded.model, guarded.optimizer))


def adam(model: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.Adam(model.parameters(), lr=3e-3)


def gradwell_adam_zclip(model: torch.nn.Module) -> torch.optim.Optimizer:
    return gradwell.optim.Adam(model.parameters(), lr=3e-3, clip=gradwell.clip.ZClip(warmup=10))


def gradwell_chain_autoclip(model: torch.nn.Module) -> torch.optim.Optimizer:
    return gradwell.optim.Optimizer(
        model.parameters(),
        gradwell.optim.chain(gradwell.clip.AutoClip(10), gradwell.optim.scale_by_adam()), lr=3e-3)


@pytest.mark.parametrize("make_opt", [adam, gradwell_adam_zclip, gradwell_chain_autoclip])
def test_skips_are_exact_for_other_optimizers(make_opt) -> None:
    faults = Faults(nan_input=(30,), nan_grad=(45,), scale_input=(60,))
    guarded = train(steps=80, faults=faults, guard_kwargs=GUARD, make_opt=make_opt)
    skipped = tuple(i for i, s in enumerate(guarded.statuses) if s == "skipped")
    assert skipped == (30, 45, 60)
    never_came = train(steps=80, skip=skipped, make_opt=make_opt)
    assert_same_state(state_copy(never_came.model, never_came.optimizer),
                      state_copy(guarded.model, guarded.optimizer))
