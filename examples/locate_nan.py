"""Where was the NaN born? ``gradwell.locate`` on a hand-written loss that breaks on one batch.

    python examples/locate_nan.py

A 3-layer MLP on scikit-learn's digits (bundled, offline) is trained with a hand-written
cross-entropy, ``-log(softmax(z))[y]``. At step 40 a batch arrives with its inputs scaled by
300 (a preprocessing bug): the logits grow so large that softmax underflows to exactly 0 for
some classes, and log(0) = -inf there. The gather of the true class drops those entries, so
the loss itself is finite - but the gradient of log, g / x, is 0 / 0 = NaN at them.
``gradwell.locate`` names the node (``LogBackward0``, in the loss's backward), its finite
incoming gradients, and the fix; the same batch with ``log_softmax`` (the log-sum-exp form)
has finite gradients.
"""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits
from torch import nn

import gradwell


def handwritten_ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return -torch.log(torch.softmax(logits, dim=1)).gather(1, y[:, None]).mean()


def fixed_ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return -torch.log_softmax(logits, dim=1).gather(1, y[:, None]).mean()


def main(steps: int = 60, bad_step: int = 40) -> dict:
    torch.manual_seed(0)
    d = load_digits()
    x, y = torch.tensor(d.data, dtype=torch.float32) / 16.0, torch.tensor(d.target)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                          nn.Linear(64, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    result: dict = {}
    for step in range(steps):
        idx = torch.randint(0, len(x), (64,))
        xb = x[idx] * (300.0 if step == bad_step else 1.0)
        opt.zero_grad()
        with gradwell.locate(model) as loc:
            loss = handwritten_ce(model(xb), y[idx])
            loss.backward()
        if loc.origin is not None:
            print(f"step {step}: {loc.origin}")
            opt.zero_grad()
            fixed = fixed_ce(model(xb), y[idx])
            fixed.backward()
            result["fixed_finite"] = all(bool(torch.isfinite(p.grad).all())
                                         for p in model.parameters())
            result["fixed_loss"] = float(fixed.detach())
            opt.zero_grad()
            result["origin"], result["step"] = loc.origin, step
            continue                                  # do not apply a broken step
        opt.step()
    print(f"the same batch with log_softmax: loss {result.get('fixed_loss', float('nan')):.4g}, "
          f"finite gradients: {result.get('fixed_finite')}")
    return result


if __name__ == "__main__":
    main()
