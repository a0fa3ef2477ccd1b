"""Trial functions for the Ray runner's tests: a worker that dies once, one that always dies."""

from __future__ import annotations

import os
from pathlib import Path

from gradwell.lab.spec import Trial
from gradwell.lab.train import TrialResult


def die_once(trial: Trial) -> TrialResult:
    marker = Path(trial.config["marker"])
    if not marker.exists():
        marker.write_text("died")
        os._exit(1)                    # the worker process dies mid-trial
    return TrialResult(trial.key, "done", 0.0, summary={"attempt": 2})


def always_die(trial: Trial) -> TrialResult:
    with open(trial.config["marker"], "a") as f:
        f.write("x")                   # one x per attempt
    os._exit(1)
