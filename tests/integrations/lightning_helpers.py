"""Small Lightning set-ups for the callback tests, and the torch-only loops they are checked
against (the same model, batches, accumulation, clipping and schedule, written by hand)."""

from __future__ import annotations

import copy
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


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


def loader(data: list[tuple[torch.Tensor, torch.Tensor]]) -> DataLoader:
    """Batches in order, one per step (no shuffling, no workers)."""
    xs = torch.cat([x for x, _ in data])
    ys = torch.cat([y for _, y in data])
    return DataLoader(TensorDataset(xs, ys), batch_size=len(data[0][0]), shuffle=False)


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


class Regressor(pl.LightningModule):
    """MSE regression around ``net``; Adam or SGD, optionally a per-step LambdaLR."""

    def __init__(self, net: nn.Module, lr: float = 1e-2, optimizer: str = "adam",
                 schedule: bool = False) -> None:
        super().__init__()
        self.net, self.lr, self.opt_name, self.schedule = net, lr, optimizer, schedule
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.calls += 1
        x, y = batch
        return nn.functional.mse_loss(self(x).float(), y)

    def configure_optimizers(self) -> Any:
        opt = make_optimizer(self.opt_name, self.parameters(), self.lr)
        if not self.schedule:
            return opt
        return {"optimizer": opt, "lr_scheduler": {"scheduler": make_scheduler(opt),
                                                   "interval": "step"}}


def make_optimizer(name: str, params: Any, lr: float) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    return torch.optim.SGD(params, lr=lr, momentum=0.9)


def make_scheduler(opt: torch.optim.Optimizer) -> Any:
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1.0 + s))


def fit(module: pl.LightningModule, data: list, callbacks: list, **kwargs: Any) -> pl.Trainer:
    """``Trainer.fit`` for one epoch on the CPU, quietly, nothing written unless asked."""
    opts = dict(accelerator="cpu", devices=1, max_epochs=1, logger=False,
                enable_checkpointing=False, enable_progress_bar=False,
                enable_model_summary=False, num_sanity_val_steps=0)
    opts.update(kwargs)
    trainer = pl.Trainer(callbacks=callbacks, **opts)
    trainer.fit(module, loader(data))
    return trainer


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
