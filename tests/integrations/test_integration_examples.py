"""The integration examples run and do what their docstrings say."""

from __future__ import annotations

import importlib.util
import pathlib

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:(?!gradwell)",
                                        "ignore::UserWarning", "ignore::FutureWarning")


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_lightning_example_skips_the_nan_batch_every_epoch(capsys):
    pytest.importorskip("lightning")
    callback, accuracy = load("lightning_callback").main(epochs=2)
    assert accuracy > 0.9
    events = callback.session.guard.events
    assert [(e.step, e.reason) for e in events if e.action == "skipped"] == \
        [(5, "nonfinite_loss"), (33, "nonfinite_loss")]     # 28 batches per epoch
    assert "skipped steps 2" in capsys.readouterr().out


def test_transformers_example_logs_gradwell_scalars_and_findings(capsys):
    pytest.importorskip("transformers")
    trainer = load("transformers_callback").main(epochs=1)
    logged = [e for e in trainer.state.log_history if "loss" in e]
    assert logged and all(e["gradwell/grad_norm"] == pytest.approx(e["grad_norm"], rel=1e-5)
                          for e in logged)
    assert trainer.state.log_history[-1]["gradwell/findings"] == []
    assert "gradwell: no findings" in capsys.readouterr().out


def test_importing_gradwell_imports_no_framework():
    """``import gradwell`` and ``gradwell.integrations`` stay light: neither framework loads
    until its callback module is imported."""
    import subprocess
    import sys
    code = ("import sys, gradwell, gradwell.integrations; gradwell.watch; gradwell.guard; "
            "print(sorted(m for m in ('lightning', 'transformers', 'accelerate', "
            "'pytorch_lightning') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
