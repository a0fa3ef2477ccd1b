"""gradwell.doctor on known cases: a deep sigmoid MLP (vanishing gradients, Glorot & Bengio
2010) gets a measured remedy ranked first; a healthy net has nothing to fix; runs resume from
the lab store; the report escapes labels. The evidence for "vanishing" and "healthy" is
computed here with plain torch."""

from __future__ import annotations

import statistics

import pytest
import torch
from torch import nn

import gradwell
from gradwell.doctor import session
from gradwell.lab import data
from gradwell.lab.store import Store

LOSS = nn.CrossEntropyLoss()


def _batches(bs: int = 64, n: int = 640) -> list[tuple[torch.Tensor, torch.Tensor]]:
    d = data.digits()
    return [(d.x_train[i:i + bs], d.y_train[i:i + bs]) for i in range(0, n, bs)]


def _deep_sigmoid() -> nn.Module:
    return gradwell.nn.MLP(64, 10, depth=10, width=16, activation="sigmoid")


def _healthy() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def _relative_grads(model: nn.Module, batch) -> list[float]:
    """||dL/dW|| / ||W|| of each weight matrix, input to output, by plain autograd."""
    LOSS(model(batch[0]), batch[1]).backward()
    return [(p.grad.norm() / p.norm()).item() for p in model.parameters() if p.dim() == 2]


def test_deep_sigmoid_mlp_gets_a_measured_remedy_ranked_first() -> None:
    torch.manual_seed(0)
    rel = _relative_grads(_deep_sigmoid(), _batches()[0])
    assert rel[0] / rel[-1] < 1e-4                           # torch says: it vanishes
    r = gradwell.doctor(_deep_sigmoid, _batches(), LOSS, budget_steps=30, progress=False)
    assert any(f.kind == "vanishing" for f in r.findings)
    assert any(f.kind == "vanishing" for f in r.init.findings)
    assert r.init.layers[0].relative_grad / r.init.layers[-1].relative_grad < 1e-4
    names = [c.name for c in r.candidates]
    assert any(n.startswith("re-init") for n in names) and any("lr_find" in n for n in names)
    assert any(n.startswith("structure") for n in names)
    best = r.candidates[0]
    assert best.verdict == "helps" and len(best.scores) == 3
    gain = statistics.median(r.baseline) - statistics.median(best.scores)
    assert best.improvement == pytest.approx(gain)
    spread = max(max(r.baseline) - min(r.baseline), max(best.scores) - min(best.scores))
    assert gain > spread                                     # the rule, recomputed here
    assert [c.improvement for c in r.helpful] == sorted((c.improvement for c in r.helpful),
                                                        reverse=True)
    assert {c.verdict for c in r.candidates} <= set(gradwell.doctor.VERDICTS)
    assert "Best measured remedy" in r.conclusion()


def test_healthy_model_has_nothing_to_fix_and_rng_is_untouched() -> None:
    torch.manual_seed(0)
    rel = _relative_grads(_healthy(), _batches()[0])
    assert max(rel) / min(rel) < 30                          # torch says: gradients flow
    state = torch.get_rng_state()
    r = gradwell.doctor(_healthy, _batches(), LOSS, budget_steps=60, progress=False)
    assert torch.equal(torch.get_rng_state(), state)
    assert r.findings == [] and r.init.findings == [] and r.candidates == []
    assert r.nothing_to_fix and r.conclusion().startswith("Nothing to fix")
    assert len(r.baseline) == 3 and all(s < r.init.loss - 0.2 for s in r.baseline)  # trains


def test_run_resumes_from_the_store_and_the_report_escapes_labels(tmp_path, monkeypatch) -> None:
    label = "<b>[red]wide[/] x^2</b>"      # mathtext ($) in the lab's plots: issue 15
    variants = {label: lambda: nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))}
    first = gradwell.doctor(_healthy, _batches(), LOSS, budget_steps=30, variants=variants,
                            directory=tmp_path, progress=False)
    assert [c.name for c in first.candidates] == [f"variant: {label}"]
    with Store(tmp_path) as store:
        assert len(store.trials("doctor")) == 6              # baseline and variant, 3 seeds
    monkeypatch.setattr(session, "train", lambda *a, **k: pytest.fail("trained again"))
    again = gradwell.doctor(_healthy, _batches(), LOSS, budget_steps=30, variants=variants,
                            directory=tmp_path, progress=False)
    assert again.baseline == first.baseline
    assert again.candidates[0].scores == first.candidates[0].scores
    page = again.write_html().read_text()
    assert "&lt;b&gt;[red]wide[/] x^2&lt;/b&gt;" in page and "<b>[red]" not in page
    from rich.console import Console
    console = Console(record=True, width=200)
    again.print(console)
    assert "[red]wide[/]" in console.export_text()


@pytest.mark.parametrize("kwargs, error, match", [
    ({"seeds": 2}, ValueError, "seeds must be an int >= 3"),
    ({"budget_steps": 5}, ValueError, "budget_steps"),
    ({"optimizer": "lbfgs"}, ValueError, "optimizer must be one of"),
    ({"variants": {"x": 1}}, TypeError, "variants"),
])
def test_bad_arguments(kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        gradwell.doctor(_healthy, _batches(n=128), LOSS, progress=False, **kwargs)
    with pytest.raises(TypeError, match="make_model"):
        gradwell.doctor(_healthy(), _batches(n=128), LOSS, progress=False)


def test_scores_figure_shows_mathtext_literally() -> None:
    from gradwell.doctor.html import scores_figure
    from gradwell.doctor.report import CandidateResult

    r = gradwell.doctor(_healthy, _batches(n=128), LOSS, budget_steps=10, progress=False)
    r.candidates = [CandidateResult("$x^$ [b]", "user variant", "hurts", -1.0, 0.1, 3.0,
                                    [3.0, 3.1, 2.9], {})]
    assert scores_figure(r)                     # no mathtext parse error


@pytest.mark.slow
def test_defaults_on_the_demo_net_rank_a_structural_remedy_first_and_healthy_is_fine() -> None:
    """The demo's 20-layer sigmoid MLP with the doctor's defaults; a 2-layer ReLU net too."""
    from torch.utils.data import DataLoader, TensorDataset

    d = data.digits()
    loader = DataLoader(TensorDataset(d.x_train, d.y_train), batch_size=64, shuffle=True)
    demo = gradwell.doctor(lambda: gradwell.nn.MLP(64, 10, depth=20, width=64,
                                                   activation="sigmoid"),
                           loader, LOSS, progress=False)
    assert [f.kind for f in demo.findings][:1] == ["vanishing"]
    assert demo.candidates[0].verdict == "helps"
    assert statistics.median(demo.candidates[0].scores) < 1.0 < statistics.median(demo.baseline)
    healthy = gradwell.doctor(_healthy, loader, LOSS, progress=False)
    assert healthy.nothing_to_fix and healthy.candidates == []
