"""torch LR schedulers drive the drop-ins exactly as they drive torch.optim.

StepLR and CosineAnnealingLR change ``lr``; OneCycleLR also cycles ``momentum`` (SGD, RMSprop)
or ``betas`` (Adam, AdamW) every step, so an optimizer that cached a hyperparameter at
construction instead of reading its group each step diverges here. A scheduler saved with its
optimizer in the middle of the run is restored into fresh objects as well.
"""

from __future__ import annotations

import pytest
import torch
from torch.optim import lr_scheduler

from optim_harness import (BASE_LR, NAMES, STEPS, Side, assert_groups_equal, gw, lockstep,
                           paths, roundtrip, two_groups)

KW = {"SGD": {"momentum": 0.9}, "Adagrad": {}, "RMSprop": {"momentum": 0.5, "centered": True},
      "Adadelta": {}, "Adam": {"amsgrad": True}, "AdamW": {}}
CYCLES_MOMENTUM = ("SGD", "RMSprop", "Adam", "AdamW")


def schedulers(name: str) -> dict:
    lr = BASE_LR[name]
    return {
        "StepLR": lambda o: lr_scheduler.StepLR(o, step_size=7, gamma=0.5),
        "CosineAnnealingLR": lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=20,
                                                                       eta_min=lr / 50),
        "OneCycleLR": lambda o: lr_scheduler.OneCycleLR(
            o, max_lr=lr, total_steps=STEPS, cycle_momentum=name in CYCLES_MOMENTUM),
    }


CASES = [pytest.param(name, sched, path_kw, id=f"{name}-{sched}-{path}")
         for name in NAMES for sched in ("StepLR", "CosineAnnealingLR", "OneCycleLR")
         for path, path_kw in paths(name)[:2]]


@pytest.mark.parametrize("name, sched, path_kw", CASES)
def test_scheduled_run_matches_torch(name: str, sched: str, path_kw: dict) -> None:
    kw = {"lr": BASE_LR[name], **KW[name]}
    ref, got = lockstep(
        lambda m: getattr(torch.optim, name)(m.parameters(), foreach=False, **kw),
        lambda m: gw(name)(m.parameters(), **kw, **path_kw),
        make_sched=schedulers(name)[sched])
    assert_groups_equal(ref.opt, got.opt, f"after {sched}")


@pytest.mark.parametrize("name", ["SGD", "Adam"])
def test_one_cycle_on_two_groups_with_checkpoint_in_the_middle(name: str) -> None:
    lr = BASE_LR[name]
    kw_b = {"lr": lr / 3, "weight_decay": 0.01}

    def make(factory, **extra):
        return lambda m: factory(two_groups(m, {}, kw_b), lr=lr, **KW[name], **extra)

    def sched(o):
        return lr_scheduler.OneCycleLR(o, max_lr=[lr, lr / 3], total_steps=STEPS)

    def reload(ref: Side, got: Side) -> None:
        saved = roundtrip({"opt": got.opt.state_dict(), "sched": got.sched.state_dict()})
        got.opt = make(gw(name))(got.model)
        got.sched = sched(got.opt)
        got.opt.load_state_dict(saved["opt"])
        got.sched.load_state_dict(saved["sched"])

    ref, got = lockstep(make(getattr(torch.optim, name), foreach=False), make(gw(name)),
                        make_sched=sched, events={STEPS // 2: reload})
    assert_groups_equal(ref.opt, got.opt, "after OneCycleLR")
