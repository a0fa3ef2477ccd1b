"""Item 2 (and 4) of issue 11 for the Guard: the same events on every rank as in one process on
the whole batch, a rollback restores every rank, replicated parameters stay bit-identical."""

from __future__ import annotations

import pytest
import torch

import guard_cases
import harness
import workers


def check(path: str, world: int, hows: list[str]) -> None:
    per_rank = [torch.load(f"{path}.{r}", weights_only=True) for r in range(world)]
    for how in hows:
        want = guard_cases.run(how, 0, 1)
        actions = [a for _, a, _ in want["events"]]
        assert actions.count("skipped") == 2 and "rolled_back" in actions, want["events"]
        for r, res in enumerate(per_rank):
            got = res[how]
            assert got["events"] == want["events"], (how, r)
            for i, (g, w) in enumerate(zip(got["params"], want["params"])):
                err = (g - w).abs().max().item()
                assert err <= 1e-9, f"{how} rank {r} parameter {i} off by {err:.3g}"
            for g, g0 in zip(got["local"], per_rank[0][how]["local"]):   # DDP replicas
                assert torch.equal(g, g0), f"{how}: rank {r} replica differs from rank 0"
    for r, res in enumerate(per_rank):     # a write killed half-way: the trusted one loads
        crash = res["crash"]
        assert not crash["has_candidate"]
        assert crash["extra"] == {"good_steps": 2} and crash["clipper_step"] == 2
        for g, w in zip(crash["restored"], crash["at_snapshot"]):
            assert torch.equal(g, w), f"rank {r}: the trusted snapshot did not restore"


@pytest.mark.slow
def test_guard_four_ranks(tmp_path):
    path = str(tmp_path / "g")
    harness.run_ranks(workers.guard, 4, path, ["fsdp", "fsdp-disk", "ddp"])
    check(path, 4, ["fsdp", "fsdp-disk", "ddp"])
