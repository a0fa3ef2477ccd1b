"""The doctor end to end with the user's own score: ``metric=`` accuracy on held-out digits,
``maximize=True``. One candidate's seed-0 score is recomputed here with plain torch
(torch.optim.Adam, the same seed, batches and order), and the HTML report shows the
learning-rate range test it ran."""

from __future__ import annotations

import base64
import io
import re
import statistics

import matplotlib.image
import pytest
import torch
from torch import nn

import gradwell
from gradwell.lab import data

LOSS = nn.CrossEntropyLoss()
LR = 1e-2
DIGITS = data.digits()
BATCHES = [(DIGITS.x_train[i:i + 64], DIGITS.y_train[i:i + 64]) for i in range(0, 640, 64)]


def accuracy(model: nn.Module) -> float:
    """Held-out accuracy (higher is better)."""
    return (model(DIGITS.x_test).argmax(1) == DIGITS.y_test).double().mean().item()


def _deep_sigmoid() -> nn.Module:
    return gradwell.nn.MLP(64, 10, depth=10, width=16, activation="sigmoid")


def _torch_only(make, steps: int) -> float:
    """Seed 0 as the doctor trains it, by hand: build under manual_seed(0), Adam at the
    baseline's lr, the batches in order, then the metric in eval mode."""
    torch.manual_seed(0)
    model = make()
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    model.train()
    for step in range(steps):
        x, y = BATCHES[step % len(BATCHES)]
        opt.zero_grad()
        LOSS(model(x), y).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        return accuracy(model)


def test_metric_maximize_end_to_end_against_plain_torch(tmp_path) -> None:
    r = gradwell.doctor(_deep_sigmoid, BATCHES, LOSS, lr=LR, budget_steps=30, metric=accuracy,
                        maximize=True, progress=False)
    assert r.metric == "accuracy" and r.maximize
    assert statistics.median(r.baseline) == pytest.approx(_torch_only(_deep_sigmoid, 30),
                                                          abs=0.003)
    assert statistics.median(r.baseline) < 0.2                # 10 classes: chance
    relu = next(c for c in r.candidates if c.name == "structure: ReLU + He init")
    by_hand = _torch_only(lambda: gradwell.nn.MLP(64, 10, depth=10, width=16,
                                                  activation="relu", init="he"), 30)
    assert relu.scores[0] == pytest.approx(by_hand, abs=0.003)      # one test sample = 0.0028
    best = r.candidates[0]
    assert best.verdict == "helps" and statistics.median(best.scores) > 0.3
    gain = statistics.median(best.scores) - statistics.median(r.baseline)  # higher is better
    assert best.improvement == pytest.approx(gain) and gain > 0
    spread = max(max(r.baseline) - min(r.baseline), max(best.scores) - min(best.scores))
    assert gain > spread
    helps = [c.improvement for c in r.helpful]
    assert helps == sorted(helps, reverse=True)
    for c in r.candidates:                      # docs/doctor.md's rule, for higher-is-better
        up = statistics.median(c.scores) - statistics.median(r.baseline)
        bar = max(max(r.baseline) - min(r.baseline), max(c.scores) - min(c.scores),
                  0.01 * statistics.median(r.baseline))
        assert c.improvement == pytest.approx(up)          # higher is better: the sign
        assert c.verdict == ("helps" if up > bar else "hurts" if up < -bar
                             else "no measurable change"), c
    page = r.write_html(tmp_path / "doctor.html").read_text()
    assert "higher is better" in page
    found = re.findall(r'<img alt="learning-rate range test: ([^"]+)"[^>]*'
                       r'src="data:image/png;base64,([^"]+)"', page)
    assert sorted(name for name, _ in found) == sorted(r.lr_find)
    for _, b64 in found:
        img = matplotlib.image.imread(io.BytesIO(base64.b64decode(b64)), format="png")
        assert img.shape[0] > 300 and img.shape[1] > 600
