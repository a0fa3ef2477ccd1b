"""A torch model whose blocks run through ``torch.utils.checkpoint``, for the tests of
activation checkpointing (the watch's, the locator's and the guard's)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


class Checkpointed(nn.Module):
    """``head(blocks(inp(x)))``, each block through ``checkpoint(block, h,
    use_reentrant=reentrant)``; ``reentrant=None``: no checkpoint (the plain twin)."""

    def __init__(self, inp: nn.Module, blocks: list[nn.Module], head: nn.Module,
                 reentrant: bool | None) -> None:
        super().__init__()
        self.inp, self.blocks, self.head = inp, nn.ModuleList(blocks), head
        self.reentrant = reentrant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        for b in self.blocks:
            h = b(h) if self.reentrant is None else checkpoint(b, h, use_reentrant=self.reentrant)
        return self.head(h)
