"""Find a vanishing gradient, read the remedy, apply it: a 20-layer sigmoid MLP on digits.

Run ``python examples/watch_digits.py``. It trains the network Glorot & Bengio (2010) warned
about - 20 sigmoid layers with torch's default init - on scikit-learn's bundled digits for 40
steps under ``gradwell.watch``, prints the findings (a ``vanishing`` error: the first layers
get 1e-15 of the top layer's relative gradient) and saves the gradient-flow figure. Then it
trains the remedy the finding names - ReLU with He init, BatchNorm and residual connections,
with a BatchNorm before the head as pre-activation ResNets end (each residual block adds to the
sum's variance, and without it the head's logits start large and SGD's loss leaps to 6x its
start) - and prints that the monitor finds nothing wrong and that the loss fell.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch
from sklearn.datasets import load_digits
from torch import nn

import gradwell


class Block(nn.Module):
    """x + ReLU(BN(Linear(x))) with He init: the remedy."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear, self.norm, self.act = nn.Linear(width, width), nn.BatchNorm1d(width), nn.ReLU()
        nn.init.kaiming_normal_(self.linear.weight, nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.act(self.norm(self.linear(x)))


def sigmoid_net() -> nn.Module:
    layers: list[nn.Module] = [nn.Linear(64, 64), nn.Sigmoid()]
    for _ in range(19):
        layers += [nn.Linear(64, 64), nn.Sigmoid()]
    return nn.Sequential(*layers, nn.Linear(64, 10))


def fixed_net() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), *[Block(64) for _ in range(19)],
                         nn.BatchNorm1d(64), nn.Linear(64, 10))


def train(model: nn.Module, steps: int = 40) -> gradwell.watch.Monitor:
    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32)
    x, y = (x - x.mean(0)) / (x.std(0) + 1e-6), torch.tensor(d.target)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(0)
    with gradwell.watch(model) as mon:                 # 1: watch the model
        for _ in range(steps):
            idx = torch.randint(0, len(x), (64,), generator=g)
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            mon.step(loss)                             # 2: record after backward
            opt.step()
    return mon


def main(out_dir: str | None = None) -> tuple[list, list, list[float]]:
    """Returns (findings of the sigmoid net, findings of the fixed net, its losses)."""
    torch.manual_seed(0)
    torch.set_flush_denormal(True)     # vanishing gradients are denormal floats: slow on CPUs
    sick = train(sigmoid_net())
    print("20-layer sigmoid MLP:")
    for f in sick.findings():
        print(f)
    figure = Path(out_dir or tempfile.mkdtemp()) / "gradient_flow.png"
    sick.plot(figure)
    print(f"gradient-flow figure: {figure}")
    healthy = train(fixed_net())
    losses = healthy.history.series("loss")[2][:, 0]
    ratio = float(losses[-5:].mean() / losses[:5].mean())
    print(f"\nReLU + He init + BatchNorm + residual: {len(healthy.findings())} findings, "
          f"loss x{ratio:.2f} in 40 steps")
    return sick.findings(), healthy.findings(), losses.tolist()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
