"""The doctor on a transformer whose attention logits grow: QK-layernorm, measured.

A 1-block :class:`gradwell.nn.TinyTransformer` learns the copy task (4 random tokens, then the
same 4 again) with Adam at lr 0.1, too high for it: its attention logits ``q.k / sqrt(d)`` grow
past 100 and the softmax turns one-hot (Wortsman et al. 2023). The baseline's monitor reports
``attention_logits``; the doctor tries QK-layernorm (the model rebuilt with ``qk_norm=True``),
a learning rate from ``lr_find`` and a warm-up, each over the same seeds and batches. With the
default 200 steps QK-layernorm ranks first (docs/doctor.md has the numbers).

    python examples/doctor_transformer.py          # 200 steps x 3 seeds, about 15 s
    gradwell doctor examples/doctor_transformer.py --lr 0.1
"""

from __future__ import annotations

from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import gradwell
from gradwell.lab import data

#: the copy task: tokens 0..15, sequences of 2 * 4 - 1 = 7 positions
VOCAB, HALF = 16, 4


def make_model() -> nn.Module:
    """One pre-LN block, width 32, 2 heads, without QK-layernorm."""
    return gradwell.nn.TinyTransformer(VOCAB, 2 * HALF - 1, d_model=32, heads=2, layers=1)


def make_data() -> DataLoader:
    """640 copy-task sequences in batches of 64 (the model's logits are ``(batch, vocab, T)``,
    the layout ``nn.CrossEntropyLoss`` takes for targets ``(batch, T)``)."""
    d = data.copy(half=HALF, vocab=VOCAB, n_train=640)
    return DataLoader(TensorDataset(d.x_train, d.y_train), batch_size=64)


def main(steps: int = 200, lr: float = 0.1) -> "gradwell.doctor.Report":
    report = gradwell.doctor(make_model, make_data(), nn.CrossEntropyLoss(), lr=lr,
                             budget_steps=steps, progress=False)
    report.print()
    return report


if __name__ == "__main__":
    main()
