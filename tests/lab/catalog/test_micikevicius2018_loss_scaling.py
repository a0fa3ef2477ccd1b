"""``micikevicius2018-loss-scaling``: the underflow share against values cast to float16 by
hand, the spec, and the verdict on synthetic results (it can fail)."""

from __future__ import annotations

import torch
from torch import nn

import gradwell.lab.catalog.micikevicius2018_loss_scaling as exp
from gradwell.lab.store import Store
from gradwell.lab.train import TrialResult
from gradwell.lab.verdict import Results

TINY = 2.0 ** -26          # below float16's smallest subnormal (2^-24): rounds to 0


def test_zero_share_counts_float16_underflow_only():
    """A one-layer net whose weight gradient is known, ``dL/dW = (p - y)^T x / n``: scaled so
    that every value is below float16's smallest subnormal, all are lost; unscaled, none is;
    the dead input's column (0 in float32 too) is never counted."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3))
    x = torch.randn(8, 4)
    x[:, 3] = 0.0                                        # a dead input: 0 in every precision
    y = torch.randint(0, 3, (8,))
    with torch.no_grad():
        p = torch.softmax(model(x), 1)
    ref = ((p - nn.functional.one_hot(y, 3)).T @ x / 8).abs()     # |dL/dW| in float32
    alive = ref[:, :3]
    assert alive.min().item() > 2.0 ** -14              # float16-normal at scale 1
    assert exp.zero_grad_share(model, x, y, torch.float16, TINY / alive.max().item()) == [1.0]
    assert exp.zero_grad_share(model, x, y, torch.float16, 1.0) == [0.0]
    assert exp.zero_grad_share(model, x, y, None, TINY) == [0.0]


def test_spec_crosses_three_precisions_with_two_loss_weights():
    trials = exp.EXPERIMENT.load().trials()
    assert len(trials) == 18 and all(t.function.endswith(":amp_trial") for t in trials)
    assert {(t.config["precision"], t.config["loss_scale"]) for t in trials} == {
        ("float32", "none"), ("float16", "none"), ("float16", "dynamic")}
    assert {t.config["loss_weight"] for t in trials} == {2.0 ** -16, 2.0 ** -18}
    assert {t.config["loss_weight"] for t in exp.EXPERIMENT.load().trials(quick=True)} == {
        2.0 ** -18}


def _results(tmp_path, rows: dict[str, tuple[float, float, float, float]]) -> Results:
    """precision -> (final train loss, share lost at init, after training, test acc)."""
    store = Store(tmp_path / "lab")
    trials = exp.EXPERIMENT.load().trials(quick=True)      # loss × 2^-18, seeds 0-2
    for t in trials:
        loss, init, end, acc = rows[t.label.split(" · ")[0]]
        store.save_trial(t, TrialResult(t.key, "done", 1.0, {
            "final_train_loss": loss, "zero_share_mean_init": init,
            "zero_share_mean": end, "final_test_acc": acc}))
    return Results(store, trials[0].experiment)


def test_verdict_passes_on_the_paper_result_and_fails_without_it(tmp_path):
    ok = _results(tmp_path / "a", {"float32": (0.1, 0, 0, 0.95),
                                   "float16": (2.4, 0.9, 0.9, 0.1),
                                   "float16 + GradScaler": (0.105, 0, 0.001, 0.95)})
    assert [c.passed for c in exp.verdict(ok, True)] == [True] * 4
    bad = _results(tmp_path / "b", {"float32": (0.1, 0, 0, 0.95),
                                    "float16": (0.15, 0.05, 0.1, 0.9),
                                    "float16 + GradScaler": (0.3, 0, 0.05, 0.9)})
    assert [c.passed for c in exp.verdict(bad, True)] == [False] * 4
