"""gradwell.locate on wrapped models: ``torch.compile`` (the whole model or one submodule) is
unwrapped for the replay, which runs the model's own modules eagerly, so the origin names the
module as the model does (no ``_orig_mod.``), like the monitor."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import gradwell
from faults import Lambda


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), Lambda(torch.log), nn.Linear(8, 2))


@pytest.mark.parametrize("wrap", ["whole", "submodule"])
def test_a_compiled_model_names_the_module_without_orig_mod(wrap):
    model = _model()
    if wrap == "whole":
        run = torch.compile(model, backend="eager")
    else:
        model[1] = torch.compile(model[1], backend="eager")
        run = model
    x = torch.randn(16, 4)
    first = []                                   # torch-only: the first module with a NaN output
    for name, m in model.named_children():
        m.register_forward_hook(lambda m, a, o, name=name: first.append(name)
                                if not first and torch.isnan(o).any() else None)
    with gradwell.locate(run) as loc:
        run(x).square().mean().backward()
    assert first == ["1"]
    o = loc.origin
    assert (o.phase, o.module, o.op, o.kind) == ("forward", "1", "aten.log.default", "nan")


def test_without_a_replay_an_input_is_still_named_and_the_op_is_said_to_be_unknown():
    """``locate(model, replay=False)`` (what FSDP2 gets): a NaN already in the batch is found
    from the recorded call's inputs; a NaN born inside says "not replayed", never "transient"."""
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    x = torch.randn(16, 4)
    x[3, 1] = float("nan")
    with gradwell.locate(model, replay=False) as loc:
        model(x).square().mean().backward()
    o = loc.origin
    assert (o.phase, o.op, o.tensor, o.nonfinite, o.numel) == ("input", "input", "input[0]", 1, 64)
    model = _model()
    with gradwell.locate(model, replay=False) as loc:
        out = model(torch.randn(16, 4))
        out.square().mean().backward()
    assert torch.isnan(out).any()                       # torch: the forward made a NaN
    o = loc.origin
    assert (o.phase, o.kind, o.reproduced, o.op) == ("forward", "nan", None, None)
    assert "not replayed op by op" in str(o) and "transient" not in str(o)
