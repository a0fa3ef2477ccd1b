"""The fast share of tests/distributed: one spawn of 2 ranks checks the optimizers and clippers
(with a NaN on one rank), and the monitor in every mode, each against one process on the whole
batch, and the Guard (NaN loss on one rank, rollback). The full matrices and 4 ranks are in the slow tests of the other modules."""

from __future__ import annotations

import torch

import harness
import test_guard_dist
import test_optim_fsdp
import test_watch_fsdp
import watch_cases
import workers


def test_two_ranks(tmp_path):
    path = str(tmp_path / "fast")
    harness.run_ranks(workers.fast, 2, path)
    got = torch.load(f"{path}.optim", weights_only=True)
    want = test_optim_fsdp.reference(1, True)
    test_optim_fsdp.check(got, want)
    want = test_optim_fsdp.reference(1, True, nan_input=True)   # NaN loss on rank 1
    assert all(int(w["skipped"]) == 1 for w in want.values())
    test_optim_fsdp.check(torch.load(f"{path}.ddp", weights_only=True), want)
    test_watch_fsdp.check(f"{path}.watch", 2, list(watch_cases.MODES))
    test_guard_dist.check(f"{path}.guard", 2, ["fsdp", "fsdp-disk", "ddp"])
    for message in torch.load(f"{path}.tp", weights_only=True):   # optimizer, AGC, monitor
        assert "Shard(dim=1)" in message and "tensor parallelism" in message, message
