"""Compose an optimizer from gradient transformations, optax style.

    python examples/compose_optimizer.py

``chain(GlobalNorm(1.0), add_decayed_weights(1e-4), scale_by_adam())`` is Adam with coupled L2
weight decay and per-group global-norm clipping; the check at the end shows it matches
``clip_grad_norm_`` followed by ``torch.optim.Adam(weight_decay=1e-4)`` to rounding.
"""

import copy

import torch

from gradwell.clip import GlobalNorm
from gradwell.optim import Optimizer, add_decayed_weights, chain, scale_by_adam


def main(steps: int = 50) -> float:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    reference = copy.deepcopy(model)
    mine = Optimizer(model.parameters(),
                     chain(GlobalNorm(1.0), add_decayed_weights(1e-4), scale_by_adam()),
                     lr=1e-2)
    theirs = torch.optim.Adam(reference.parameters(), lr=1e-2, weight_decay=1e-4)
    x, y = torch.randn(64, 8), torch.randn(64, 1)
    for _ in range(steps):
        for net, opt in ((model, mine), (reference, theirs)):
            opt.zero_grad()
            torch.nn.functional.mse_loss(net(x), y).backward()
            if opt is theirs:
                torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
    gap = max((a - b).abs().max().item() for a, b in zip(model.parameters(),
                                                        reference.parameters()))
    print(mine)
    print(f"largest difference from clip_grad_norm_ + torch.optim.Adam: {gap:.2e}")
    return gap


if __name__ == "__main__":
    main()
