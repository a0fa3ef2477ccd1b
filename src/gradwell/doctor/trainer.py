"""One doctor trial: build the model for a candidate and a seed, train it for the budget with
the same data order as every other candidate, and score it.

Score (lower is better, unless ``maximize``): ``metric(model)`` if given; else the mean loss
over ``eval_loader``; else the mean training loss over the last fifth of the budget. A run whose
loss turns non-finite is ``diverged`` and scores ``inf`` (``-inf`` when maximising).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from .. import clip as gclip
from ..lab.trial_monitor import TrialMonitor, grad_ratio, nonfinite_finding
from ..lab.train import TrialResult
from .batches import batch_loss, cycle
from .candidates import Candidate, ZLoss, make_clipper, reinit, warmup
from .optimizers import make_optimizer, set_eps

__all__ = ["Setup", "train", "DATA_SEED"]

#: the data order of seed ``s`` is drawn from ``torch.manual_seed(DATA_SEED + s)``, after the
#: model is built, so every candidate sees the same batches whatever its initialisation draws
DATA_SEED = 10_000
_CURVE_POINTS = 50
#: recorded steps of a monitored trial (the lab records one step in 10 as well)
MONITOR_RECORDS = 20


@dataclass
class Setup:
    """What every trial of one doctor run shares."""

    make_model: Callable[[], nn.Module]
    loader: Any
    loss_fn: Callable[..., torch.Tensor]
    optimizer: Any
    lr: float | None
    steps: int
    activation: str
    eval_loader: Any = None
    metric: Callable[[nn.Module], float] | None = None
    maximize: bool = False


def build(setup: Setup, cand: Candidate, seed: int) -> tuple[nn.Module, torch.optim.Optimizer,
                                                             gclip.Clipper | None]:
    """The seeded model, its optimizer and (for optimizer factories) the clipper to apply."""
    torch.manual_seed(seed)
    model = (cand.model or setup.make_model)()
    if not isinstance(model, nn.Module):
        raise TypeError(f"make_model() must return a torch.nn.Module, got "
                        f"{type(model).__qualname__}")
    if cand.init:
        reinit(model, cand.init, setup.activation)
    spec = cand.optimizer or setup.optimizer
    clipper = make_clipper(cand)
    lr = cand.lr if cand.lr is not None else setup.lr
    named = isinstance(spec, str)
    opt = make_optimizer(spec, model.parameters(), lr=lr, clip=clipper if named else None)
    if cand.eps is not None:
        set_eps(opt, cand.eps)
    return model, opt, None if named else clipper


def _score(setup: Setup, model: nn.Module, losses: list[float]) -> float:
    if setup.metric is not None:
        model.eval()
        with torch.no_grad():
            return float(setup.metric(model))
    if setup.eval_loader is not None:
        model.eval()
        total, n = 0.0, 0
        with torch.no_grad():
            for batch in setup.eval_loader:
                total += float(batch_loss(model, batch, setup.loss_fn))
                n += 1
        return total / max(n, 1)
    tail = losses[-max(1, len(losses) // 5):]
    return sum(tail) / len(tail)


def _curve(losses: list[float], seconds: float) -> list[tuple[int, float, str, float]]:
    """Training loss averaged over windows, as store metric rows (about 50 points)."""
    w = max(1, len(losses) // _CURVE_POINTS)
    rows = []
    for end in range(w, len(losses) + 1, w):
        chunk = losses[end - w:end]
        rows.append((end, seconds * end / len(losses), "train_loss", sum(chunk) / len(chunk)))
    return rows


def train(setup: Setup, cand: Candidate, seed: int, key: str, monitor: bool) -> TrialResult:
    """Train ``cand`` with ``seed`` for ``setup.steps`` steps; the monitor records when asked.

    A z-loss candidate minimises ``loss + z-loss`` while the losses kept (and scored) are
    ``loss_fn``'s alone, so its score compares with the baseline's."""
    start = time.perf_counter()
    model, opt, clipper = build(setup, cand, seed)
    sched = warmup(opt, cand.warmup)
    zl = ZLoss(model, cand.logits, cand.z_loss) if cand.z_loss else None
    mon = TrialMonitor(model, opt, max(1, setup.steps // MONITOR_RECORDS)) if monitor else None
    torch.manual_seed(DATA_SEED + seed)
    batches = cycle(setup.loader)
    model.train()
    losses: list[float] = []
    diverged = None
    try:
        for step in range(1, setup.steps + 1):
            loss = batch_loss(model, next(batches), setup.loss_fn)
            total = loss if zl is None else loss + zl.take()
            opt.zero_grad(set_to_none=True)
            total.backward()
            if clipper is not None:
                gclip.clip_(model.parameters(), clipper)
            opt.step()
            if sched is not None:
                sched.step()
            losses.append(float(loss.detach()))
            if not math.isfinite(losses[-1] if zl is None else float(total.detach())):
                diverged = step
                break
    finally:
        if mon is not None:
            mon.close()
        if zl is not None:
            zl.close()
    score = _score(setup, model, losses) if diverged is None else math.nan
    if not math.isfinite(score):
        score = -math.inf if setup.maximize else math.inf
    return _result(key, cand, losses, score, diverged, mon, time.perf_counter() - start)


def _result(key: str, cand: Candidate, losses: list[float], score: float, diverged: int | None,
            mon: TrialMonitor | None, seconds: float) -> TrialResult:
    tail = losses[-max(1, len(losses) // 5):]
    summary: dict[str, Any] = {"score": score, "final_train_loss": sum(tail) / len(tail),
                               "steps": len(losses), "diverged_at": diverged}
    findings, layer_rows = [], []
    if mon is not None:
        summary["grad_ratio"] = grad_ratio(mon.norms_by_step())
        norms = sorted(v for _, v in mon.total_norms() if math.isfinite(v))
        summary["median_grad_norm"] = norms[len(norms) // 2] if norms else None
        summary["layers"] = [n.removesuffix(".weight") for n in mon.weights]
        findings, layer_rows = mon.findings(), mon.rows()
        if diverged is not None and not any(f["kind"] == "nonfinite" for f in findings):
            findings.append(nonfinite_finding(diverged))
    return TrialResult(key, "diverged" if diverged is not None else "done", seconds, summary,
                       _curve(losses, seconds), layer_rows, findings)
