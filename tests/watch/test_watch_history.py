"""Bounded memory, progressive downsampling, JSON lines round trips, streaming sinks."""

from __future__ import annotations

import json
import math
import time
import tracemalloc

import numpy as np
import pytest
import torch
from torch import nn

import gradwell
from gradwell.watch import History, load
from gradwell.watch.layers import LayerIndex
from watch_helpers import mlp, train


def test_downsampling_keeps_an_evenly_spaced_record_and_the_latest_row() -> None:
    h = History({"x": ["a"]}, {}, max_records=8)
    for s in range(100):
        h.append(s, np.array([float(s)]))
    steps = h.steps
    assert h.recorded == 100 and len(steps) <= 9
    kept = steps[:-1]
    assert kept[0] == 0 and len(set(np.diff(kept))) == 1          # evenly spaced from 0
    assert np.diff(kept)[0] == h.stride == 16
    assert steps[-1] == 99                                         # the latest row is kept
    np.testing.assert_array_equal(h.series("x")[2][:, 0], steps)   # rows stay with their step


def test_a_100_layer_model_for_a_million_steps_stays_under_100_mb() -> None:
    model = nn.Sequential(*[m for _ in range(50) for m in (nn.Linear(4, 4), nn.ReLU())])
    index = LayerIndex(model)
    assert len(index.layers) == 50 and len(index.tracked) == 100
    deep = nn.Sequential(*[nn.Linear(2, 2) for _ in range(100)], nn.Tanh())
    cols = LayerIndex(deep).columns(activations=True)
    assert len(cols["grad_norm"]) == 100
    tracemalloc.start()
    h = History(cols, {})
    row = np.arange(h.width, dtype=np.float64)
    start = time.perf_counter()
    for s in range(1_000_000):
        h.append(s, row)
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert h.recorded == 1_000_000 and len(h) <= 1025
    assert peak < 100e6 and h.nbytes < 100e6
    assert elapsed < 60


def test_save_and_load_round_trip_with_events(tmp_path) -> None:
    def poison(step, xb, model):
        if step == 5:
            xb[0, 0] = float("nan")

    mon = train(mlp(2, 16), steps=8, on_batch=poison)
    path = mon.save(tmp_path / "run.jsonl")
    loaded = load(path)
    assert loaded.columns == mon.history.columns
    np.testing.assert_array_equal(loaded.steps, mon.history.steps)
    for stat in mon.history.columns:
        np.testing.assert_array_equal(loaded.series(stat)[2], mon.history.series(stat)[2])
    assert loaded.first_nonfinite()["step"] == 5
    assert [(f.kind, f.step, f.layer) for f in gradwell.diagnose.diagnose(loaded)] == \
        [(f.kind, f.step, f.layer) for f in mon.findings()]
    header = json.loads(path.read_text().splitlines()[0])
    assert header["type"] == "header" and header["meta"]["layers"][0]["name"] == "0"


def test_the_file_sink_streams_every_step_beyond_the_memory_budget(tmp_path) -> None:
    log = tmp_path / "stream.jsonl"
    mon = train(mlp(1, 8), steps=30, log=log, max_records=4)
    assert len(mon.history) <= 5
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert [x["step"] for x in lines if x["type"] == "record"] == list(range(30))
    full = load(log)
    assert full.recorded == 30 and list(full.steps) == list(range(30))
    assert load(log, max_records=4).recorded == 30


def test_load_rejects_files_that_are_not_histories(tmp_path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty"):
        load(empty)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"step": 1}\n')
    with pytest.raises(ValueError, match="header"):
        load(bad)


def test_long_runs_do_not_grow_the_monitor() -> None:
    model = mlp(2, 8, nn.ReLU)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(16, 64), torch.randint(0, 10, (16,))
    with gradwell.watch(model, max_records=8) as mon:
        for _ in range(200):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            mon.step()
            opt.step()
            acts = mon._acts
            assert not acts.acc and not acts.forward_order      # reset every step
    assert mon.history.recorded == 200 and len(mon.history) <= 9
    assert math.isfinite(mon.history.latest()["total_grad_norm"]["total"])
