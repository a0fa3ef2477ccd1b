"""The back-propagated-gradient depth trend runs from the first to the last hidden *layer*: the
model's own parameters ("(model)", whose output is the model's output) are no point of it.

An RNNCell applied in a Python loop, with a learned positional table held by the model itself
and recurrent weights scaled 8x: its gradients explode through time (torch: every layer's
relative gradient above 10). Taking "(model)" as the first hidden layer compared dL/dlogits with
the cell's exploded output gradient and added a contradictory `vanishing` finding."""

from __future__ import annotations

import torch
from torch import nn

import gradwell


class CellLoop(nn.Module):
    def __init__(self, gain: float, steps: int = 30, d: int = 32) -> None:
        super().__init__()
        self.pos = nn.Parameter(torch.zeros(steps, d))   # the model's own parameter, first
        self.emb, self.cell, self.head = nn.Linear(4, d), nn.RNNCell(d, d), nn.Linear(d, 2)
        with torch.no_grad():
            self.cell.weight_hh.mul_(gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.zeros(x.shape[0], self.cell.hidden_size)
        for t in range(x.shape[1]):
            h = self.cell(self.emb(x[:, t]) + self.pos[t], h)
        return self.head(h)


def test_an_exploding_cell_loop_is_exploding_and_not_also_vanishing():
    torch.manual_seed(0)
    model = CellLoop(gain=8.0)
    x = torch.randn(16, 30, 4)
    y = (x[:, 0, 0] > 0).long()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    rel = []
    with gradwell.watch(model) as mon:
        for _ in range(20):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            rel.append({n: float(m.weight.grad.norm() / m.weight.detach().norm())
                        for n, m in (("emb", model.emb), ("head", model.head))})
            mon.step(loss)
            opt.step()
    assert all(r["emb"] > 10 and r["emb"] > r["head"] for r in rel)    # torch: exploding
    kinds = {f.kind for f in mon.findings()}
    assert "exploding" in kinds and "vanishing" not in kinds, mon.findings()
