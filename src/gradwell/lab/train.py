"""One trial of kind ``train``: build the data, model and optimizer from a configuration, train
for the budget, and return metrics, per-layer gradient statistics and findings.

The loop never synchronises with the host between evaluations: the running training loss and
accuracy are accumulated in tensors and read once per evaluation. Seconds-to-target counts
training time only (evaluation is excluded).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor, nn

from .. import nn as gnn
from . import data as datasets
from .factory import build_optimizer
from .trial_monitor import TrialMonitor, grad_ratio, nonfinite_finding
from .spec import Trial

__all__ = ["TrialResult", "Hooks", "run_trial", "build_model", "load_data"]


@dataclass
class TrialResult:
    """What a trial produced. ``metrics`` rows are ``(step, seconds, name, value)``;
    ``layer_stats`` rows ``(step, layer index, layer, stat, value)``. A trial kind's function
    may leave ``key`` and ``seconds``: the runner fills them in."""

    key: str = ""
    status: str = "done"              # "done", "diverged" or "failed"
    seconds: float = 0.0
    summary: dict[str, Any] = field(default_factory=dict)
    metrics: list[tuple[int, float | None, str, float]] = field(default_factory=list)
    layer_stats: list[tuple[int, int, str, str, float]] = field(default_factory=list)
    findings: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""


@dataclass(frozen=True)
class Hooks:
    """How a trial kind adapts the ``train`` trial; every field is optional.

    * ``build(config, data) -> model`` replaces :func:`build_model`.
    * ``prepare(model, trial)`` adjusts the built model in place (the optimizer already holds
      its parameters), e.g. to set a gate bias or attach hooks.
    * ``lr_factor(step) -> float`` multiplies every parameter group's initial learning rate at
      optimizer step ``step`` (1-based): warm-up, decay.
    * ``epoch_decay``: the learning rate is multiplied by it after every epoch
      (``torch.optim.lr_scheduler.ExponentialLR``); 1: constant.
    * ``penalty(output) -> loss`` is added to the training loss (e.g. a z-loss on the logits).
    * ``loss_weight``: the training loss is multiplied by it before backward (the recorded
      training loss is not), e.g. to give the gradients the scale of a mean over more terms.
    * ``autocast``: the forward pass runs under ``torch.autocast("cpu", dtype=autocast)``
      (mixed precision: float32 master weights, float16 or bfloat16 compute).
    * ``loss_scale``: dynamic loss scaling with ``torch.amp.GradScaler`` (Micikevicius et al.
      2018): the loss is multiplied by the scale before backward, the gradients divided by it
      before the step, and steps whose gradients overflow are skipped.
    """

    build: Callable[[dict[str, Any], datasets.Dataset], nn.Module] | None = None
    prepare: Callable[[nn.Module, Trial], None] | None = None
    lr_factor: Callable[[int], float] | None = None
    epoch_decay: float = 1.0
    penalty: Callable[[Tensor], Tensor] | None = None
    loss_weight: float = 1.0
    autocast: torch.dtype | None = None
    loss_scale: bool = False


def load_data(cfg: dict[str, Any]) -> datasets.Dataset:
    """The dataset a configuration asks for, with its options."""
    name = cfg["data"]
    if name == "adding":
        return datasets.adding(cfg["seq_len"], cfg["n_train"], cfg["n_test"])
    if name == "latch":
        return datasets.latch(cfg["seq_len"], cfg["n_train"], cfg["n_test"], float(cfg["noise"]))
    if name == "copy":
        return datasets.copy(cfg["seq_len"], cfg.get("vocab", 16), cfg["n_train"], cfg["n_test"])
    if name == "spirals":
        return datasets.spirals(noise=float(cfg["noise"]), test_fraction=cfg["test_fraction"])
    return datasets.load(name, test_fraction=cfg["test_fraction"])


def build_model(cfg: dict[str, Any], data: datasets.Dataset) -> nn.Module:
    """The model a configuration asks for, sized for ``data``."""
    m = cfg["model"]
    if m == "logistic":                # (multinomial) logistic regression: one Linear layer
        return nn.Sequential(nn.Flatten(), nn.Linear(data.n_in, data.n_out))
    if m == "mlp":
        return gnn.MLP(data.n_in, data.n_out, cfg["depth"], cfg["width"], cfg["activation"],
                       cfg["norm"], cfg["connection"], cfg["init"])
    if m in ("cnn", "resnet"):
        return gnn.CNN(data.shape, data.n_out, cfg["channels"], cfg["stages"], cfg["blocks"],
                       cfg["activation"], cfg["norm"],
                       "residual" if m == "resnet" else cfg["connection"], cfg["init"])
    return gnn.RecurrentNet(m, data.n_in, data.n_out, cfg["hidden"], cfg["layers"],
                            cfg.get("recurrent_gain"))


class _Run:
    """The state of one training run (keeps :func:`run_trial` short)."""

    def __init__(self, trial: Trial, hooks: Hooks) -> None:
        cfg = self.cfg = trial.config
        self.trial, self.hooks = trial, hooks
        torch.manual_seed(cfg["seed"])
        self.data = load_data(cfg)
        self.model = (hooks.build or build_model)(cfg, self.data)
        self.opt = build_optimizer(cfg, self.model.parameters())
        factor = hooks.lr_factor         # LambdaLR counts from 0; steps count from 1
        self.sched = (torch.optim.lr_scheduler.LambdaLR(self.opt, lambda i: factor(i + 1))
                      if factor else None)
        self.epoch_sched = (torch.optim.lr_scheduler.ExponentialLR(self.opt, hooks.epoch_decay)
                            if hooks.epoch_decay != 1.0 else None)
        self.scaler = torch.amp.GradScaler("cpu") if hooks.loss_scale else None
        self.classify = self.data.task == "classification"
        self.loss_fn = nn.CrossEntropyLoss() if self.classify else nn.MSELoss()
        n = len(self.data.y_train)
        self.per_epoch = math.ceil(n / cfg["batch_size"])
        b = trial.budget
        self.total = b["steps"] if "steps" in b else b["epochs"] * self.per_epoch
        self.eval_every = trial.record.get("eval_every", self.per_epoch)
        self.monitor = TrialMonitor(self.model, self.opt, trial.record.get("grad_every", 10))
        self.gen = torch.Generator().manual_seed(cfg["seed"])
        self.metrics: list[tuple[int, float, str, float]] = []
        self.train_seconds = 0.0
        self.hit: tuple[int, float] | None = None
        self._reset_running()

    def _reset_running(self) -> None:
        self.run_loss, self.run_correct, self.run_n = torch.zeros(()), torch.zeros(()), 0

    def batches(self):
        """Minibatches for ever, reshuffled every epoch with the trial's generator."""
        n, bs = len(self.data.y_train), self.cfg["batch_size"]
        while True:
            perm = torch.randperm(n, generator=self.gen)
            for i in range(0, n, bs):
                idx = perm[i:i + bs]
                yield self.data.x_train[idx], self.data.y_train[idx]

    def train_step(self, step: int, x: Tensor, y: Tensor) -> None:
        h = self.hooks
        with torch.autocast("cpu", dtype=h.autocast or torch.bfloat16, enabled=bool(h.autocast)):
            out = self.model(x)            # train mode: set after each evaluation
            loss = self.loss_fn(out, y)
            objective = loss * h.loss_weight if h.loss_weight != 1.0 else loss
            if h.penalty is not None:
                objective = objective + h.penalty(out)
        self.opt.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(objective).backward()
            self.scaler.step(self.opt)       # unscales first; skips the step on inf/NaN
            self.scaler.update()
        else:
            objective.backward()
            self.opt.step()              # the monitor records through the optimizer's hooks
        if self.sched is not None:
            self.sched.step()
        if self.epoch_sched is not None and step % self.per_epoch == 0:
            self.epoch_sched.step()
        with torch.no_grad():
            self.run_loss += loss.detach() * y.numel()
            if self.classify:
                self.run_correct += (out.argmax(1) == y).sum()
        self.run_n += y.numel()            # per token for sequence targets

    @torch.no_grad()
    def evaluate(self, step: int) -> bool:
        """Record metrics at ``step``; return False once the loss is not finite."""
        self.model.eval()
        out = self.model(self.data.x_test)
        row = {"test_loss": self.loss_fn(out, self.data.y_test)}
        if self.classify:
            row["test_acc"] = (out.argmax(1) == self.data.y_test).float().mean()
        if self.run_n:
            row["train_loss"] = self.run_loss / self.run_n
            if self.classify:
                row["train_acc"] = self.run_correct / self.run_n
        values = dict(zip(row, torch.stack(list(row.values())).tolist()))
        self.model.train()
        self.metrics += [(step, self.train_seconds, k, v) for k, v in values.items()]
        self._reset_running()
        self._check_target(step, values)
        return all(math.isfinite(v) for k, v in values.items() if k.endswith("loss"))

    def _check_target(self, step: int, values: dict[str, float]) -> None:
        t = self.trial.target
        if not t or self.hit or t["metric"] not in values:
            return
        v = values[t["metric"]]
        if (v >= t["value"]) if t["metric"].endswith("acc") else (v <= t["value"]):
            self.hit = (step, self.train_seconds)

    def loop(self) -> int | None:
        """Train for the budget; return the step at which training diverged, if it did."""
        if not self.evaluate(0):
            return 0
        limit = self.trial.budget.get("max_seconds", math.inf)
        batches = self.batches()
        for step in range(1, self.total + 1):
            x, y = next(batches)
            t0 = time.perf_counter()
            self.train_step(step, x, y)
            self.train_seconds += time.perf_counter() - t0
            last = step == self.total or self.train_seconds > limit
            if step % self.eval_every == 0 or last:
                if not self.evaluate(step):
                    return step
            if last:
                break
        return None

    def result(self, diverged: int | None, seconds: float) -> TrialResult:
        self.monitor.close()
        final: dict[str, Any] = {}
        for step, _, name, value in self.metrics:
            final[f"final_{name}"] = value
            final["steps"] = step
        final.update(
            steps_to_target=self.hit[0] if self.hit else None,
            seconds_to_target=self.hit[1] if self.hit else None,
            grad_ratio=grad_ratio(self.monitor.norms_by_step()), train_seconds=self.train_seconds,
            layers=[n.removesuffix(".weight") for n in self.monitor.weights])
        findings = self.monitor.findings()
        if diverged is not None and not any(f["kind"] == "nonfinite" for f in findings):
            findings.append(nonfinite_finding(diverged))
        metrics = self.metrics + [(s, None, "grad_norm_total", v)
                                  for s, v in self.monitor.total_norms()]
        return TrialResult(self.trial.key, "diverged" if diverged is not None else "done", seconds,
                           final, metrics, self.monitor.rows(), findings)


def run_trial(trial: Trial, prepare: Callable[[nn.Module, Trial], None] | None = None,
              hooks: Hooks | None = None) -> TrialResult:
    """Train one configuration (trial kind ``train``); status ``diverged`` when the loss stops
    being finite. Exceptions propagate: :func:`gradwell.lab.runner.execute` stores them as a
    ``failed`` trial.

    ``prepare(model, trial)``, if given, adjusts the freshly built model in place before
    training (the optimizer already holds its parameters), e.g. to set a gate bias; ``hooks``
    adapt the rest of the loop (:class:`Hooks`; a ``prepare`` given here replaces its own).
    """
    hooks = hooks or Hooks()
    if prepare is not None:
        hooks = dataclasses.replace(hooks, prepare=prepare)
    start = time.perf_counter()
    run = _Run(trial, hooks)
    if hooks.prepare is not None:
        hooks.prepare(run.model, trial)
    diverged = run.loop()
    return run.result(diverged, time.perf_counter() - start)
