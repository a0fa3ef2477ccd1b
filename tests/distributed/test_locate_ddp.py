"""gradwell.locate and the Guard's replay triage under DistributedDataParallel and FSDP2
(gloo, 2 CPU ranks): the rank whose batch holds the NaN names it as an input; under DDP the
other rank, whose own step is finite but whose gradients arrive non-finite through the
all-reduce, says so instead of "transient"."""

from __future__ import annotations

import pytest
import torch

import harness
import workers


def test_each_rank_names_where_its_nan_came_from(tmp_path):
    out = str(tmp_path / "locate")
    harness.run_ranks(workers.locate, 2, out)
    r0, r1 = (torch.load(f"{out}.{r}", weights_only=True) for r in range(2))
    # torch-only evidence: rank 0's outputs are NaN; rank 1's are finite, yet after the
    # all-reduce both ranks' gradients are not
    assert not r0["outputs_finite"] and r1["outputs_finite"]
    assert not r0["grads_finite"] and not r1["grads_finite"]
    o0, o1 = r0["origin"], r1["origin"]
    assert (o0["phase"], o0["op"], o0["tensor"], o0["kind"]) == ("input", "input", "input[0]",
                                                                  "nan")
    assert (o1["phase"], o1["op"], o1["kind"], o1["reproduced"]) == ("backward", "all_reduce",
                                                                      "nan", True)
    assert o1["nonfinite"] > 0 and "another rank produced it" in r1["text"]


@pytest.mark.parametrize("how", ["ddp", "fsdp"])
def test_guard_replay_triage_under_ddp_and_fsdp2_neither_crashes_nor_hangs(tmp_path, how):
    """The Guard's ``replay=`` on a NaN in the last rank's share: that rank's triage is "data"
    (its input), the other rank's "reproducible". Under FSDP2 the op-by-op replay is not run (it
    would gather parameters on some ranks only: a hang); the origin then says so."""
    out = str(tmp_path / "guard")
    harness.run_ranks(workers.guard_replay, 2, out, how, timeout=120)
    r0, r1 = (torch.load(f"{out}.{r}", weights_only=True) for r in range(2))
    assert [(e["step"], e["action"]) for e in r0] == [(1, "skipped")] == [
        (e["step"], e["action"]) for e in r1]
    assert (r1[0]["triage"], r1[0]["origin"]["op"], r1[0]["origin"]["tensor"]) == (
        "data", "input", "input[0]")
    assert r0[0]["triage"] == "reproducible"
    if how == "ddp":
        assert r0[0]["origin"]["op"] == "all_reduce"
    else:
        assert r0[0]["origin"]["reproduced"] is None and "not replayed" in r0[0]["origin"]["text"]
