"""Full-batch gradient descent vs mini-batch SGD on sklearn's digits (runs in seconds on a CPU).

Gradient descent is ``gradwell.optim.SGD`` fed the gradient of the *whole* training set: one
step per epoch. Mini-batch SGD is the same optimizer fed 32 examples at a time: ~45 noisier but
45 times cheaper steps per epoch. For the same number of passes over the data, the mini-batch
run gets much further.

    python examples/gd_vs_sgd.py
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import gradwell

EPOCHS, BATCH = 30, 32


def data():
    x, y = load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(x / 16.0, y, test_size=0.25, random_state=0)
    as_t = lambda a, dt: torch.tensor(a, dtype=dt)  # noqa: E731
    return (as_t(x_tr, torch.float32), as_t(y_tr, torch.long),
            as_t(x_te, torch.float32), as_t(y_te, torch.long))


def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.Tanh(), torch.nn.Linear(32, 10))


def train(batch_size: int | None, lr: float) -> tuple[float, float, int]:
    x_tr, y_tr, x_te, y_te = data()
    net = model()
    opt = gradwell.optim.SGD(net.parameters(), lr=lr, momentum=0.0)
    steps = 0
    gen = torch.Generator().manual_seed(0)
    for _ in range(EPOCHS):
        order = torch.randperm(len(x_tr), generator=gen)
        size = batch_size or len(x_tr)          # None: the whole data set, i.e. gradient descent
        for start in range(0, len(x_tr), size):
            idx = order[start:start + size]
            opt.zero_grad()
            F.cross_entropy(net(x_tr[idx]), y_tr[idx]).backward()
            opt.step()
            steps += 1
    with torch.no_grad():
        loss = F.cross_entropy(net(x_tr), y_tr).item()
        acc = (net(x_te).argmax(1) == y_te).float().mean().item()
    return loss, acc, steps


def main() -> dict[str, tuple[float, float, int]]:
    """Print and return ``{method: (train loss, test accuracy, steps)}``."""
    results = {}
    print(f"{'method':<28}{'steps':>7}{'train loss':>12}{'test acc':>10}   ({EPOCHS} epochs)")
    for label, batch, lr in (("gradient descent (full)", None, 0.5),
                             (f"mini-batch SGD (b={BATCH})", BATCH, 0.05)):
        loss, acc, steps = results[label] = train(batch, lr)
        print(f"{label:<28}{steps:>7}{loss:>12.4f}{acc:>10.3f}")
    return results


if __name__ == "__main__":
    main()
