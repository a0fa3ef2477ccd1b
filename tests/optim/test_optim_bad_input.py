"""Issue 2, item 7: bad input is refused with a message naming the argument, the value, and
what is allowed.

Values are chosen so that the value's text cannot be mistaken for the allowed range's bounds
(``-0.25`` for a learning rate, ``1.25`` for a beta), so "the message contains the value" is a
real check.
"""

from __future__ import annotations

import math
import re

import pytest
import torch

import gradwell
from optim_harness import NAMES, gw, make_model

NONNEG = r"(>= ?0|≥ ?0|non-?negative|\[0(\.0)?, ?(inf|∞|\+inf))"
UNIT = r"(\[0(\.0)?, ?1(\.0)?\)|0(\.0)? ?<= ?\S+ ?< ?1)"
POSITIVE = r"(positive|> ?0)"
NAN = float("nan")

# (optimizers, keyword, bad value, text of the value, allowed pattern)
RANGE_CASES = [
    (NAMES, "lr", -0.25, "-0.25", NONNEG),
    (NAMES, "lr", NAN, "nan", NONNEG),
    (NAMES, "weight_decay", -0.125, "-0.125", NONNEG),
    (NAMES, "weight_decay", NAN, "nan", NONNEG),
    (("Adagrad", "RMSprop", "Adadelta", "Adam", "AdamW"), "eps", -3e-08, "-3e-08", NONNEG),
    (("Adagrad", "RMSprop", "Adadelta", "Adam", "AdamW"), "eps", NAN, "nan", NONNEG),
    (("SGD", "RMSprop"), "momentum", -0.375, "-0.375", NONNEG),
    (("SGD", "RMSprop"), "momentum", NAN, "nan", NONNEG),
    (("Adagrad",), "lr_decay", -0.5, "-0.5", NONNEG),
    (("Adagrad",), "initial_accumulator_value", -0.5, "-0.5", NONNEG),
    (("Adadelta",), "rho", 1.75, "1.75", UNIT),
    (("Adadelta",), "rho", -0.5, "-0.5", UNIT),
    (("Adadelta",), "rho", NAN, "nan", UNIT),
    (("Adam", "AdamW"), "betas", (1.25, 0.999), "1.25", UNIT),
    (("Adam", "AdamW"), "betas", (0.9, -0.5), "-0.5", UNIT),
    (("Adam", "AdamW"), "betas", (NAN, 0.999), "nan", UNIT),
    (("Adam", "AdamW"), "betas", (0.9, NAN), "nan", UNIT),
]
EXPANDED = [pytest.param(name, key, value, text, allowed, id=f"{name}-{key}={text}")
            for names, key, value, text, allowed in RANGE_CASES for name in names]


def params():
    return make_model().parameters()


def assert_message(exc: BaseException, *needles: str, allowed: str | None = None) -> None:
    msg = str(exc)
    for needle in needles:
        assert needle.lower() in msg.lower(), f"message {msg!r} does not mention {needle!r}"
    if allowed is not None:
        assert re.search(allowed, msg), f"message {msg!r} does not say what is allowed"


@pytest.mark.parametrize("name, key, value, text, allowed", EXPANDED)
def test_out_of_range_hyperparameter(name, key, value, text, allowed) -> None:
    with pytest.raises(ValueError) as exc:
        gw(name)(params(), **{key: value})
    assert_message(exc.value, key, text, allowed=allowed)


@pytest.mark.parametrize("name, key, value, text, allowed", EXPANDED)
def test_out_of_range_hyperparameter_in_a_param_group(name, key, value, text, allowed) -> None:
    """The same check applies to a group's own value, at construction and add_param_group."""
    model = make_model()
    with pytest.raises(ValueError) as exc:
        gw(name)([{"params": [model.fc1.weight]}, {"params": [model.fc2.weight], key: value}])
    assert_message(exc.value, key, text, allowed=allowed)
    opt = gw(name)([model.fc1.weight])
    with pytest.raises(ValueError) as exc:
        opt.add_param_group({"params": [model.fc2.weight], key: value})
    assert_message(exc.value, key, text, allowed=allowed)


@pytest.mark.parametrize("name", ["Adam", "AdamW"])
@pytest.mark.parametrize("betas", [(1.0, 0.999), (0.9, 1.0)])
def test_beta_of_exactly_one_is_refused(name, betas) -> None:
    with pytest.raises(ValueError) as exc:
        gw(name)(params(), betas=betas)
    assert_message(exc.value, "betas", allowed=UNIT)


def test_rho_of_exactly_one_is_refused() -> None:
    with pytest.raises(ValueError) as exc:
        gw("Adadelta")(params(), rho=1.0)
    assert_message(exc.value, "rho", allowed=UNIT)


