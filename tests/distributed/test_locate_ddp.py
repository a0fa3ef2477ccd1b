"""gradwell.locate under DistributedDataParallel (gloo, 2 CPU ranks): the rank whose batch
holds the NaN names it as an input; the other rank, whose own step is finite but whose
gradients arrive non-finite through DDP's all-reduce, says so instead of "transient"."""

from __future__ import annotations

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
