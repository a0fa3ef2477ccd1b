"""A guarded training run on scikit-learn's digits, with a NaN batch, an input spike and a
learning-rate burst injected; the same run without the guard, and a clean run, are shown for comparison.

    python examples/guard_digits.py
"""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits
from torch import nn

import gradwell

STEPS, LR = 400, 0.1
torch.set_num_threads(1)  # tiny tensors: more threads only add overhead


def run(guarded: bool, faults: bool = True) -> float:
    digits = load_digits()
    x_all = torch.tensor(digits.data, dtype=torch.float32) / 16
    y_all = torch.tensor(digits.target)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                          nn.Linear(64, 10))
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9, weight_decay=1e-2)
    guard = gradwell.guard.Guard(model, opt, snapshot_every=20, trust_after=5) if guarded else None
    gen = torch.Generator().manual_seed(0)
    for it in range(STEPS):
        idx = torch.randint(0, len(x_all), (64,), generator=gen)
        x, y = x_all[idx].clone(), y_all[idx]
        if faults and it == 50:
            x[0, 0] = float("nan")          # a corrupt sample
        if faults and it == 120:
            x = x * 1e4                      # a badly scaled batch: a loss spike
        burst = 30.0 if faults and 150 <= it < 155 else 1.0  # a learning rate too high for a moment
        lr_scale = guard.lr_scale if guard else 1.0  # the guard's cuts, if any
        for group in opt.param_groups:
            group["lr"] = LR * (1 - it / STEPS) * burst * lr_scale
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        if guard is None:
            opt.step()
        else:
            guard.step(loss)  # "ok" (it stepped), "skipped" or "rolled_back"
    if guard is not None:
        print("guard events (newly trusted snapshots left out):")
        for event in guard.events:
            if event.action != "trusted":
                print("  ", event)
        print("as findings (what gradwell.watch shows):")
        for finding in guard.findings()[:3]:
            print("  ", finding)
    with torch.no_grad():
        return float(nn.functional.cross_entropy(model(x_all), y_all))


if __name__ == "__main__":
    print(f"final loss of a clean run:    {run(False, faults=False):.4f}")
    print(f"final loss without the guard: {run(False):.4f}")
    print(f"final loss with the guard:    {run(True):.4f}")
