"""Small Lightning set-ups for the callback tests."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from integration_helpers import make_optimizer, make_scheduler
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def loader(data: list[tuple[torch.Tensor, torch.Tensor]]) -> DataLoader:
    """Batches in order, one per step (no shuffling, no workers)."""
    xs = torch.cat([x for x, _ in data])
    ys = torch.cat([y for _, y in data])
    return DataLoader(TensorDataset(xs, ys), batch_size=len(data[0][0]), shuffle=False)


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


def fit(module: pl.LightningModule, data: list, callbacks: list, **kwargs: Any) -> pl.Trainer:
    """``Trainer.fit`` for one epoch on the CPU, quietly, nothing written unless asked."""
    opts = dict(accelerator="cpu", devices=1, max_epochs=1, logger=False,
                enable_checkpointing=False, enable_progress_bar=False,
                enable_model_summary=False, num_sanity_val_steps=0)
    opts.update(kwargs)
    trainer = pl.Trainer(callbacks=callbacks, **opts)
    trainer.fit(module, loader(data))
    return trainer
