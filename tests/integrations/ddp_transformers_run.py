"""Run by test_transformers_ddp.py under ``torch.distributed.run --nproc_per_node 2`` on the
CPU (gloo): the Hugging Face Trainer with GradwellCallback(guard=True); each rank saves its
parameters, guard events and findings.
"""

import sys
from pathlib import Path

import torch
from integration_helpers import batches, make_optimizer, make_scheduler, mlp
from test_transformers import Regressor
from transformers import Trainer, TrainingArguments

from gradwell.integrations.transformers import GradwellCallback

#: global batches of 16 samples (8 per rank); batch 3 holds a NaN in a sample of rank 0.
DATA = batches(8, size=16, nan_at=3)


def main(out: Path) -> None:
    torch.set_num_threads(1)
    rows = [{"x": x[i], "labels": y[i]} for x, y in DATA for i in range(len(x))]
    model = Regressor(mlp())
    opt = make_optimizer("adam", model.parameters(), 1e-2)
    args = TrainingArguments(output_dir=str(out / "trainer"), per_device_train_batch_size=8,
                             gradient_accumulation_steps=2, max_grad_norm=0.5,
                             num_train_epochs=1, logging_steps=1, report_to="none",
                             save_strategy="no", use_cpu=True, ddp_backend="gloo",
                             train_sampling_strategy="sequential", disable_tqdm=True,
                             dataloader_num_workers=0)
    cb = GradwellCallback(guard=True, verbose=False)
    trainer = Trainer(model=model, args=args, train_dataset=rows,
                      optimizers=(opt, make_scheduler(opt)), callbacks=[cb])
    trainer.train()
    torch.save({"params": [p.detach().clone() for p in model.net.parameters()],
                "events": [(e.step, e.action, e.reason) for e in cb.session.guard.events],
                "findings": [f.kind for f in cb.findings()],
                "grad_norm": cb.session.monitor.history.series("grad_norm")[2].tolist(),
                "last_epoch": trainer.lr_scheduler.last_epoch,
                "logged": [e["gradwell/grad_norm"] for e in trainer.state.log_history
                           if "gradwell/grad_norm" in e]},
               out / f"rank{trainer.args.process_index}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
