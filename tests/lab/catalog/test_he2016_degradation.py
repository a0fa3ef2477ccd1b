"""``he2016-degradation``: the verdict on synthetic results (it can fail), and the quick version
end to end through the CLI."""

from __future__ import annotations


import gradwell.lab.catalog.he2016_degradation as exp
from gradwell.lab.spec import Trial
from gradwell.lab.store import Store
from gradwell.lab.train import TrialResult
from gradwell.lab.verdict import Results


def _results(tmp_path, losses: dict[tuple[str, int], list[float]], ratio: float = 1.0) -> Results:
    store = Store(tmp_path / "lab")
    for (conn, depth), vals in losses.items():
        for seed, loss in enumerate(vals):
            t = Trial(f"{conn}{depth}{seed}", "he2016-degradation", f"{conn} · depth={depth}",
                      {"connection": conn, "depth": depth, "seed": seed}, {"epochs": 1}, None, {})
            store.save_trial(t, TrialResult(t.key, "done", 1.0,
                                            {"final_train_loss": loss, "grad_ratio": ratio}))
    return Results(store, "he2016-degradation")


def test_verdict_passes_on_degradation_and_fails_without_it(tmp_path):
    ok = _results(tmp_path / "a", {("plain", 3): [0.16, 0.15, 0.17], ("plain", 20): [0.5, 0.6, 9],
                                   ("residual", 20): [0.03, 0.2, 0.04]})
    assert [c.passed for c in exp.verdict(ok, False)] == [True, True, True]
    no_gap = _results(tmp_path / "b", {("plain", 3): [0.2] * 3, ("plain", 20): [0.3] * 3,
                                       ("residual", 20): [0.25] * 3}, ratio=1e-5)
    assert [c.passed for c in exp.verdict(no_gap, False)] == [False, False, False]
