"""Run by test_lightning_ddp.py: Lightning's DDP strategy on the CPU (2 processes, gloo) with
GradwellCallback(guard=True); each rank saves its parameters, guard events and findings.

    python ddp_lightning_run.py OUT_DIR     (Lightning starts the second rank itself)
"""

import sys
from pathlib import Path

import lightning.pytorch as pl
import torch
from integration_helpers import batches, mlp
from lightning_helpers import Regressor
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from gradwell.integrations.lightning import GradwellCallback

#: global batches of 16 samples (8 per rank); batch 3 holds a NaN in a sample of rank 0.
DATA = batches(8, size=16, nan_at=3)


class Sharded(Regressor):
    """Rank r takes samples r, r+2, ... in order (Lightning's own sampler would shuffle)."""

    def train_dataloader(self) -> DataLoader:
        ds = TensorDataset(torch.cat([x for x, _ in DATA]), torch.cat([y for _, y in DATA]))
        sampler = DistributedSampler(ds, num_replicas=self.trainer.world_size,
                                     rank=self.trainer.global_rank, shuffle=False)
        return DataLoader(ds, batch_size=8, sampler=sampler)


def main(out: Path) -> None:
    torch.set_num_threads(1)
    cb = GradwellCallback(guard=True, verbose=False)
    module = Sharded(mlp(), schedule=True)
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=1,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[cb],
                         accumulate_grad_batches=2, gradient_clip_val=0.5,
                         use_distributed_sampler=False)
    trainer.fit(module)
    torch.save({"params": [p.detach().clone() for p in module.net.parameters()],
                "events": [(e.step, e.action, e.reason) for e in cb.session.guard.events],
                "findings": [f.kind for f in cb.findings()],
                "grad_norm": cb.session.monitor.history.series("grad_norm")[2].tolist(),
                "last_epoch": trainer.lr_scheduler_configs[0].scheduler.last_epoch},
               out / f"rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
