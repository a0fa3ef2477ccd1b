"""gradwell.locate under activation checkpointing (``torch.utils.checkpoint``).

A reentrant checkpoint refuses ``torch.autograd.grad`` ("incompatible with .grad()"), which
the backward replay used: a NaN born in the backward of a checkpointed block made the
``with gradwell.locate(...)`` block raise that RuntimeError. The replay must name the node and
module, and leave every ``.grad`` as the step left it.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gradwell
from checkpointed import Checkpointed


class SqrtNorm(nn.Module):
    """``x / (1 + ||x||)``: its gradient is NaN at a zero row (d sqrt(s) / ds at 0)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / (1 + x.pow(2).sum(-1, keepdim=True).sqrt())


class Block(nn.Module):
    def __init__(self, d: int, norm: bool) -> None:
        super().__init__()
        self.fc, self.act, self.fc2 = nn.Linear(d, d), nn.Tanh(), nn.Linear(d, d)
        self.n = SqrtNorm() if norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(self.n(self.act(self.fc(x))))


def net(reentrant: bool | None, zero_block: bool, d: int = 16) -> Checkpointed:
    """Three residual blocks, each run through ``checkpoint`` (``reentrant=None``: not)."""
    torch.manual_seed(0)
    model = Checkpointed(nn.Linear(8, d), [Block(d, i == 1) for i in range(3)], nn.Linear(d, 4),
                         reentrant)
    if zero_block:              # block 1's tanh outputs 0: the backward of its norm is NaN
        with torch.no_grad():
            model.blocks[1].fc.weight.zero_()
            model.blocks[1].fc.bias.zero_()
    return model


def _step(model: nn.Module) -> torch.Tensor:
    torch.manual_seed(1)
    x, y = torch.randn(6, 8), torch.randint(0, 4, (6,))
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    return loss


@pytest.mark.parametrize("reentrant", [True, False])
def test_a_nan_born_in_a_checkpointed_backward_is_named(reentrant):
    plain = net(None, zero_block=True)
    loss = _step(plain)                        # torch-only: the forward is finite, a gradient not
    assert torch.isfinite(loss) and not all(torch.isfinite(p.grad).all()
                                            for p in plain.parameters())
    model = net(reentrant, zero_block=True)
    with gradwell.locate(model) as loc:
        _step(model)
    o = loc.origin
    assert (o.phase, o.module, o.node, o.kind) == ("backward", "blocks.1.n", "SqrtBackward0",
                                                   "nan")
    for (name, p), q in zip(model.named_parameters(), plain.parameters()):
        assert torch.equal(p.grad.isnan(), q.grad.isnan()), name
        assert torch.allclose(p.grad.nan_to_num(), q.grad.nan_to_num(), atol=1e-6), name


def test_a_replay_through_a_reentrant_checkpoint_leaves_the_gradients_as_they_were():
    model = net(True, zero_block=True)
    with gradwell.locate(model):
        _step(model)
        before = [p.grad.clone() for p in model.parameters()]
    for p, g in zip(model.parameters(), before):
        assert torch.equal(p.grad.nan_to_num(), g.nan_to_num())
        assert torch.equal(p.grad.isnan(), g.isnan())
