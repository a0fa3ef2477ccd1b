"""gradwell's optimizers under ``torch.compile(opt.step)``: the same parameters as the eager step,
bit for bit, and no graph break of our making (torch's own fused kernels are not traced: a
break torch adds for ``torch.optim.Adam(fused=True)`` too)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch._dynamo
from torch import nn

import gradwell

C = gradwell.clip
CASES = {
    "Adam": (gradwell.optim.Adam, {}),
    "AdamW+GlobalNorm": (gradwell.optim.AdamW, {"clip": C.GlobalNorm(0.1)}),
    "SGD+AGC": (gradwell.optim.SGD, {"momentum": 0.9, "nesterov": True, "clip": C.AGC(0.01)}),
    "RMSprop+ZClip": (gradwell.optim.RMSprop, {"clip": C.ZClip(warmup=2)}),
    "Adagrad+AutoClip": (gradwell.optim.Adagrad, {"clip": C.AutoClip(10)}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_compiled_step_equals_the_eager_step_without_reading_values(case):
    make, kw = CASES[case]
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    eager, traced = copy.deepcopy(net), copy.deepcopy(net)
    opt_e = make(eager.parameters(), lr=1e-2, **copy.deepcopy(kw))
    opt_t = make(traced.parameters(), lr=1e-2, **copy.deepcopy(kw))
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    step = torch.compile(opt_t.step, backend="eager")
    for i in range(5):
        x = torch.randn(8, 8) * (50.0 if i == 3 else 1.0)        # one clipped spike
        for model, opt, run in ((eager, opt_e, opt_e.step), (traced, opt_t, step)):
            opt.zero_grad()
            model(x).square().mean().backward()
            run()
    for p, q in zip(eager.parameters(), traced.parameters()):
        assert torch.equal(p, q)
    breaks = " ".join(torch._dynamo.utils.counters["graph_break"])
    assert "item()" not in breaks, breaks
