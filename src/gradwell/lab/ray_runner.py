"""Lab sweeps as Ray tasks: ``gradwell lab run SPEC --ray [ADDRESS]`` (extra ``gradwell[ray]``).

Each trial is one Ray task (one CPU, one torch thread) running the same function as a local
worker would; results come back to the driver, which alone writes the SQLite store, so resume,
verdicts and the report behave exactly as with local workers. Without an address a local Ray
instance is started (``ray.init()``) and stopped afterwards; with one (``ray start --head`` on
the head node, then ``--ray HEAD_IP:6379`` or ``--ray auto``) the trials run on that cluster,
whose nodes need gradwell installed. A worker that dies mid-trial (killed, out of memory) loses
only that trial: Ray retries it once on another worker, then it is stored as ``failed``.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable

from .spec import Trial
from .train import TrialResult

__all__ = ["run_trials_ray", "RETRIES"]

#: Times a trial whose worker died is run again before it is marked failed.
RETRIES = 1


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise RuntimeError('--ray needs Ray: pip install "gradwell[ray]"') from None
    return ray


def _execute(trial: Trial) -> TrialResult:
    from .runner import execute        # one torch thread, failures stored as failed trials

    return execute(trial)


def run_trials_ray(trials: list[Trial], on_result: Callable[[Trial, TrialResult], None],
                   address: str | None = None) -> None:
    """Run ``trials`` as Ray tasks, calling ``on_result`` in this (the driver) process as each
    finishes. ``address``: a running cluster's, or None for a local instance."""
    if not trials:
        return
    ray = _import_ray()
    started = not ray.is_initialized()
    if started:
        env = None if address else {"env_vars": {"PYTHONPATH": os.pathsep.join(sys.path)}}
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 runtime_env=env, configure_logging=False)
    task = ray.remote(num_cpus=1, max_retries=RETRIES, retry_exceptions=False)(_execute)
    pending: dict[Any, tuple[Trial, float]] = {}
    try:
        pending.update({task.remote(t): (t, time.perf_counter()) for t in trials})
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                trial, start = pending.pop(ref)
                on_result(trial, _result(ray, ref, trial, start))
    except BaseException:              # Ctrl-C: cancel what has not finished
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    finally:
        if started:
            ray.shutdown()


def _result(ray: Any, ref: Any, trial: Trial, start: float) -> TrialResult:
    try:
        return ray.get(ref)
    except ray.exceptions.RayError as err:   # the worker died, also on the retry
        return TrialResult(trial.key, "failed", time.perf_counter() - start,
                           error=f"the Ray worker running this trial died ({RETRIES} retry): "
                                 f"{type(err).__name__}: {str(err).strip()[-500:]}")
