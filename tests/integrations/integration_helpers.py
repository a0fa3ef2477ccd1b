"""Torch-only pieces the integration tests share: batches, small models, and the hand-written
loops (the same model, batches, accumulation, clipping and schedule) the callbacks must match."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


def batches(n: int, size: int = 8, features: int = 6, nan_at: int | None = None,
            seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``n`` regression batches; batch ``nan_at`` gets a NaN input."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        x = torch.randn(size, features, generator=g)
        y = x[:, :1] * 0.5 - x[:, 1:2] + 0.1 * torch.randn(size, 1, generator=g)
        if i == nan_at:
            x = x.clone()
            x[0, 0] = float("nan")
        out.append((x, y))
    return out


def mlp(features: int = 6, width: int = 16, depth: int = 3, act: type = nn.Tanh,
        seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    d = features
    for _ in range(depth):
        layers += [nn.Linear(d, width), act()]
        d = width
    layers.append(nn.Linear(d, 1))
    return nn.Sequential(*layers)


def make_optimizer(name: str, params: Any, lr: float) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    return torch.optim.SGD(params, lr=lr, momentum=0.9)


def make_scheduler(opt: torch.optim.Optimizer) -> Any:
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1.0 + s))


def torch_loop(net: nn.Module, data: list, *, lr: float = 1e-2, optimizer: str = "adam",
               schedule: bool = False, accumulate: int = 1, clip: float | None = None,
               bf16: bool = False) -> dict[str, Any]:
    """What the Lightning run must do, in plain torch: per-step pre-clip gradient norms of
    every Linear layer, and the final model, optimizer and scheduler."""
    net = copy.deepcopy(net)
    opt = make_optimizer(optimizer, net.parameters(), lr)
    sched = make_scheduler(opt) if schedule else None
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    layer_norms, totals = [], []
    for i, (x, y) in enumerate(data):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = net(x)
        loss = nn.functional.mse_loss(out.float(), y) / accumulate
        loss.backward()
        if (i + 1) % accumulate:
            continue
        grads = [p.grad for p in net.parameters()]
        totals.append(torch.linalg.vector_norm(torch.stack(
            [torch.linalg.vector_norm(g) for g in grads])).item())
        layer_norms.append([torch.linalg.vector_norm(torch.cat(
            [m.weight.grad.flatten(), m.bias.grad.flatten()])).item() for m in linears])
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
        opt.step()
        opt.zero_grad()
        if sched is not None:
            sched.step()
    return {"net": net, "opt": opt, "sched": sched, "layer_norms": layer_norms,
            "totals": totals}


def assert_same_state(a: nn.Module, b: nn.Module, opt_a: Any, opt_b: Any) -> None:
    """Parameters and optimizer state bit for bit equal."""
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(pa, pb), f"parameter {name} differs"
    sa, sb = opt_a.state_dict()["state"], opt_b.state_dict()["state"]
    assert sa.keys() == sb.keys()
    for k in sa:
        for key in sa[k]:
            assert torch.equal(torch.as_tensor(sa[k][key]), torch.as_tensor(sb[k][key])), \
                f"optimizer state {k}/{key} differs"
