"""The summary table, the gradient-flow figure and the TensorBoard sink."""

from __future__ import annotations

import sys

import pytest
from rich.console import Console
from torch import nn

from gradwell.watch import TensorBoardSink
from watch_helpers import mlp, train


def test_summary_lists_layers_statistics_and_findings() -> None:
    healthy = train(mlp(2, 16), steps=5)
    text = str(healthy.summary())
    assert "no findings" in text and "Linear" in text and "ReLU" in text
    rows = healthy.summary().rows()
    assert [r["layer"] for r in rows] == ["0", "2", "4", "1", "3"]
    assert rows[0]["grad_norm"] == healthy.history.latest()["grad_norm"]["0"]
    sick = train(mlp(12, 32, nn.Sigmoid), steps=6)
    text = str(sick.summary())
    assert "vanishing" in text and "ReLU-family" in text
    console = Console(record=True, width=200)
    console.print(sick.summary())
    assert "vanishing" in console.export_text()


def test_plot_writes_a_png(tmp_path) -> None:
    mon = train(mlp(4, 16, nn.Tanh, weight_std=4.0), steps=6)
    path = mon.plot(tmp_path / "flow.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


class FakeWriter:
    def __init__(self) -> None:
        self.scalars: dict[str, list[tuple[int, float]]] = {}
        self.texts: list[str] = []
        self.flushed = False

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.scalars.setdefault(tag, []).append((step, value))

    def add_text(self, tag: str, text: str, step: int) -> None:
        self.texts.append(text)

    def flush(self) -> None:
        self.flushed = True


def test_tensorboard_sink_writes_scalars_per_layer() -> None:
    writer = FakeWriter()

    def poison(step, xb, model):
        if step == 2:
            xb[:] = float("inf")

    mon = train(mlp(1, 8), steps=3, sinks=[TensorBoardSink(writer=writer)], on_batch=poison)
    steps, names, grad = mon.history.series("grad_norm")
    for j, name in enumerate(names):
        assert writer.scalars[f"grad_norm/{name}"][:2] == [(0, grad[0, j]), (1, grad[1, j])]
    assert "dead/1" in writer.scalars and "out_mean/1" in writer.scalars
    assert not any(t.startswith("param_grad_norm/") for t in writer.scalars)
    assert len(writer.texts) == 1 and '"nonfinite"' in writer.texts[0]
    assert writer.flushed


def test_tensorboard_sink_arguments() -> None:
    with pytest.raises(ValueError, match="exactly one of log_dir"):
        TensorBoardSink()
    with pytest.raises(TypeError, match="add_scalar"):
        TensorBoardSink(writer=object())


def test_tensorboard_sink_without_the_package_names_the_extra(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorboard", None)     # as if it were not installed
    with pytest.raises(ImportError, match=r'pip install "gradwell\[tensorboard\]"'):
        TensorBoardSink(tmp_path / "tb")
    assert not (tmp_path / "tb").exists()


def test_reports_work_without_activation_statistics(tmp_path) -> None:
    mon = train(mlp(2, 8), steps=3, activations=False, updates=False)
    assert "out_mean" not in mon.history.columns
    text = str(mon.summary())
    assert "no findings" in text and "Linear" in text and "ReLU" in text
    assert mon.plot(tmp_path / "f.png").stat().st_size > 10_000
    assert all(v != v for v in mon.history.latest()["update_ratio"].values())   # NaN: off
