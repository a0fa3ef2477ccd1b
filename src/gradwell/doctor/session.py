"""``gradwell.doctor``: diagnose a model, try the remedies the findings call for on the user's
own model and data, and report which one measurably helps.

1. A check at initialisation (:mod:`.initcheck`).
2. A baseline: ``budget_steps`` steps for each of ``seeds`` seeds, seed 0 under the monitor.
3. Candidates chosen from the findings (:mod:`.choose`), each trained with the same budget,
   seeds and data order.
4. Verdicts (:mod:`.verdict`) and a ranking, best first.

Every trial is written to the lab's SQLite store (``directory``) as it finishes, so a run that
is stopped resumes where it left off.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from rich.console import Console
from rich.markup import escape
from torch import nn

from .._checks import check_int, check_number, invalid
from ..diagnose import Finding
from ..lab.progress import trials_bar
from ..lab.spec import Trial
from ..lab.store import Store
from ..lab.train import TrialResult
from .batches import check_loader
from .candidates import Candidate, dominant_activation
from .choose import baseline_lr, choose
from .initcheck import check_init
from .report import CandidateResult, Report
from .trainer import Setup, train
from .verdict import MIN_SEEDS, VERDICTS, compare

__all__ = ["doctor", "BASELINE"]

BASELINE = Candidate("baseline", "as given")


class _Trials:
    """Trains (or, on resume, reads back from the store) one candidate's seeds."""

    def __init__(self, setup: Setup, seeds: int, store: Store | None, run: str, fp: str,
                 bar: Any) -> None:
        self.setup, self.seeds, self.store, self.run, self.fp, self.bar = (
            setup, seeds, store, run, fp, bar)
        self.done = store.finished_keys() if store else set()
        self.stored = {t["key"]: t for t in store.trials(run)} if store else {}
        self.count = 0
        self.ran = 0                 # trials trained in this call (the time-left estimate)

    def key(self, cand: Candidate, seed: int) -> str:
        text = json.dumps([self.fp, cand.config(), seed], sort_keys=True, default=str)
        return "doctor-" + hashlib.sha1(text.encode()).hexdigest()[:16]

    def run_one(self, cand: Candidate, seed: int) -> tuple[dict[str, Any], list[dict]]:
        key = self.key(cand, seed)
        if key in self.done and key in self.stored:
            return self.stored[key]["summary"], self.store.findings(key)
        res: TrialResult = train(self.setup, cand, seed, key, monitor=seed == 0)
        self.ran += 1
        if self.store is not None:
            trial = Trial(key, self.run, cand.name, {**cand.config(), "seed": seed},
                          {"steps": self.setup.steps}, None, {}, index=self.count)
            self.store.save_trial(trial, res)
        return res.summary, res.findings

    def scores(self, cand: Candidate) -> tuple[list[float], list[dict], dict[str, Any]]:
        """Scores of every seed, seed 0's findings and summary."""
        scores, findings, first = [], [], {}
        for seed in range(self.seeds):
            self.bar.update(self.bar.task_ids[0], description=escape(f"{cand.name} · seed {seed}"))
            summary, found = self.run_one(cand, seed)
            self.count += 1
            scores.append(float(summary["score"]))
            if seed == 0:
                findings, first = found, summary
            self.bar.update(self.bar.task_ids[0], advance=1, ran=self.ran)
        return scores, findings, first


def _fingerprint(setup: Setup, sample: nn.Module, batch: Any) -> str:
    x, y = batch
    probe = [t.double().sum().item() for t in (x, y) if isinstance(t, torch.Tensor)]
    spec = setup.optimizer if isinstance(setup.optimizer, str) else getattr(
        setup.optimizer, "__qualname__", repr(setup.optimizer))
    parts = [repr(sample), sum(p.numel() for p in sample.parameters()), repr(setup.loss_fn),
             spec, setup.lr, setup.steps, probe, setup.eval_loader is not None,
             getattr(setup.metric, "__qualname__", None), setup.maximize]
    return hashlib.sha1(json.dumps(parts, default=str).encode()).hexdigest()[:16]


def _check(make_model: Any, lr: Any, budget_steps: int, seeds: int, variants: Any) -> None:
    if not callable(make_model) or isinstance(make_model, nn.Module):
        raise TypeError("make_model must be a function that builds a fresh model, "
                        "make_model() -> nn.Module (each trial needs its own), e.g. "
                        f"lambda: MyNet(); got {type(make_model).__qualname__}")
    check_number("lr", lr, 0, low_open=True, optional="the optimizer's default")
    check_int("budget_steps", budget_steps, 10)
    check_int("seeds", seeds, MIN_SEEDS,
              f" (a verdict needs the spread over at least {MIN_SEEDS} seeds)")
    if variants is not None and (not isinstance(variants, dict)
                                 or not all(callable(v) for v in variants.values())):
        raise invalid("variants", "None or a dict {name: function building the model}",
                      variants, TypeError)


