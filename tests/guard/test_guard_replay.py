"""Replay triage, culprit samples and the skip list: the guard names the batch that did it."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, TensorDataset

import gradwell
from gradwell.guard import Batch, SampleTracker, skipped_ids
from guard_helpers import digits

POISONED = {17, 230, 411, 802, 1100, 1501}     # NaN features
LABELS = {95, 640, 1333}                        # regression targets set to 1e4 (a spike)


def make(seed: int = 0, dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Dropout(dropout), nn.Linear(64, 10))


def poisoned_data(nan: set[int] = POISONED) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = digits()
    x = x.clone()
    for i in nan:
        x[i, 7] = float("nan")
    return x, y


def test_data_triage_names_the_poisoned_samples_and_writes_the_skip_list(tmp_path) -> None:
    x, y = poisoned_data({5, 40})
    model = make()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    guard = gradwell.guard.Guard(model, opt, snapshot_dir=tmp_path)
    ids = torch.arange(64)
    loss = F.cross_entropy(model(x[ids]), y[ids])
    loss.backward()
    assert guard.step(loss, replay=Batch(x[ids], y[ids], F.cross_entropy), samples=ids) == "skipped"
    event = guard.events[-1]
    assert event.detail["triage"] == "data" and event.detail["culprits"] == [5, 40]
    assert event.detail["origin"]["phase"] == "input" and event.detail["origin"]["op"] == "input"
    line = json.loads((tmp_path / "skipped.jsonl").read_text().splitlines()[0])
    assert line["samples"] == list(range(64)) and line["culprits"] == [5, 40]
    assert skipped_ids(tmp_path) == {5, 40} and len(skipped_ids(tmp_path, False)) == 64
    finding = guard.findings()[0]
    assert "replay: data" in finding.evidence["summary"] and "input" in finding.evidence["summary"]
    assert "skip list" in finding.remedies[0]


def test_reproducible_and_transient_steps_are_told_apart() -> None:
    class Exp(nn.Module):
        def forward(self, h: torch.Tensor) -> torch.Tensor:
            return torch.exp(h)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 16), Exp(), nn.Linear(16, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    guard = gradwell.guard.Guard(model, opt, spike_z=None)
    x, y = digits()
    xb, yb = x[:32] * 500, y[:32]               # finite data, exp overflows: reproducible
    loss = F.cross_entropy(model(xb), yb)
    loss.backward()
    guard.step(loss, replay=lambda: F.cross_entropy(model(xb), yb))
    ev = guard.events[-1]
    assert ev.detail["triage"] == "reproducible"
    assert (ev.detail["origin"]["module"], ev.detail["origin"]["op"]) == ("1", "aten.exp.default")
    assert guard.findings()[-1].layer == "1"
    # replayed already: no remedy asks for a replay; the origin's remedy comes first
    assert guard.findings()[-1].remedies[0] == ev.detail["origin"]["remedy"]
    assert not any("replay=" in r for r in guard.findings()[-1].remedies)
    xb = x[:32]                                   # a bit flip in one gradient: transient
    loss = F.cross_entropy(model(xb), yb)
    loss.backward()
    model[2].weight.grad[0, 0] = float("nan")
    guard.step(loss, replay=lambda: F.cross_entropy(model(xb), yb))
    assert guard.events[-1].detail == {**guard.events[-1].detail, "triage": "transient",
                                       "origin": None}
    remedies = guard.findings()[-1].remedies
    assert remedies[0].startswith("the replay of this step was finite")
    assert not any("replay=" in r for r in remedies)


def _run(replay: bool, steps: int = 30) -> tuple[list[torch.Tensor], torch.Tensor, list[str]]:
    """Dropout + BatchNorm + Adam; NaN batches at 5 and 17: with or without replays."""
    x, y = poisoned_data()
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(64, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Dropout(0.3),
                          nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    guard = gradwell.guard.Guard(model, opt, spike_z=None)
    gen = torch.Generator().manual_seed(2)
    for it in range(steps):
        idx = torch.randint(0, 1700, (32,), generator=gen)
        if it in (5, 17):
            idx[0] = sorted(POISONED)[it % 3]
        opt.zero_grad()
        loss = F.cross_entropy(model(x[idx]), y[idx])
        loss.backward()
        guard.step(loss, replay=Batch(x[idx], y[idx], F.cross_entropy) if replay else None)
    state = list(model.state_dict().values()) + [
        v for s in opt.state_dict()["state"].values() for v in s.values()]
    return state, torch.rand(4), [e.detail.get("triage", "-") for e in guard.events]


def test_a_replay_never_changes_the_training_result() -> None:
    plain, replayed = _run(False), _run(True)
    assert len(replayed[2]) >= 2 and set(replayed[2]) == {"data"}    # steps 5, 17 (and others
    assert plain[2] == ["-"] * len(replayed[2])                      # drawing a NaN sample)
    for a, b in zip(plain[0], replayed[0]):     # bit for bit (BatchNorm's running statistics
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)  # hold the NaN batch)
    assert torch.equal(plain[1], replayed[1])                               # the RNG stream


def _epoch(tracker: SampleTracker, x: torch.Tensor, target: torch.Tensor, guard,
           model: nn.Module) -> set[int]:
    """One epoch through a DataLoader over ``tracker``; the sample ids it trained on."""
    loader = DataLoader(TensorDataset(x, target), batch_sampler=tracker)
    seen: set[int] = set()
    for xb, tb in loader:
        guard.optimizer.zero_grad()
        loss = F.mse_loss(model(xb), tb)
        loss.backward()
        ids = tracker.pop()
        assert len(ids) == len(xb)
        seen.update(ids)
        guard.step(loss, replay=Batch(xb, tb, F.mse_loss), samples=ids)
    return seen


def test_poisoned_samples_found_with_precision_and_recall_and_a_resumed_run_excludes_them(
        tmp_path) -> None:
    """NaN features and 1e4 labels in a regression on digits; two epochs, then a resume."""
    x, _ = poisoned_data()
    target = (x.nan_to_num(0).mean(1, keepdim=True) * 4).clone()   # a smooth target in [0, 2]
    for i in LABELS:
        target[i] = 1e4
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    guard = gradwell.guard.Guard(model, opt, snapshot_dir=tmp_path, spike_warmup=10,
                                 max_bad_steps=100)
    sampler = BatchSampler(RandomSampler(range(len(x)),
                                         generator=torch.Generator().manual_seed(3)), 64, False)
    tracker = SampleTracker(sampler)
    for _ in range(2):
        _epoch(tracker, x, target, guard, model)
    planted = POISONED | LABELS
    found = skipped_ids(tmp_path)
    precision = len(found & planted) / max(len(found), 1)
    recall = len(found & planted) / len(planted)
    assert precision >= 0.9 and recall >= 0.9, (sorted(found), sorted(planted))
    resumed = SampleTracker(sampler, exclude=found)
    steps_before = len(guard.skipped)
    seen = _epoch(resumed, x, target, guard, model)
    assert not seen & found and len(seen) == len(x) - len(found)
    assert len(guard.skipped) == steps_before   # no refused step once they are left out


def test_bad_replay_and_samples_arguments_are_rejected() -> None:
    model = make()
    guard = gradwell.guard.Guard(model, torch.optim.SGD(model.parameters(), lr=0.1))
    loss = model(torch.full((2, 64), float("nan"))).sum()
    loss.backward()
    with pytest.raises(TypeError, match="replay must be a zero-argument callable"):
        guard.step(loss, replay=42)
    with pytest.raises(TypeError, match="samples must be a sequence"):
        guard.step(loss, samples=3.5)
    with pytest.raises(RuntimeError, match="no batch handed out"):
        SampleTracker([[0, 1]]).pop()


def test_gradient_accumulation_names_the_planted_samples_of_every_micro_batch(tmp_path) -> None:
    """Four micro-batches of a DataLoader per optimizer step, one ``Batch`` of all of them:
    the tracker gave one loader batch per step, so the first refused step named a sample of
    the wrong micro-batch and the second raised an IndexError that stopped training."""
    x, y = poisoned_data({50, 101})
    target = x.nan_to_num(0).mean(1, keepdim=True)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    guard = gradwell.guard.Guard(model, opt, snapshot_dir=tmp_path, spike_z=None)
    tracker = SampleTracker(BatchSampler(range(128), 4, False))
    micro = []
    for xb, tb in DataLoader(TensorDataset(x, target), batch_sampler=tracker):
        micro.append((xb, tb))
        (F.mse_loss(model(xb), tb) / 4).backward()
        if len(micro) == 4:
            xs, ts = torch.cat([m[0] for m in micro]), torch.cat([m[1] for m in micro])
            guard.step(F.mse_loss(model(xs), ts), replay=Batch(xs, ts, F.mse_loss),
                       samples=tracker)
            micro = []
            opt.zero_grad()
    assert [line["samples"][0] for line in guard.skipped] == [48, 96]
    assert skipped_ids(tmp_path) == {50, 101}
    assert not tracker._handed                 # every loader batch taken by its step
    tracker = SampleTracker([[0, 1], [2, 3]])
    assert list(tracker) and tracker.pop(2) == [0, 1, 2, 3]      # k micro-batches, no Batch
    loss = model(x[:4]).sum()
    loss.backward()
    with pytest.raises(ValueError, match="sample ids are 3, its Batch holds 4"):
        guard.step(loss, replay=Batch(x[:4], target[:4], F.mse_loss), samples=[0, 1, 2])
