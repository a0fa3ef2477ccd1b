"""The ``unobserved`` finding: watched modules whose forward hooks never fired."""

import torch
from torch import nn

import gradwell


class _TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(8, 16)
        self.used = nn.Linear(16, 4)
        self.unused = nn.Linear(16, 4)          # a head this loop never calls

    def forward(self, x):
        return self.used(torch.relu(self.body(x)))


def _run(model, x, steps=3):
    mon = gradwell.watch(model)
    for _ in range(steps):
        loss = model(x).pow(2).mean()
        model.zero_grad()
        loss.backward()
        mon.step(loss)
    mon.close()
    return [f for f in mon.findings() if f.kind == "unobserved"]


def test_a_head_that_never_runs_is_reported_by_name():
    torch.manual_seed(0)
    model = _TwoHeads()
    # torch-only evidence: the unused head received no gradient at all
    found = _run(model, torch.randn(4, 8))
    assert model.unused.weight.grad is None
    assert len(found) == 1 and found[0].layer == "unused" and found[0].severity == "info"
    assert found[0].evidence["modules"] == ["unused"]


def test_multihead_attention_out_proj_used_functionally_is_not_unobserved():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True, dropout=0.0)
    model = nn.Sequential(nn.Linear(8, 16), nn.TransformerEncoder(layer, 1), nn.Linear(16, 4))
    found = _run(model, torch.randn(4, 5, 8))
    # torch-only evidence: out_proj's weight was used (it has a gradient) though its hook never ran
    assert model[1].layers[0].self_attn.out_proj.weight.grad.abs().sum() > 0
    assert found == []
