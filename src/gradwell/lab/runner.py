"""The runner: every trial of a spec, in parallel worker processes, stored as each finishes.

Trials already in the store are skipped, so a killed run resumes where it stopped. Each worker
is a fresh (spawned) process running one torch thread; results are seeded, so the same spec
gives the same numbers whatever the number of workers. ``workers=1`` runs in this process.

The runner owns running a trial (:func:`execute`): one torch thread, the timing, and the one
failure path, an exception stored as a ``failed`` trial with its traceback while the run goes
on. Trial kinds are plain functions that train and return a :class:`TrialResult`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
import signal
import threading
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Callable, Iterable, Iterator

from rich.console import Console
from rich.markup import escape

from .progress import trials_bar
from .spec import Spec, Trial
from .store import Store
from .train import TrialResult

__all__ = ["RunSummary", "run_spec", "run_trials", "execute", "default_workers", "write_report"]


@dataclass
class RunSummary:
    """What a call to :func:`run_spec` did."""

    run: str
    directory: Path
    total: int
    skipped: int
    ran: int = 0
    failed: list[str] = field(default_factory=list)
    seconds: float = 0.0


def default_workers() -> int:
    """The machine's cores usable by this process."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def execute(trial: Trial) -> TrialResult:
    """Run ``trial`` on one torch thread with the function its kind names
    (``"module:function"``): its result, with the trial's key and the seconds it took; an
    exception (in the function or a result that is not a :class:`TrialResult`) becomes a
    ``failed`` result carrying the traceback."""
    import torch

    start = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        module, _, name = trial.function.partition(":")
        result = getattr(importlib.import_module(module), name)(trial)
        if not isinstance(result, TrialResult):
            raise TypeError(f"trial function {trial.function} returned "
                            f"{type(result).__name__}, not a TrialResult")
        return dataclasses.replace(result, key=trial.key, seconds=time.perf_counter() - start)
    except Exception:  # noqa: BLE001 - stored with the trial, shown in the report
        return TrialResult(trial.key, "failed", time.perf_counter() - start,
                           error=traceback.format_exc())
    finally:
        torch.set_num_threads(threads)


def write_report(directory: str | Path, out: str | Path | None = None) -> Path:
    """The HTML report of every run stored in ``directory`` (default ``DIR/report.html``),
    built-in experiments with their verdicts (:func:`gradwell.lab.catalog.verdict_for`)."""
    from . import html_report
    from .catalog import verdict_for

    return html_report.write_report(directory, out, verdict=verdict_for)


def _watch_parent(parent: int) -> None:
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:          # the runner died (e.g. kill -9): stop at once
            os._exit(1)


def _worker_init(parent: int) -> None:
    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C belongs to the driver: it ends us
    torch.set_num_threads(1)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def run_trials(trials: list[Trial], workers: int, on_result: Callable[[Trial, TrialResult], None]
               ) -> None:
    """Run ``trials`` on ``workers`` processes (in this one when 1), calling ``on_result`` in
    this process as each finishes."""
    if workers <= 1 or len(trials) <= 1:
        for t in trials:
            on_result(t, execute(t))
        return
    with _sigint_ignored():               # workers start with Ctrl-C ignored: it is ours
        pool = ProcessPoolExecutor(min(workers, len(trials)), mp_context=get_context("spawn"),
                                   initializer=_worker_init, initargs=(os.getpid(),))
        pending: dict[Future, Trial] = {pool.submit(execute, t): t for t in trials}
    try:
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                on_result(pending.pop(fut), fut.result())
    except BaseException:                 # Ctrl-C: drop queued trials, end running ones now
        _stop(pool)
        raise
    pool.shutdown()


def _stop(pool: ProcessPoolExecutor) -> None:
    """Cancel the queued trials and terminate the workers (a trial in flight is lost; the
    store only ever holds whole trials). A second Ctrl-C meanwhile is ignored: this is quick."""
    with _sigint_ignored():
        processes = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for p in processes:
            p.terminate()
        for p in processes:
            p.join(timeout=2.0)


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def run_spec(spec: Spec, directory: str | Path, workers: int | None = None, quick: bool = False,
             progress: bool = True, console: Console | None = None,
             ray: str | bool | None = None) -> RunSummary:
    """Run every trial of ``spec`` not yet in ``directory``'s store; return what happened.

    ``ray``: run the trials as Ray tasks (:mod:`gradwell.lab.ray_runner`) on a local instance
    (``True``) or the cluster at this address; the store is still written here only."""
    start = time.perf_counter()
    trials = spec.trials(quick)
    run = trials[0].experiment if trials else spec.name
    console = console or Console(stderr=True)
    with Store(directory) as store:
        store.lock()
        store.open_run(run, spec.description, _spec_dict(spec), trials)
        done = store.finished_keys(run)
        todo = _unique(t for t in trials if t.key not in done)
        summary = RunSummary(run, Path(directory), len(trials), len(trials) - len(todo))
        with trials_bar(console, progress) as bar:
            task = bar.add_task(escape(run), total=len(trials), completed=summary.skipped,
                                ran=0, started=time.perf_counter())

            def on_result(trial: Trial, result: TrialResult) -> None:
                store.save_trial(trial, result)
                summary.ran += 1
                if result.status == "failed":
                    summary.failed.append(f"{trial.label}: {result.error.strip().splitlines()[-1]}")
                bar.update(task, advance=1, ran=summary.ran)

            if ray is None or ray is False:
                run_trials(todo, workers or default_workers(), on_result)
            else:
                from .ray_runner import run_trials_ray
                run_trials_ray(todo, on_result, None if ray is True else ray)
    summary.seconds = time.perf_counter() - start
    return summary


def _unique(trials: Iterable[Trial]) -> list[Trial]:
    seen: dict[str, Trial] = {}
    for t in trials:
        seen.setdefault(t.key, t)
    return list(seen.values())


def _spec_dict(spec: Spec) -> dict:
    return {k: v for k, v in dataclasses.asdict(spec).items()}
