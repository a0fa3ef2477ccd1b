"""Compose an optimizer from gradient transformations, optax style.

    python examples/compose_optimizer.py

``chain(GlobalNorm(1.0), add_decayed_weights(1e-4), scale_by_adam())`` is Adam with coupled L2
weight decay and per-group global-norm clipping; the check at the end shows it matches
``clip_grad_norm_`` followed by ``torch.optim.Adam(weight_decay=1e-4)`` to rounding.

Each element owns its hyperparameters, as in optax: ``add_decayed_weights`` twice, once before
Adam (L2) and once after it (AdamW's decoupled decay), has the group keys ``weight_decay@0`` and
``weight_decay@2``; :func:`twice` checks it against torch's Adam plus the decoupled term.
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
    return max(gap, twice(steps))


def twice(steps: int = 50) -> float:
    """``chain(add_decayed_weights(1e-4), scale_by_adam(), add_decayed_weights(1e-2))``."""
    torch.manual_seed(1)
    model = torch.nn.Linear(8, 1)
    reference = copy.deepcopy(model)
    mine = Optimizer(model.parameters(), chain(add_decayed_weights(1e-4), scale_by_adam(),
                                               add_decayed_weights(1e-2)), lr=1e-2)
    theirs = torch.optim.Adam(reference.parameters(), lr=1e-2, weight_decay=1e-4)
    x, y = torch.randn(64, 8), torch.randn(64, 1)
    for _ in range(steps):
        for net, opt in ((model, mine), (reference, theirs)):
            opt.zero_grad()
            torch.nn.functional.mse_loss(net(x), y).backward()
            before = [p.detach().clone() for p in net.parameters()]
            opt.step()
            if opt is theirs:  # the decoupled term, AdamW's lr * weight_decay * p
                with torch.no_grad():
                    for p, b in zip(net.parameters(), before):
                        p.sub_(1e-2 * 1e-2 * b)
    keys = sorted(k for k in mine.param_groups[0] if k.startswith("weight_decay"))
    gap = max((a - b).abs().max().item() for a, b in zip(model.parameters(),
                                                        reference.parameters()))
    print(f"group keys {keys}; largest difference from Adam + decoupled decay: {gap:.2e}")
    return gap


if __name__ == "__main__":
    main()
