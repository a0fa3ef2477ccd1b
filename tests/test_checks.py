"""One validation vocabulary: every checked argument's error says which argument, what is
allowed and what was given, in one format, across optim, clip, guard, watch, nn and the lab."""

import re

import numpy as np
import pytest
import torch

import gradwell
from gradwell._checks import check_choice, check_int, check_number, interval
from gradwell.clip import AutoClip, GlobalNorm, ZClip
from gradwell.lab import data
from gradwell.nn import CNN, MLP, RecurrentNet, ResidualMLP, TinyTransformer

FORMAT = r"^{arg} must be (?P<allowed>.+), got (?P<got>.+)$"


def _model():
    return torch.nn.Linear(2, 2)


def _guard(**options):
    model = _model()
    return gradwell.guard.Guard(model, torch.optim.SGD(model.parameters(), 0.1), **options)


CASES = [
    ("lr_factor", ValueError, "0", lambda: _guard(lr_factor=0)),
    ("spike_z", ValueError, "-1", lambda: _guard(spike_z=-1)),
    ("alpha", ValueError, "1.5", lambda: ZClip(alpha=1.5)),
    ("history", ValueError, "0", lambda: AutoClip(history=0)),
    ("max_norm", ValueError, "-1", lambda: GlobalNorm(-1)),
    ("every", ValueError, "0", lambda: gradwell.watch(_model(), every=0)),
    ("activations", TypeError, "'yes'", lambda: gradwell.watch(_model(), activations="yes")),
    ("activation", ValueError, "'sigmod'", lambda: MLP(2, 2, 1, 4, "sigmod")),
    ("skip_nonfinite", TypeError, "1",
     lambda: gradwell.optim.Adam(_model().parameters(), skip_nonfinite=1)),
]

BATCHES = [(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long))]
LOSS = torch.nn.CrossEntropyLoss()


def _lr_find(**options):
    return gradwell.lr_find(_model(), BATCHES, LOSS, **options)


def _doctor(**options):
    return gradwell.doctor(_model, BATCHES, LOSS, progress=False, **options)


# (argument, error, the allowed phrase (a part of it), the value given, the call)
CONVERTED = [
    ("start", ValueError, "a positive number", "0", lambda: _lr_find(start=0)),
    ("end", ValueError, "a number in (0.1, inf) (above start=0.1)", "inf",
     lambda: _lr_find(start=0.1, end=float("inf"))),
    ("steps", ValueError, "an int >= 2", "1", lambda: _lr_find(steps=1)),
    ("beta", ValueError, "a number in [0, 1) (the loss smoothing)", "1.0",
     lambda: _lr_find(beta=1.0)),
    ("diverge", ValueError, "a number in (1, inf) (a factor over the lowest loss)", "1",
     lambda: _lr_find(diverge=1)),
    ("rule", ValueError, "one of steepest, divergence", "'valley'", lambda: _lr_find(rule="valley")),
    ("optimizer", ValueError, "one of adam, ", "'adamax'", lambda: _lr_find(optimizer="adamax")),
    ("optimizer", TypeError, "or a function params -> torch.optim.Optimizer", "3",
     lambda: _lr_find(optimizer=3)),
    ("lr", ValueError, "a positive number or None (the optimizer's default)", "-0.1",
     lambda: _doctor(lr=-0.1)),
    ("budget_steps", ValueError, "an int >= 10", "5", lambda: _doctor(budget_steps=5)),
    ("seeds", ValueError, "an int >= 3 (a verdict needs the spread over at least 3 seeds)", "2",
     lambda: _doctor(seeds=2)),
    ("variants", TypeError, "None or a dict {name: function building the model}", "{'x': 1}",
     lambda: _doctor(variants={"x": 1})),
    ("unit_axis", TypeError, "an int (the output-unit axis of weights", "1.0",
     lambda: gradwell.clip.AGC(unit_axis=1.0)),
    ("depth", ValueError, "an int >= 1", "0", lambda: MLP(2, 2, depth=0)),
    ("width", ValueError, "an int >= 1", "2.5", lambda: ResidualMLP(2, 2, width=2.5)),
    ("hidden", ValueError, "an int >= 1", "0", lambda: RecurrentNet("rnn", 2, 2, hidden=0)),
    ("recurrent_gain", ValueError, "a positive number or None (keeps torch's initialisation)",
     "-1.0", lambda: RecurrentNet("rnn", 2, 2, recurrent_gain=-1.0)),
    ("stages", ValueError, "an int >= 1", "0", lambda: CNN((1, 8, 8), 2, stages=0)),
    ("heads", ValueError, "a divisor of d_model=8", "3",
     lambda: TinyTransformer(10, 4, d_model=8, heads=3)),
    ("layers", ValueError, "an int >= 1", "0", lambda: TinyTransformer(10, 4, layers=0)),
    ("logits", ValueError, "the qualified name of a module of the model", "'nope'",
     lambda: gradwell.watch(_model(), logits="nope")),
    ("length", ValueError, "an int >= 2 (one marker in each half)", "1",
     lambda: data.adding_problem(4, 1, np.random.default_rng(0))),
    ("noise", ValueError, "a number in [0, inf) (a standard deviation)", "-0.1",
     lambda: data.latch_problem(4, 5, -0.1, np.random.default_rng(0))),
    ("vocab", ValueError, "an int >= 2", "1",
     lambda: data.copy_problem(4, 3, 1, np.random.default_rng(0))),
    ("dataset", ValueError, "one of digits, adding, latch, copy, spirals, mnist", "'cifar'",
     lambda: data.load("cifar")),
]


@pytest.mark.parametrize("arg, error, allowed, got, make", CONVERTED,
                         ids=[f"{c[0]}-{c[1].__name__}" for c in CONVERTED])
def test_the_converted_checks_name_the_argument_what_is_allowed_and_the_value(
        arg, error, allowed, got, make):
    with pytest.raises(error) as info:
        make()
    m = re.match(FORMAT.format(arg=re.escape(arg)), str(info.value))
    assert m is not None, str(info.value)
    assert allowed in m["allowed"] and m["got"] == got, str(info.value)


@pytest.mark.parametrize("arg, error, got, make", CASES, ids=[c[0] for c in CASES])
def test_every_package_words_its_errors_the_same_way(arg, error, got, make):
    with pytest.raises(error) as info:
        make()
    m = re.match(FORMAT.format(arg=re.escape(arg)), str(info.value))
    assert m is not None, str(info.value)
    assert m["got"] == got and m["allowed"]


def test_the_phrases_state_the_allowed_values():
    assert interval(0, 1, low_open=True) == "a number in (0, 1]"
    assert interval(0, low_open=True) == "a positive number"
    assert interval(0, 1) == "a number in [0, 1]"
    with pytest.raises(ValueError, match=r"^n must be an int >= 2 \(at least two\), got 1$"):
        check_int("n", 1, 2, " (at least two)")
    with pytest.raises(ValueError, match=r"^p must be a number in \[0, 1\] or None \(off\), got nan$"):
        check_number("p", float("nan"), 0, 1, optional="off")
    assert check_number("p", None, 0, 1, optional="off") is None
    with pytest.raises(ValueError, match=r"^mode must be one of a, b, got 'c'$"):
        check_choice("mode", "c", ("a", "b"))
    with pytest.raises(ValueError, match=r"^p must be a number in \[0, 1\], got True$"):
        check_number("p", True, 0, 1)
