"""The loss the Hugging Face callback records, against torch's cross-entropy of each step."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments  # noqa: E402

from gradwell.integrations.transformers import GradwellCallback  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:(?!gradwell)",
                                        "ignore::UserWarning", "ignore::FutureWarning")


def _rows(n: int) -> list[dict[str, torch.Tensor]]:
    """Token rows of 12; row i has its first i % 5 labels masked (-100), so micro-batches
    hold different numbers of predicted tokens."""
    g = torch.Generator().manual_seed(0)
    rows = []
    for i in range(n):
        ids = torch.randint(0, 64, (12,), generator=g)
        labels = ids.clone()
        labels[:i % 5] = -100
        rows.append({"input_ids": ids, "labels": labels})
    return rows


def _window_loss(model: torch.nn.Module, rows: list[dict[str, torch.Tensor]]) -> float:
    """Torch's mean next-token cross-entropy over every predicted token of ``rows``."""
    ids = torch.stack([r["input_ids"] for r in rows])
    labels = torch.stack([r["labels"] for r in rows])
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    return torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                             labels[:, 1:].reshape(-1)).item()


def test_gpt2_loss_is_the_steps_token_mean_under_accumulation(tmp_path):
    """GPT-2 from a config, gradient_accumulation_steps=4: the Trainer has the model divide
    each micro-batch's summed loss by the whole step's token count (num_items_in_batch). The
    recorded loss of each step is torch's token-mean cross-entropy over that step's 4
    micro-batches (learning rate 0: the model is the same at every step)."""
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64,
                                       n_positions=16, resid_pdrop=0.0, embd_pdrop=0.0,
                                       attn_pdrop=0.0))
    model.loss_type = "ForCausalLM"   # else the Trainer counts unshifted labels (12 per row)
    rows = _rows(24)
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=2,
                             gradient_accumulation_steps=4, learning_rate=0.0,
                             num_train_epochs=1, logging_steps=1, report_to=[],
                             save_strategy="no", use_cpu=True, disable_tqdm=True,
                             train_sampling_strategy="sequential", dataloader_num_workers=0)
    cb = GradwellCallback(verbose=False)
    Trainer(model=model, args=args, train_dataset=rows, callbacks=[cb]).train()
    model.eval()
    want = [_window_loss(model, rows[i:i + 8]) for i in range(0, 24, 8)]
    _, _, got = cb.session.monitor.history.series("loss")
    np.testing.assert_allclose(got[:, 0], want, rtol=1e-5)
