"""Issue 10, items 1 and 4: every parameter form torch.optim accepts, torch's errors and warnings
for the ones it refuses, and no silent acceptance of a keyword or number type.

Each case builds the torch optimizer and the gradwell drop-in from the same form and compares
the parameters after a few steps, or the error type and message torch gives.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import torch

import gradwell
from optim_harness import NAMES, gw, loss_at, twin_models


def forms():
    """Parameter forms torch accepts, each a function of the model (called once per optimizer)."""
    return {
        "list": lambda m: list(m.parameters()),
        "generator": lambda m: m.parameters(),
        "named_parameters": lambda m: m.named_parameters(),
        "groups of generators": lambda m: [
            {"params": m.fc1.parameters()},
            {"params": (p for p in [m.fc2.weight, m.fc2.bias, m.gain, m.extra]), "lr": 0.02}],
        "group with a single tensor": lambda m: [
            {"params": m.gain}, {"params": [p for n, p in m.named_parameters() if n != "gain"]}],
        "groups of named parameters": lambda m: [
            {"params": m.fc1.named_parameters()},
            {"params": [("gain", m.gain), ("extra", m.extra), *m.fc2.named_parameters()]}],
        "with an empty group": lambda m: [{"params": []}, {"params": m.parameters()}],
    }


FORMS = list(forms())


def lockstep(make_ref, make_mine, ref, mine, steps=4, rtol=1e-10):
    opt_ref, opt_mine = make_ref(ref), make_mine(mine)
    for k in range(steps):
        for model, opt in ((ref, opt_ref), (mine, opt_mine)):
            opt.zero_grad()
            loss_at(model, k).backward()
            opt.step()
    for p, q in zip(ref.parameters(), mine.parameters()):
        torch.testing.assert_close(q, p, rtol=rtol, atol=rtol / 100)
    return opt_ref, opt_mine


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name", NAMES)
def test_every_parameter_form_gives_torchs_numbers(name, form) -> None:
    ref, mine = twin_models()
    make = forms()[form]
    start = [p.detach().clone() for p in mine.parameters()]
    opt_ref, opt_mine = lockstep(lambda m: getattr(torch.optim, name)(make(m), lr=0.01),
                                 lambda m: gw(name)(make(m), lr=0.01), ref, mine)
    assert all(not torch.equal(p, s) for p, s in zip(mine.parameters(), start)), "all must train"
    assert [len(g["params"]) for g in opt_mine.param_groups] == [
        len(g["params"]) for g in opt_ref.param_groups]
    assert [g.get("param_names") for g in opt_mine.param_groups] == [
        g.get("param_names") for g in opt_ref.param_groups]


@pytest.mark.parametrize("name", NAMES)
def test_add_param_group_with_a_generator_or_a_tensor(name) -> None:
    def build(cls, m):
        opt = cls(m.fc1.parameters(), lr=0.01)
        opt.add_param_group({"params": m.fc2.parameters(), "lr": 0.03})
        opt.add_param_group({"params": m.gain})
        opt.add_param_group({"params": iter([m.extra])})
        return opt
    ref, mine = twin_models()
    lockstep(lambda m: build(getattr(torch.optim, name), m), lambda m: build(gw(name), m),
             ref, mine)


def torch_error(make):
    with pytest.raises(Exception) as exc:
        make()
    return exc


BAD_FORMS = {
    "a bare tensor": lambda m: m.gain,
    "a set in a group": lambda m: [{"params": set(m.parameters())}],
    "mixed named and unnamed": lambda m: [("w", m.fc1.weight), m.fc1.bias],
    "named and unnamed groups": lambda m: [{"params": [m.gain]},
                                           {"params": [("extra", m.extra)]}],
    "one tensor in two groups": lambda m: [{"params": [m.gain]}, {"params": m.gain}],
    "not a tensor": lambda m: [m.gain, 3.0],
    "empty": lambda m: iter(()),
}


@pytest.mark.parametrize("form", list(BAD_FORMS))
@pytest.mark.parametrize("name", NAMES)
def test_refused_forms_raise_torchs_error(name, form) -> None:
    ref, _ = twin_models()
    make = BAD_FORMS[form]
    expected = torch_error(lambda: getattr(torch.optim, name)(make(ref), lr=0.01))
    with pytest.raises(expected.type) as exc:
        gw(name)(make(ref), lr=0.01)
    assert str(expected.value).split(",")[0].split(";")[0] in str(exc.value)


@pytest.mark.parametrize("name", NAMES)
def test_duplicate_in_a_group_warns_like_torch(name) -> None:
    ref, mine = twin_models()
    for cls, m in ((getattr(torch.optim, name), ref), (gw(name), mine)):
        with pytest.warns(UserWarning, match="duplicate parameters"):
            cls([m.gain, m.gain, *m.fc1.parameters()], lr=0.01)


def test_refused_group_is_not_added() -> None:
    ref, _ = twin_models()
    opt = gw("Adam")(ref.fc1.parameters())
    with pytest.raises(ValueError, match="lr"):
        opt.add_param_group({"params": ref.fc2.parameters(), "lr": -1.0})
    with pytest.raises(ValueError, match="beta"):
        opt.add_param_group({"params": ref.fc2.parameters(), "betas": (0.9, 1.5)})
    assert len(opt.param_groups) == 1
    opt.add_param_group({"params": ref.fc2.parameters()})  # the parameters are still free
    assert len(opt.param_groups) == 2


# ------------------------------------------------------------------ no silent acceptance
@pytest.mark.parametrize("name", NAMES)
def test_unknown_keyword_is_a_type_error_like_torch(name) -> None:
    ref, _ = twin_models()
    with pytest.raises(TypeError, match="beta"):
        getattr(torch.optim, name)(ref.parameters(), beta=(0.5, 0.5))
    with pytest.raises(TypeError, match="beta"):
        gw(name)(ref.parameters(), beta=(0.5, 0.5))


def test_composed_optimizer_refuses_unknown_hyperparameters() -> None:
    ref, _ = twin_models()
    O = gradwell.optim
    with pytest.raises(TypeError) as exc:
        O.Optimizer(ref.parameters(), O.scale_by_adam(), lr=0.1, beta=(0.5, 0.5))
    assert "'beta'" in str(exc.value) and "betas" in str(exc.value)
    opt = O.Optimizer(ref.parameters(), O.scale_by_adam(), lr=0.1, betas=(0.5, 0.5))
    assert opt.param_groups[0]["betas"] == (0.5, 0.5)


@pytest.mark.parametrize("name", ["RMSprop", "Adadelta", "Adam", "AdamW"])
def test_capturable_is_refused_clearly(name) -> None:
    ref, _ = twin_models()
    with pytest.raises(ValueError, match="capturable"):
        gw(name)(ref.parameters(), capturable=True)
    assert gw(name)(ref.parameters(), capturable=False).param_groups[0]["capturable"] is False


def test_decoupled_keyword_is_gone() -> None:
    with pytest.raises(TypeError, match="decoupled"):
        gradwell.optim.add_decayed_weights(0.1, decoupled=True)


NUMBERS = {"numpy float32": np.float32(0.01), "numpy float64": np.float64(0.01),
           "float64 tensor": torch.tensor(0.01, dtype=torch.float64),
           "float32 tensor": torch.tensor(0.01), "int": 1}
#: Deliberate difference (docs/optimizers.md): torch's single-tensor Adam divides a float32 lr by
#: the bias correction in float32; gradwell's kernel does it in the parameters' float64.
FLOAT32_LR_TOL = {("Adam", "numpy float32"), ("Adam", "float32 tensor"),
                  ("AdamW", "numpy float32"), ("AdamW", "float32 tensor")}


@pytest.mark.parametrize("kind", list(NUMBERS))
@pytest.mark.parametrize("name", NAMES)
def test_every_number_type_torch_takes_for_lr(name, kind) -> None:
    lr = NUMBERS[kind] if kind != "int" else (1 if name == "Adadelta" else 0)
    ref, mine = twin_models()
    rtol = 1e-6 if (name, kind) in FLOAT32_LR_TOL else 1e-10
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lockstep(lambda m: getattr(torch.optim, name)(m.parameters(), lr=lr),
                 lambda m: gw(name)(m.parameters(), lr=lr), ref, mine, rtol=rtol)


def test_numpy_hyperparameters_beyond_lr() -> None:
    ref, mine = twin_models()
    kw = {"momentum": np.float32(0.9), "weight_decay": np.float64(1e-3), "lr": np.float32(0.05)}
    lockstep(lambda m: torch.optim.SGD(m.parameters(), **kw),
             lambda m: gw("SGD")(m.parameters(), **kw), ref, mine)
    with pytest.raises(ValueError, match=re.escape("Invalid momentum value: -0.5")):
        gw("SGD")(mine.parameters(), momentum=np.float32(-0.5))
