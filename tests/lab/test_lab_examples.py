"""The lab examples: the TOML spec is valid and the Python example runs."""

import importlib.util
from pathlib import Path

from gradwell.lab.spec import load_spec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_spirals_spec_expands_as_its_comments_say():
    spec = load_spec(EXAMPLES / "lab_spirals.toml")
    assert spec.name == "spirals-depth"
    assert len(spec.trials()) == 2 * 2 * 3
    quick = spec.trials(quick=True)
    assert len(quick) == 4 and quick[0].budget == {"epochs": 10}
    assert quick[0].label == "depth=3 · plain"


def test_lab_api_example_runs(tmp_path, capsys):
    loader = importlib.util.spec_from_file_location("lab_api", EXAMPLES / "lab_api.py")
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)
    rows = module.main(tmp_path, epochs=1, workers=1)
    assert [r.label for r in rows] == ["depth=2 · none", "depth=2 · batch", "depth=8 · none",
                                       "depth=8 · batch", "depth=32 · none", "depth=32 · batch"]
    assert (tmp_path / "report.html").is_file()
    assert "report:" in capsys.readouterr().out
