"""A NaN born in the backward that reaches no parameter gradient is still `nonfinite`, and the
text says why no parameter is affected (torch: the loss and every parameter gradient finite,
the gradient flowing into the embedding's output not)."""

from __future__ import annotations

import torch
from torch import nn

import gradwell


class PaddedSqrt(nn.Module):
    """sqrt(|e|) of a padded embedding: at the padding token e = 0, so d sqrt/de is NaN there,
    and the embedding drops exactly those rows' gradient (``padding_idx``)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 4, padding_idx=0)
        self.head = nn.Linear(4, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.emb(ids).abs().sqrt()).mean(1)


def test_a_backward_nan_that_reaches_no_parameter_is_reported_and_explained():
    torch.manual_seed(0)
    model, ids = PaddedSqrt(), torch.tensor([[1, 2, 0, 3], [4, 0, 5, 6]])
    seen = []
    model.emb.register_forward_hook(lambda m, i, out: out.register_hook(seen.append) and None)
    with gradwell.watch(model) as mon:
        loss = nn.functional.cross_entropy(model(ids), torch.tensor([0, 1]))
        loss.backward()
        mon.step(loss)
    assert torch.isfinite(loss) and not torch.isfinite(seen[0]).all()        # torch
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    (f,) = [f for f in mon.findings() if f.kind == "nonfinite"]
    assert (f.layer, f.evidence["where"]) == ("emb", "backward")
    assert "0 of 3 parameter gradients non-finite (it reached no parameter" in f.message
