"""The clipping and warm-up candidates on an exploding model: a deep linear net trained by SGD
at lr 1 on digits, whose gradients grow until the loss is inf/NaN. The explosion, the clipped
runs and the warmed-up runs are recomputed here with plain torch
(``torch.nn.utils.clip_grad_norm_``, ``LambdaLR``); the doctor's scores and verdicts must agree
with them and its first candidate must be the best measured remedy (Pascanu et al. 2013:
clipping the gradient norm tames the explosion)."""

from __future__ import annotations

import math
import statistics

import pytest
import torch
from torch import nn

import gradwell
from gradwell.doctor.trainer import DATA_SEED
from gradwell.lab import data

LOSS = nn.CrossEntropyLoss()
DIGITS = data.digits()
BATCHES = [(DIGITS.x_train[i:i + 64], DIGITS.y_train[i:i + 64]) for i in range(0, 640, 64)]
LR, STEPS, SEEDS = 1.0, 30, 3


def _exploding() -> nn.Module:
    return gradwell.nn.MLP(64, 10, depth=3, width=32, activation="linear")


def _torch_score(seed: int, clip: float | None = None, warmup: int = 0) -> float:
    """The doctor's score by hand: the mean training loss over the last fifth of the budget,
    inf once a loss is not finite."""
    torch.manual_seed(seed)
    model = _exploding()
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    sched = (torch.optim.lr_scheduler.LambdaLR(opt, lambda t: min(1.0, (t + 1) / warmup))
             if warmup else None)
    torch.manual_seed(DATA_SEED + seed)
    losses = []
    for step in range(STEPS):
        x, y = BATCHES[step % len(BATCHES)]
        loss = LOSS(model(x), y)
        opt.zero_grad()
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        if sched is not None:
            sched.step()
        losses.append(loss.item())
        if not math.isfinite(losses[-1]):
            return math.inf
    tail = losses[-STEPS // 5:]
    return sum(tail) / len(tail)


def test_clipping_and_warmup_on_an_exploding_net_agree_with_plain_torch() -> None:
    base = [_torch_score(s) for s in range(SEEDS)]
    assert base == [math.inf] * SEEDS                     # torch says: it explodes
    r = gradwell.doctor(_exploding, BATCHES, LOSS, optimizer="sgd", lr=LR, budget_steps=STEPS,
                        progress=False)
    assert r.baseline == base
    assert {"exploding", "nonfinite"} <= {f.kind for f in r.findings}
    by_name = {c.name.split("(")[0].strip(): c for c in r.candidates}
    clip = by_name["clip: GlobalNorm"]
    warm = next(c for n, c in by_name.items() if n.startswith("warm-up"))
    assert "clip: ZClip" in by_name
    clipped = [_torch_score(s, clip=clip.config["clip_value"]) for s in range(SEEDS)]
    assert all(math.isfinite(s) for s in clipped)         # torch says: clipping tames it
    assert clip.scores == pytest.approx(clipped, rel=1e-3)
    assert clip.verdict == "helps"
    warmed = [_torch_score(s, warmup=warm.config["warmup"]) for s in range(SEEDS)]
    assert warm.scores == pytest.approx(warmed, rel=1e-3)
    assert not any(map(math.isfinite, warmed))            # torch: warm-up alone still explodes
    assert warm.verdict == "no measurable change"          # inf against inf: the doctor says so
    best = r.candidates[0]                                # the best measured remedy first
    assert best.verdict == "helps"
    assert best.median == min(c.median for c in r.helpful)
    # the doctor's run and torch's replication agree to float32 rounding (6e-8 relative seen)
    assert best.median <= statistics.median(clipped) * (1 + 1e-6)
    assert r.conclusion().startswith("Found: ") and "Best measured remedy" in r.conclusion()


def test_against_a_diverged_baseline_the_better_score_ranks_first() -> None:
    """Every finite candidate improves on an inf baseline by inf: the median decides."""
    from gradwell.doctor.report import CandidateResult
    from gradwell.doctor.session import _rank

    def cand(name, verdict, improvement, med):
        return CandidateResult(name, "", verdict, improvement, math.inf, med, [med] * 3, {})

    results = [cand("lr at chance", "helps", math.inf, 2.31), cand("none", "hurts", -1.0, 3.0),
               cand("clip", "helps", math.inf, 0.86), cand("same", "no measurable change",
                                                           0.0, math.inf)]
    order = [c.name for c in sorted(results, key=lambda c: _rank(c, False))]
    assert order == ["clip", "lr at chance", "same", "none"]
    accs = [cand("a", "helps", math.inf, 0.3), cand("b", "helps", math.inf, 0.9)]
    assert [c.name for c in sorted(accs, key=lambda c: _rank(c, True))] == ["b", "a"]
