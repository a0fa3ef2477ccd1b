"""The batch that did it: replay triage and the skip list of ``gradwell.guard``.

    python examples/guard_replay.py

Trains a small MLP on scikit-learn's digits (bundled, offline) through a ``DataLoader`` whose
batch sampler is a ``gradwell.guard.SampleTracker``. Four samples hold NaN pixels. Each step
passes ``replay=Batch(...)`` and ``samples=tracker``: the guard skips the NaN steps, replays
each once under ``gradwell.locate`` (triage: ``data``), names the poisoned sample by its
per-sample gradient norm, and writes it to ``<dir>/skipped.jsonl``. A second epoch, resumed with
``exclude=skipped_ids(dir)``, never sees them and refuses no step.
"""

from __future__ import annotations

import tempfile

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.nn import functional as F
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, TensorDataset

import gradwell
from gradwell.guard import Batch, SampleTracker, skipped_ids

POISONED = (7, 300, 901, 1500)


def epoch(model: nn.Module, guard: gradwell.guard.Guard, tracker: SampleTracker,
          data: TensorDataset) -> list[str]:
    statuses = []
    for x, y in DataLoader(data, batch_sampler=tracker):
        guard.optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        statuses.append(guard.step(loss, replay=Batch(x, y, F.cross_entropy), samples=tracker))
    return statuses


def main(directory: str | None = None) -> dict:
    directory = directory or tempfile.mkdtemp(prefix="gradwell-skip-")
    d = load_digits()
    x, y = torch.tensor(d.data, dtype=torch.float32) / 16.0, torch.tensor(d.target)
    x[list(POISONED), 10] = float("nan")
    data = TensorDataset(x, y)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    guard = gradwell.guard.Guard(model, torch.optim.SGD(model.parameters(), lr=0.1),
                                 snapshot_dir=directory)
    sampler = BatchSampler(RandomSampler(data), 64, drop_last=True)
    first = epoch(model, guard, SampleTracker(sampler), data)
    for e in guard.events:
        if e.action == "skipped":
            print(f"step {e.step}: {e.reason}, triage {e.detail.get('triage')}, "
                  f"culprits {e.detail.get('culprits')}")
    found = skipped_ids(directory)
    print(f"skip list {directory}/skipped.jsonl names samples {sorted(found)}")
    second = epoch(model, guard, SampleTracker(sampler, exclude=found), data)
    print(f"resumed epoch without them: {second.count('skipped')} skipped steps")
    return {"found": found, "first": first, "second": second,
            "triage": [e.detail.get("triage") for e in guard.events if e.action == "skipped"]}


if __name__ == "__main__":
    main()
