"""Checkpoints in the middle of a run: save, load into a FRESH optimizer, carry on like torch.

Three ways a user resumes: gradwell -> gradwell (the usual one), a torch.optim checkpoint picked
up by gradwell (switching to the drop-in mid-project), and gradwell's checkpoint picked up by
torch.optim (switching back). Each is compared step for step with torch runs.
"""

from __future__ import annotations

import pytest
import torch

from optim_harness import (BASE_LR, NAMES, STEPS, Side, assert_groups_equal, assert_state_close,
                           gw, lockstep, paths, roundtrip, two_groups)

HALF = STEPS // 2
KW = {
    "SGD": {"momentum": 0.9, "nesterov": True, "weight_decay": 0.01},
    "Adagrad": {"lr_decay": 0.01, "initial_accumulator_value": 0.1},
    "RMSprop": {"centered": True, "momentum": 0.5},
    "Adadelta": {"rho": 0.8, "weight_decay": 0.01},
    "Adam": {"amsgrad": True, "weight_decay": 0.01},
    "AdamW": {"betas": (0.8, 0.95)},
}
GROUP_B = {"SGD": {"lr": 0.01, "momentum": 0.5}, "Adagrad": {"lr": 0.1},
           "RMSprop": {"lr": 0.003, "alpha": 0.9}, "Adadelta": {"lr": 0.5},
           "Adam": {"lr": 0.003, "betas": (0.5, 0.9)}, "AdamW": {"weight_decay": 0.3}}
CASES = [pytest.param(name, path_kw, id=f"{name}-{path}")
         for name in NAMES for path, path_kw in paths(name)[:2]]


def groups(name, model):
    return two_groups(model, {}, GROUP_B[name])


def make_torch(name):
    kw = {"lr": BASE_LR[name], **KW[name]}
    return lambda m: getattr(torch.optim, name)(groups(name, m), foreach=False, **kw)


def make_gw(name, path_kw):
    kw = {"lr": BASE_LR[name], **KW[name], **path_kw}
    return lambda m: gw(name)(groups(name, m), **kw)


@pytest.mark.parametrize("name, path_kw", CASES)
def test_resume_gradwell_checkpoint_in_fresh_gradwell_optimizer(name, path_kw) -> None:
    def reload(ref: Side, got: Side) -> None:
        saved = roundtrip(got.opt.state_dict())
        got.opt = make_gw(name, path_kw)(got.model)
        got.opt.load_state_dict(saved)
        assert_state_close(ref.opt, got.opt, "right after load")

    ref, got = lockstep(make_torch(name), make_gw(name, path_kw), events={HALF: reload})
    assert_groups_equal(ref.opt, got.opt, "after resume")


@pytest.mark.parametrize("name, path_kw", CASES)
def test_torch_checkpoint_resumes_in_gradwell(name, path_kw) -> None:
    def switch(ref: Side, got: Side) -> None:
        with torch.no_grad():
            for g, r in zip(got.model.parameters(), ref.model.parameters()):
                g.copy_(r)
        saved = roundtrip(ref.opt.state_dict())
        got.opt = make_gw(name, path_kw)(got.model)
        got.opt.load_state_dict(saved)

    lockstep(make_torch(name), make_gw(name, path_kw), events={HALF: switch})


@pytest.mark.parametrize("name", NAMES)
def test_gradwell_checkpoint_resumes_in_torch(name) -> None:
    def switch(ref: Side, got: Side) -> None:
        with torch.no_grad():
            for r, g in zip(ref.model.parameters(), got.model.parameters()):
                r.copy_(g)
        saved = roundtrip(got.opt.state_dict())
        ref.opt = make_torch(name)(ref.model)
        ref.opt.load_state_dict(saved)

    lockstep(make_torch(name), make_gw(name, {}), events={HALF: switch})


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_layout_matches_torch(name) -> None:
    """Same group hyperparameters and the same per-parameter state keys and values."""
    ref, got = lockstep(make_torch(name), make_gw(name, {}), steps=5)
    rsd, gsd = ref.opt.state_dict(), got.opt.state_dict()
    assert [g["params"] for g in gsd["param_groups"]] == [g["params"] for g in rsd["param_groups"]]
    assert sorted(gsd["state"]) == sorted(rsd["state"]) or name == "Adagrad", (
        f"state held for params {sorted(gsd['state'])}, torch: {sorted(rsd['state'])}")
    for i, rs in rsd["state"].items():
        if i in gsd["state"]:
            assert set(gsd["state"][i]) == set(rs), f"param {i}: keys differ"
    assert_groups_equal(ref.opt, got.opt, "state_dict")


def test_load_rejects_mismatched_groups_like_torch() -> None:
    """A checkpoint with a different number of groups is refused (ValueError), as in torch."""
    model = torch.nn.Linear(3, 2).double()
    one = gw("Adam")(model.parameters())
    two = gw("Adam")([{"params": [model.weight]}, {"params": [model.bias]}])
    with pytest.raises(ValueError):
        one.load_state_dict(two.state_dict())
    with pytest.raises(ValueError):
        torch.optim.Adam(model.parameters()).load_state_dict(two.state_dict())


@pytest.mark.parametrize("name", NAMES)
def test_named_parameters_and_param_names_in_state_dict(name) -> None:
    """torch 2.13 accepts ``model.named_parameters()`` and saves ``param_names``."""
    kw = {"lr": BASE_LR[name]}
    ref, got = lockstep(
        lambda m: getattr(torch.optim, name)(m.named_parameters(), foreach=False, **kw),
        lambda m: gw(name)(m.named_parameters(), **kw), steps=5)
    names = [g.get("param_names") for g in ref.opt.state_dict()["param_groups"]]
    assert names[0], "torch saved no param_names (test premise)"
    assert [g.get("param_names") for g in got.opt.state_dict()["param_groups"]] == names


@pytest.mark.parametrize("name", ["SGD", "Adam"])
def test_resume_with_clipping_turned_on(name) -> None:
    """The run that exploded is resumed from its checkpoint with ``clip=`` newly set."""
    import gradwell
    kw = {"lr": BASE_LR[name], **KW[name]}
    clipping = []

    def ref_edit(model):
        if clipping:
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)

    def resume(ref: Side, got: Side) -> None:
        saved = roundtrip(got.opt.state_dict())
        got.opt = gw(name)(got.model.parameters(), clip=gradwell.clip.GlobalNorm(0.5), **kw)
        got.opt.load_state_dict(saved)
        clipping.append(True)

    lockstep(lambda m: getattr(torch.optim, name)(m.parameters(), foreach=False, **kw),
             lambda m: gw(name)(m.parameters(), **kw), ref_edit=ref_edit, events={HALF: resume})
