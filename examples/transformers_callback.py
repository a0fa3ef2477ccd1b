"""gradwell in a Hugging Face Trainer run: per-layer gradients, findings, exact skips.

    python examples/transformers_callback.py

Trains a small GPT-2 built from a config (random init, nothing downloaded) to continue
arithmetic token sequences, with ``max_grad_norm=1.0``. ``GradwellCallback(guard=True)``
reads the gradients before the Trainer clips them, adds ``gradwell/...`` scalars to every
training log in ``trainer.state.log_history``, and adds the findings at the end.
"""

import tempfile

import torch
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

from gradwell.integrations.transformers import GradwellCallback


def main(epochs: int = 3) -> Trainer:
    """Returns the trainer (its ``state.log_history`` holds the gradwell entries)."""
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=32, n_positions=16, n_embd=32, n_layer=2, n_head=2)
    model = GPT2LMHeadModel(config)
    rows = []
    for i in range(96):
        ids = (torch.arange(16) * (1 + i % 3) + i % 8) % 32
        rows.append({"input_ids": ids, "labels": ids})
    callback = GradwellCallback(guard=True)            # the two lines that matter
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, per_device_train_batch_size=8,
                                 num_train_epochs=epochs, learning_rate=3e-3, max_grad_norm=1.0,
                                 logging_steps=6, report_to="none", save_strategy="no",
                                 use_cpu=True, disable_tqdm=True)
        trainer = Trainer(model=model, args=args, train_dataset=rows, callbacks=[callback])
        trainer.train()
    for entry in trainer.state.log_history:
        if "gradwell/grad_norm" in entry:
            print(f"step {entry['step']:3d}  loss {entry['loss']:.3f}  "
                  f"gradwell/grad_norm {entry['gradwell/grad_norm']:.3f}  "
                  f"gradwell/rel_grad_min {entry['gradwell/rel_grad_min']:.2e}")
    return trainer


if __name__ == "__main__":
    main()
