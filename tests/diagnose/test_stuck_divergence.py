"""A learning rate so high that the loss jumps about and comes back only to where it started.

Hugging Face ViT from a config (random init), AdamW: at lr 0.3 the loss leaps to several
times its starting (chance) value again and again and ends no lower than it began; the old
divergence rule waited for a loss that stays high and saw none, so the run got only an
attention-logit warning. At lr 1e-3 the same run learns and must get no warning or error, and
a run that starts from a lucky low first batch and then learns is no divergence. A run that
leaps the same way but ends below where it started (Hugging Face ELECTRA at lr 0.3) is
unstable: a warning. Torch-only evidence (the losses the test records) decides each.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

import gradwell

STEPS = 60


def _vit_run(lr: float) -> tuple[list[float], list]:
    transformers = pytest.importorskip("transformers")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    torch.manual_seed(0)
    cfg = transformers.ViTConfig(image_size=16, patch_size=4, num_channels=3, hidden_size=32,
                                 num_hidden_layers=2, num_attention_heads=4,
                                 intermediate_size=64, num_labels=4)
    model = transformers.ViTForImageClassification(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    mon = gradwell.watch(model, optimizer=opt)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, 16, 16, generator=g)
    y = (x[:, 0, :8].mean((1, 2)) > 0).long() + 2 * (x[:, 1, 8:].mean((1, 2)) > 0).long()
    losses = []
    for i in range(STEPS):
        idx = torch.arange(i * 16, i * 16 + 16) % 64
        loss = model(pixel_values=x[idx], labels=y[idx]).loss
        loss.backward()
        mon.step(loss)
        opt.step()
        opt.zero_grad()
        losses.append(float(loss.detach()))
    mon.close()
    return losses, mon.findings()


def test_repeated_excursions_that_never_learn_are_divergence_at_the_first_one():
    losses, findings = _vit_run(0.3)
    loss = np.array(losses)
    big = _leaps(loss)
    assert len(big) >= 3                               # torch: it leaps, again and again
    assert np.median(loss[-3:]) >= loss[0]             # and ends no lower than it began
    found = [f for f in findings if f.kind == "divergence"]
    assert found and found[0].severity == "error" and found[0].step == big[0]
    assert found[0].evidence["excursions"] == len(big)
    assert "has not learned since" in found[0].message
    assert "lower the learning rate" in found[0].remedies[0]


def test_the_same_run_at_a_sane_learning_rate_learns_and_gets_no_warning():
    losses, findings = _vit_run(1e-3)
    assert np.mean(losses[-5:]) < 0.6 * losses[0]      # torch: the loss falls
    assert not [f for f in findings if f.severity != "info"], findings


def _recorded(losses: list[float]) -> gradwell.watch.Monitor:
    """A closed monitor that recorded ``losses`` (a tiny model's real steps, only the loss
    given is the record's)."""
    model = torch.nn.Linear(2, 1)
    mon = gradwell.watch(model, activations=False)
    for value in losses:
        model.zero_grad()
        model(torch.ones(1, 2)).sum().backward()
        mon.step(torch.tensor(value))
    mon.close()
    return mon


def test_a_lucky_low_first_loss_then_learning_is_no_divergence():
    # the loss record of a run whose first batch was easy (0.5), whose next losses are 2.5
    # and which then learns down to 0.6: above 3x the first for a while, never below it, and
    # yet learning all along (no loss is undone by half at the next step)
    losses = [0.5] + list(np.linspace(2.5, 0.6, 30))
    mon = _recorded(losses)
    loss = np.array(losses)
    run_min = np.minimum.accumulate(loss)
    assert (loss[1:10] > 3 * run_min[:9]).all() and np.median(loss[-3:]) >= loss[0]
    assert not [f for f in mon.findings() if f.kind == "divergence"], mon.findings()


def _leaps(loss: np.ndarray) -> list[int]:
    """Steps whose loss is above 3x its running minimum and above the first, and which the
    next loss halves (computed here from the recorded losses alone)."""
    run_min = np.minimum.accumulate(loss)
    return [s for s in range(1, loss.size - 1) if loss[s] > 3 * run_min[s - 1]
            and loss[s] > loss[0] and loss[s + 1] <= loss[s] / 2]


def test_leaps_that_end_below_the_start_are_an_unstable_run_a_warning():
    """Hugging Face ELECTRA (a binary classifier from a config) under Adam at lr 0.3: the loss
    leaps from chance (0.69) to 42 and back again and again, and only in its last steps falls
    below where it began; at lr 3e-3 the same model learns to 0.01. Unstable, not diverged:
    a warning from the first leap, whose remedy is a lower learning rate."""
    transformers = pytest.importorskip("transformers")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    torch.manual_seed(0)
    cfg = transformers.ElectraConfig(vocab_size=64, embedding_size=32, hidden_size=32,
                                     intermediate_size=64, num_hidden_layers=2,
                                     num_attention_heads=4, max_position_embeddings=16)
    model = transformers.ElectraForSequenceClassification(cfg)
    g = torch.Generator().manual_seed(0)
    start = torch.randint(0, 64, (8, 1), generator=g)
    ids, labels = (start + torch.arange(16)) % 64, (start[:, 0] % 2).long()
    opt = torch.optim.Adam(model.parameters(), lr=0.3)
    mon, losses = gradwell.watch(model), []
    for _ in range(40):
        loss = model(input_ids=ids, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        mon.step(loss)
        opt.step()
        losses.append(float(loss.detach()))
    mon.close()
    loss = np.array(losses)
    big = _leaps(loss)
    assert len(big) >= 3 and np.median(loss[-3:]) < loss[0]          # torch: leaps, then lower
    found = [f for f in mon.findings() if f.kind == "divergence"]
    assert found and found[0].severity == "warning" and found[0].step == big[0]
    assert found[0].evidence["recovered"] and found[0].evidence["excursions"] == len(big)
    assert "unstable at this learning rate" in found[0].message
    assert "lower the learning rate" in found[0].remedies[0]
    assert "post-LN transformer" in found[0].remedies[1]     # ELECTRA normalises after sums


def test_one_lucky_batch_among_the_last_losses_is_no_divergence():
    # the per-batch losses of a short noisy regression run (a second fit of 5 steps whose loss
    # over all the data fell from 0.149 to 0.090): the 4th batch was easy (0.027), so the last
    # losses are 5x that minimum, and yet no higher than 1.6x the lowest loss before them
    losses = [0.086, 0.20, 0.14, 0.027, 0.14]
    mon = _recorded(losses)
    loss = np.array(losses)
    assert np.median(loss[-3:]) > 3 * loss.min() and np.median(loss[-3:]) > loss[0]
    assert np.median(loss[-3:]) < 3 * loss[:2].min()
    assert not [f for f in mon.findings() if f.kind == "divergence"], mon.findings()
