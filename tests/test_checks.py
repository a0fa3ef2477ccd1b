"""One validation vocabulary: every checked argument's error says which argument, what is
allowed and what was given, in one format, across optim, clip, guard, watch, nn and the lab."""

import re

import pytest
import torch

import gradwell
from gradwell._checks import check_choice, check_int, check_number, interval
from gradwell.clip import AutoClip, GlobalNorm, ZClip
from gradwell.nn import MLP

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