@pytest.mark.parametrize("kw, needles", [
    ({"nesterov": True}, ("nesterov", "momentum")),
    ({"nesterov": True, "momentum": 0.0}, ("nesterov", "momentum")),
    ({"nesterov": True, "momentum": 0.9, "dampening": 0.375}, ("nesterov", "dampening", "0.375")),
])
def test_nesterov_needs_momentum_and_no_dampening(kw, needles) -> None:
    allowed = r"(> ?0|zero|positive|non-?zero)"
    with pytest.raises(ValueError) as exc:
        gw("SGD")(params(), lr=0.1, **kw)
    assert_message(exc.value, *needles, allowed=allowed)
    with pytest.raises(ValueError) as exc:
        gradwell.optim.trace(**{"momentum": 0.0, **kw})
    assert_message(exc.value, *needles, allowed=allowed)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("empty", [[], (), "generator"])
def test_empty_parameter_list(name, empty) -> None:
    if empty == "generator":
        empty = (p for p in [])
    with pytest.raises(ValueError) as exc:
        gw(name)(empty)
    assert_message(exc.value, "param", "empty")


@pytest.mark.parametrize("name", NAMES)
def test_parameter_in_two_groups(name) -> None:
    model = make_model()
    shared = model.fc1.weight
    with pytest.raises(ValueError) as exc:
        gw(name)([{"params": [shared, model.fc1.bias]}, {"params": [shared]}])
    assert_message(exc.value, "group")
    assert re.search(r"more than one|two|both|twice|once", str(exc.value))
    opt = gw(name)([shared])
    with pytest.raises(ValueError):
        opt.add_param_group({"params": [shared]})


@pytest.mark.parametrize("max_norm, text", [(0.0, "0.0"), (-1.5, "-1.5"), (NAN, "nan")])
def test_global_norm_max_norm_must_be_positive(max_norm, text) -> None:
    with pytest.raises(ValueError) as exc:
        gradwell.clip.GlobalNorm(max_norm)
    assert_message(exc.value, "max_norm", text, allowed=POSITIVE)


@pytest.mark.parametrize("limit, text", [(0.0, "0.0"), (-2.5, "-2.5"), (NAN, "nan")])
def test_value_limit_must_be_positive(limit, text) -> None:
    with pytest.raises(ValueError) as exc:
        gradwell.clip.Value(limit)
    assert_message(exc.value, "limit", text, allowed=POSITIVE)


@pytest.mark.parametrize("norm_type, text", [(0.0, "0.0"), (-2.0, "-2.0"), (NAN, "nan")])
def test_global_norm_type_must_be_positive(norm_type, text) -> None:
    with pytest.raises(ValueError) as exc:
        gradwell.clip.GlobalNorm(1.0, norm_type=norm_type)
    assert_message(exc.value, "norm_type", text, allowed=POSITIVE)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("bad, type_name", [
    (1.0, "float"), ("global_norm", "str"),
    (torch.nn.utils.clip_grad_norm_, "function"), (torch.optim.Adam, "type"),
])
def test_clip_must_be_a_gradwell_clipper(name, bad, type_name) -> None:
    with pytest.raises(TypeError) as exc:
        gw(name)(params(), clip=bad)
    assert_message(exc.value, "clip", type_name, "gradwell.clip")


@pytest.mark.parametrize("bad", [1, "yes", None])
def test_skip_nonfinite_must_be_a_bool(bad) -> None:
    with pytest.raises(TypeError) as exc:
        gw("Adam")(params(), skip_nonfinite=bad)
    assert_message(exc.value, "skip_nonfinite", repr(bad))


def test_optimizer_needs_a_transformation() -> None:
    with pytest.raises(TypeError) as exc:
        gradwell.optim.Optimizer(params(), torch.optim.Adam, lr=0.1)
    assert_message(exc.value, "transform")


@pytest.mark.parametrize("make, needles", [
    (lambda: gradwell.optim.scale_by_adam(betas=(1.25, 0.9)), ("betas", "1.25")),
    (lambda: gradwell.optim.scale_by_adadelta(rho=1.75), ("rho", "1.75")),
    (lambda: gradwell.optim.scale_by_rms(alpha=-0.5), ("alpha", "-0.5")),
    (lambda: gradwell.optim.scale_by_adagrad(lr_decay=-0.5), ("lr_decay", "-0.5")),
    (lambda: gradwell.optim.add_decayed_weights(-0.125), ("weight_decay", "-0.125")),
    (lambda: gradwell.optim.trace(momentum=math.nan), ("momentum", "nan")),
])
def test_transformations_check_their_arguments(make, needles) -> None:
    with pytest.raises(ValueError) as exc:
        make()
    assert_message(exc.value, *needles)
