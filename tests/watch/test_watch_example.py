"""examples/watch_digits.py does what its docstring says."""

from __future__ import annotations

import importlib.util
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "watch_digits.py"


def test_watch_digits_finds_vanishing_and_the_remedy_fixes_it(tmp_path, capsys) -> None:
    spec = importlib.util.spec_from_file_location("watch_digits", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sick, healthy, losses = module.main(str(tmp_path))
    assert [f.kind for f in sick] == ["vanishing"] and sick[0].severity == "error"
    assert sum(losses[-5:]) < 0.7 * sum(losses[:5])              # the loss falls
    assert max(losses) <= 1.1 * losses[0]                         # and never leaps above its start
    assert healthy == []
    assert (tmp_path / "gradient_flow.png").stat().st_size > 20_000
    out = capsys.readouterr().out
    assert "[error] vanishing in 0 from step 0" in out and "0 findings" in out


def test_watch_transformer_finds_attention_logit_growth_and_qk_layernorm_removes_it(capsys):
    path = EXAMPLE.parent / "watch_transformer.py"
    spec = importlib.util.spec_from_file_location("watch_transformer", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sick, healthy, numbers = module.main()
    assert [f.kind for f in sick] == ["attention_logits"]
    assert "QK-layernorm" in sick[0].remedies[0]
    assert healthy == [] and numbers["peak_qk_norm"] < 100 < numbers["peak"]
    assert numbers["last_loss"] < 0.9 * numbers["first_loss"]        # torch: it still learns
    assert "with QK-layernorm: 0 warnings" in capsys.readouterr().out