@contextmanager
def _cpu_settings() -> Iterator[None]:
    """While the doctor trains: flush denormal floats to zero (a vanishing net's gradients, and
    Adam's squares of them, fall below 1e-38, where CPUs run ~3x slower; no verdict depends on
    values that small) and use one intra-op thread, as the lab's trials do (two threads on
    digits-sized models ran up to 30x slower on a busy machine). Both are restored after."""
    was_on = torch.tensor([1e-39]).mul(1.0).item() == 0.0    # a denormal read back as zero
    threads = torch.get_num_threads()
    torch.set_flush_denormal(True)
    torch.set_num_threads(1)         # as the lab's trials: small models, one core each
    try:
        yield
    finally:
        torch.set_flush_denormal(was_on)
        torch.set_num_threads(threads)


def doctor(make_model: Callable[[], nn.Module], loader: Any, loss_fn: Callable[..., Any], *,
           optimizer: Any = "adam", lr: float | None = None, budget_steps: int = 200,
           seeds: int = 3, eval_loader: Any = None, metric: Callable[[nn.Module], float] | None
           = None, maximize: bool = False, variants: dict[str, Callable[[], nn.Module]] | None
           = None, directory: str | Path | None = None, name: str = "doctor",
           progress: bool = True, console: Console | None = None) -> Report:
    """Diagnose ``make_model()`` on ``loader`` and measure the remedies; see the module doc.

    Args:
        make_model: builds a fresh model (called under ``torch.manual_seed(seed)``).
        loader: (inputs, targets) training batches, re-iterable (a DataLoader reshuffles).
        loss_fn: ``loss_fn(model(inputs), targets)`` -> scalar tensor.
        optimizer: a name of :data:`gradwell.doctor.OPTIMIZERS` or ``params -> Optimizer``.
        lr: the baseline's learning rate (default: the optimizer's).
        budget_steps: optimizer steps per trial, the same for every candidate and seed.
        seeds: seeds per configuration (>= 3).
        eval_loader, metric, maximize: the score; default the mean training loss over the last
            fifth of the budget, else the mean loss over ``eval_loader``, else
            ``metric(model)`` (higher is better when ``maximize``).
        variants: ``{name: make_variant}``, structural variants to measure as well.
        directory: a lab directory for the store (``lab.sqlite``) and the HTML report; a run
            into the same directory resumes. None: nothing is written.
        name: the run's name in the store.
        progress: show a progress bar (on ``console``, default stderr).
    """
    _check(make_model, lr, budget_steps, seeds, variants)
    check_loader(loader)
    start = time.perf_counter()
    console = console or Console(stderr=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        sample = make_model()
        batch = next(iter(loader))
    setup = Setup(make_model, loader, loss_fn, optimizer, lr, budget_steps,
                  dominant_activation(sample), eval_loader, metric, maximize)
    store = Store(directory) if directory is not None else None
    try:
        if store is not None:
            store.save_run(name, "gradwell doctor: candidate remedies against the baseline",
                           {"budget": {"steps": budget_steps, "seeds": seeds},
                            "metrics": ["train_loss", "grad_ratio"]})
        with torch.random.fork_rng(devices=[]), _cpu_settings(), \
                trials_bar(console, progress, "[bold]doctor[/] {task.description}") as bar:
            bar.add_task("initialisation check", total=seeds, ran=0, known=False,
                         started=time.perf_counter())
            report = _diagnose_and_measure(setup, sample, batch, seeds, variants or {}, store,
                                           name, bar)
    finally:
        if store is not None:
            store.close()
    report.seconds = time.perf_counter() - start
    report.directory = Path(directory) if directory is not None else None
    return report


def _diagnose_and_measure(setup: Setup, sample: nn.Module, batch: Any, seeds: int,
                          variants: dict, store: Store | None, run: str, bar: Any) -> Report:
    init = check_init(setup.make_model, batch, setup.loss_fn)
    trials = _Trials(setup, seeds, store, run, _fingerprint(setup, sample, batch), bar)
    base_scores, base_found, base_summary = trials.scores(BASELINE)
    findings = [Finding(**f) for f in base_found]
    cache: dict = {}
    bar.update(bar.task_ids[0], description="lr_find")
    cands = choose(setup, init.findings + findings, sample, variants,
                   base_summary.get("median_grad_norm"), cache)
    bar.update(bar.task_ids[0], total=seeds * (1 + len(cands)), known=True)
    results = []
    for cand in cands:
        scores, found, summary = trials.scores(cand)
        c = compare(base_scores, scores, setup.maximize)
        results.append(CandidateResult(cand.name, cand.reason, c.verdict, c.improvement,
                                       c.spread, c.median, scores, cand.config(),
                                       [Finding(**f) for f in found], summary.get("grad_ratio")))
    results.sort(key=lambda r: _rank(r, setup.maximize))
    bar.update(bar.task_ids[0], description="done")
    return Report(findings, init, results, base_scores, base_summary.get("grad_ratio"),
                  setup.steps, seeds, baseline_lr(setup), _metric_name(setup), setup.maximize,
                  cache, run)


def _rank(r: CandidateResult, maximize: bool) -> tuple[int, float, float]:
    """Helps first, then by improvement, then by the median score: against a baseline that
    diverged every finite candidate improves by ``inf``, and the better score must decide."""
    best = -r.median if maximize else r.median
    return VERDICTS.index(r.verdict), -r.improvement, best if math.isfinite(best) else math.inf


def _metric_name(setup: Setup) -> str:
    if setup.metric is not None:
        return getattr(setup.metric, "__name__", "metric")
    return "eval loss" if setup.eval_loader is not None else "training loss (last fifth)"
