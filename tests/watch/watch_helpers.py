"""Shared builders for the watch/diagnose tests: digits data, MLPs, a training loop."""

from __future__ import annotations

from typing import Any, Callable

import torch
from sklearn.datasets import load_digits
from torch import nn

import gradwell

_DIGITS: tuple[torch.Tensor, torch.Tensor] | None = None


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's bundled 8x8 digits (1797 x 64), standardised per pixel."""
    global _DIGITS
    if _DIGITS is None:
        d = load_digits()
        x = torch.tensor(d.data, dtype=torch.float32)
        x = (x - x.mean(0)) / (x.std(0) + 1e-6)
        _DIGITS = (x, torch.tensor(d.target))
    return _DIGITS


class Residual(nn.Module):
    """x + act(norm(linear(x)))."""

    def __init__(self, width: int, act: Callable[[], nn.Module]) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width)
        self.norm = nn.BatchNorm1d(width)
        self.act = act()
        nn.init.kaiming_normal_(self.linear.weight, nonlinearity="relu")
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.act(self.norm(self.linear(x)))


def mlp(depth: int, width: int = 64, act: Callable[[], nn.Module] = nn.ReLU, *,
        weight_std: float | None = None, bias: float | None = None, norm: bool = False,
        seed: int = 0) -> nn.Sequential:
    """``depth`` hidden layers Linear [-> BatchNorm] -> act, then Linear(width, 10).

    ``weight_std`` is a multiple of 1/sqrt(fan_in) for the hidden weights (None: torch default).
    """
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    fan_in = 64
    for _ in range(depth):
        lin = nn.Linear(fan_in, width)
        if weight_std is not None:
            nn.init.normal_(lin.weight, 0.0, weight_std / fan_in ** 0.5)
        if bias is not None:
            nn.init.constant_(lin.bias, bias)
        layers += [lin] + ([nn.BatchNorm1d(width)] if norm else []) + [act()]
        fan_in = width
    layers.append(nn.Linear(fan_in, 10))
    return nn.Sequential(*layers)


def resnet(blocks: int, width: int = 64, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    stem = nn.Linear(64, width)
    nn.init.kaiming_normal_(stem.weight, nonlinearity="relu")
    return nn.Sequential(stem, nn.ReLU(), *[Residual(width, nn.ReLU) for _ in range(blocks)],
                         nn.Linear(width, 10))


def batches(steps: int, batch: int = 64, seed: int = 0):
    x, y = digits()
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (batch,), generator=g)
        yield x[idx].clone(), y[idx]


def train(model: nn.Module, steps: int = 40, lr: float = 0.05, optimizer: str = "sgd",
          on_batch: Callable[[int, torch.Tensor, nn.Module], None] | None = None,
          **watch_kwargs: Any):
    """Train on digits with ``mon.step(loss)``; returns the closed monitor."""
    opt: torch.optim.Optimizer
    if optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=lr)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=lr)
    with gradwell.watch(model, **watch_kwargs) as mon:
        for step, (xb, yb) in enumerate(batches(steps)):
            if on_batch is not None:
                on_batch(step, xb, model)
            loss = nn.functional.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            mon.step(loss)
            opt.step()
    return mon


def kinds(mon: Any) -> set[str]:
    return {f.kind for f in mon.findings()}
