"""Items 3 and 5 of issue 11: under FSDP2 and DDP (with gradient accumulation) the monitor
records the numbers of one process on the whole batch (1e-6), findings are the same on every
rank, and only rank 0 writes the sinks."""

from __future__ import annotations

import math
import os

import pytest
import torch

import harness
import watch_cases
import workers


def close(got: dict, want: dict, where: str) -> list[str]:
    bad = []
    for key, cols in want.items():
        if key == "step":
            if got[key] != cols:
                bad.append(f"{where}: step {got[key]} != {cols}")
            continue
        for col, w in cols.items():
            g = got[key][col]
            ok = (math.isnan(g) and math.isnan(w)) or abs(g - w) <= 1e-6 * max(1.0, abs(w))
            if not ok:
                bad.append(f"{where}: {key}[{col}] = {g!r}, want {w!r}")
    return bad


def check(path: str, world: int, modes: list[str]) -> None:
    per_rank = [torch.load(f"{path}.{r}", weights_only=True) for r in range(world)]
    bad = []
    for mode in modes:
        want = watch_cases.run(mode, 0, 1, None)
        assert len(want["records"]) == harness.STEPS       # one record per optimizer step
        assert any(f[0] == "saturation" for f in want["findings"]), want["findings"]
        for r, res in enumerate(per_rank):
            got = res[mode]
            assert len(got["records"]) == len(want["records"]), mode
            for g, w in zip(got["records"], want["records"]):
                bad += close(g, w, f"{mode} rank {r} step {w['step']}")
            if got["findings"] != want["findings"]:
                bad.append(f"{mode} rank {r}: findings {got['findings']} != {want['findings']}")
        assert os.path.exists(f"{path}.{mode}.log0")
        assert not any(os.path.exists(f"{path}.{mode}.log{r}") for r in range(1, world))
    assert not bad, "\n".join(bad[:30])


@pytest.mark.slow
@pytest.mark.parametrize("world, modes", [(4, list(watch_cases.MODES))])
def test_monitor_matches_one_process(tmp_path, world, modes):
    path = str(tmp_path / "w")
    harness.run_ranks(workers.watch, world, path, modes)
    check(path, world, modes)
