"""The rules on synthetic records with known numbers: thresholds, persistence, spikes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gradwell.diagnose import Finding, Thresholds, diagnose
from gradwell.diagnose.remedies import clip_threshold
from gradwell.watch import History

LAYERS = ["a", "b", "c"]


def _history(rel: list[list[float]], total: list[float] | None = None,
             update: list[list[float]] | None = None) -> History:
    """Weight-matrix layers a, b, c with ||W|| = 1 and relative gradients ``rel[step]``; the
    update ratios are SGD's at lr 1e-3 (``1e-3 x rel``) unless ``update[step]`` is given."""
    cols = {"loss": ["loss"], "total_grad_norm": ["total"], "grad_norm": LAYERS,
            "weight_norm": LAYERS, "update_ratio": LAYERS, "param_grad_norm": LAYERS}
    meta = {"layers": [{"name": n, "type": "Linear", "params": [n], "numel": 4,
                        "weight_ndim": 2, "activation": None} for n in LAYERS],
            "activations": [], "norm_layers": False, "recurrent": False}
    h = History(cols, meta, max_records=64)
    for s, r in enumerate(rel):
        t = total[s] if total is not None else math.sqrt(sum(x * x for x in r))
        u = update[s] if update is not None else [1e-3 * x for x in r]
        h.append(s, np.array([1.0, t, *r, 1.0, 1.0, 1.0, *u, *r]))
    return h


def test_vanishing_threshold_is_three_orders_below_the_reference() -> None:
    # reference: the median relative gradient of the upper half of the weight layers, here
    # median(b, c) = (0.1 + 1.0) / 2 = 0.55
    assert diagnose(_history([[2.1e-3, 0.1, 1.0]] * 10)) == []
    (f,) = diagnose(_history([[5e-4, 0.1, 1.0]] * 10))
    assert (f.kind, f.layer, f.severity) == ("vanishing", "a", "warning")
    assert f.evidence["relative_grad_vs_reference"] == {"a": pytest.approx(5e-4 / 0.55)}
    assert "0.001 x the median of the 2 weight layers nearest the output" in f.message
    (f,) = diagnose(_history([[1e-8, 1e-4, 1.0]] * 10))
    assert f.severity == "error" and set(f.evidence["relative_grad_vs_reference"]) == {"a", "b"}


def test_a_small_gradient_layer_that_still_moves_is_not_vanishing() -> None:
    # Adam-like: layer a's relative gradient is 1e-6 of the reference's, but it moves by 1e-3
    # of itself per step like the others (>= vanishing_update = 1e-2 of their median, <= 0.1)
    rows = [[5e-7, 0.1, 1.0]] * 10
    assert diagnose(_history(rows, update=[[1e-3, 1e-3, 1e-3]] * 10)) == []
    (f,) = diagnose(_history(rows, update=[[5e-6, 1e-3, 1e-3]] * 10))     # 5e-3 of theirs
    assert (f.kind, f.layer) == ("vanishing", "a")
    # moving by 0.5 of itself per step is thrashing, not learning: still reported
    found = diagnose(_history(rows, update=[[0.5, 1e-3, 1e-3]] * 10))
    assert [g.layer for g in found if g.kind == "vanishing"] == ["a"]
    # b below the reference too, a still learning: a is named as such in the evidence
    (f,) = diagnose(_history([[5e-7, 1e-4, 1.0]] * 10, update=[[1e-3, 1e-7, 1e-3]] * 10))
    assert f.layer == "b" and f.evidence["still_learning"] == ["a"]


def test_a_condition_must_persist() -> None:
    rows = [[0.5, 0.5, 1.0]] * 19
    rows[7] = [1e-6, 0.5, 1.0]                      # one odd step of 20
    assert diagnose(_history(rows)) == []
    rows = [[0.5, 0.5, 1.0]] * 10 + [[1e-6, 0.5, 1.0]] * 10   # half the record: reported
    (f,) = diagnose(_history(rows))
    assert f.kind == "vanishing" and f.step == 10


def test_relative_gradient_above_ten_is_exploding() -> None:
    assert diagnose(_history([[0.5, 9.0, 1.0]] * 6)) == []
    (f,) = diagnose(_history([[0.5, 30.0, 1.0]] * 6))
    assert (f.kind, f.layer, f.step) == ("exploding", "b", 0)
    assert f.evidence["criteria"] == ["persistent"]
    assert any("AGC" in r for r in f.remedies)     # no healthy norms seen: a relative clip


def test_a_spike_of_the_total_norm_is_exploding_with_a_derived_clip() -> None:
    rows = [[0.5, 0.5, 1.0]] * 12
    totals = [1.0, 2.0, 1.5, 1.2, 1.1, 0.9, 1.3, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert diagnose(_history(rows, totals)) == []
    totals[9] = 50.0                               # 50x the median: under spike_factor=100
    assert diagnose(_history(rows, totals)) == []
    totals[9] = 500.0
    (f,) = diagnose(_history(rows, totals))
    assert (f.kind, f.step, f.evidence["criteria"]) == ("exploding", 9, ["spike"])
    assert f.evidence["spike_factor"] == pytest.approx(500 / np.median(totals[:9]))   # 1.1
    p10 = np.percentile(totals[:9], 10)            # the healthy norms before the spike
    assert f.evidence["healthy_norm_p10"] == pytest.approx(p10)
    assert f"GlobalNorm({clip_threshold(p10):g})" in f.remedies[0]


def test_clip_threshold_keeps_two_significant_digits() -> None:
    assert clip_threshold(0.012345) == 0.012
    assert clip_threshold(3456.0) == 3500.0
    assert clip_threshold(float("nan")) == 1.0


def test_findings_and_thresholds_validate_their_input() -> None:
    with pytest.raises(ValueError, match="kind must be one of"):
        Finding("sad", None, 0, "error")
    with pytest.raises(ValueError, match="severity"):
        Finding("vanishing", None, 0, "bad")
    with pytest.raises(ValueError, match="Thresholds.dead_share"):
        Thresholds(dead_share=2.0)
    with pytest.raises(ValueError, match="positive"):
        Thresholds(spike_factor=-1)
    with pytest.raises(TypeError, match="History"):
        diagnose([1, 2, 3])
    with pytest.raises(TypeError, match="Thresholds"):
        diagnose(_history([[1, 1, 1]]), thresholds={"vanishing_ratio": 1})


def test_thresholds_are_configurable() -> None:
    h = _history([[5e-3, 0.1, 1.0]] * 10)
    assert diagnose(h) == []
    assert [f.kind for f in diagnose(h, Thresholds(vanishing_ratio=1e-2))] == ["vanishing"]


def test_finding_prints_its_evidence_and_remedies() -> None:
    f = Finding("dead_units", "relu1", 7, "warning", {"summary": "40% dead"}, ["use LeakyReLU"])
    assert str(f) == "[warning] dead_units in relu1 from step 7: 40% dead\n  -> use LeakyReLU"
    assert f.to_dict()["remedies"] == ["use LeakyReLU"]
