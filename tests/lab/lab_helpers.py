"""Synthetic stores: results written directly, so report and verdict tests need no training."""

from __future__ import annotations

from gradwell.lab.spec import Trial
from gradwell.lab.train import TrialResult


def fake_trial(run: str, label: str, seed: int = 0, index: int = 0, **config) -> Trial:
    key = f"{run}/{label}/{seed}".replace(" ", "_")
    return Trial(key, run, label, {"seed": seed, **config}, {"steps": 100},
                 {"metric": "test_acc", "value": 0.9}, {"grad_every": 10}, index=index)


def fake_result(trial: Trial, acc: float, ratio: float, seconds_to_target: float | None,
                findings=(), layers: int = 4, status: str = "done") -> TrialResult:
    metrics = [(s, s / 100, "test_acc", acc * s / 100) for s in (0, 50, 100)]
    metrics += [(s, s / 100, "train_loss", 2.0 - s / 100) for s in (50, 100)]
    stats = [(s, i, f"layer{i}", "grad_norm", ratio ** ((layers - 1 - i) / (layers - 1)))
             for s in (1, 51, 91) for i in range(layers)]
    summary = {"final_test_acc": acc, "grad_ratio": ratio, "seconds_to_target": seconds_to_target,
               "steps_to_target": None if seconds_to_target is None else 10,
               "final_test_loss": 1 - acc, "steps": 100}
    return TrialResult(trial.key, status, 1.0, summary, metrics, stats,
                       [dict(f) for f in findings])


def probe_trial(trial: Trial) -> TrialResult:
    """A trial kind for tests: its result says which ``probe_size`` it was given."""
    return TrialResult(summary={"probe_size": trial.config["probe_size"]})


def spec_results(experiment, outcome, quick: bool = False):
    """A :class:`Results` over ``experiment``'s trials as the runner stores them (key, label,
    resolved config); ``outcome(trial)`` gives ``(status, summary)``, or None to leave the
    trial out."""
    from gradwell.lab.verdict import Results

    rows = []
    for trial in experiment.load().trials(quick):
        out = outcome(trial)
        if out is not None:
            rows.append({"key": trial.key, "run": trial.experiment, "label": trial.label,
                         "config": trial.config, "status": out[0], "summary": out[1]})
    return Results.of(rows)
