"""examples/fsdp2_digits.py on 2 ranks: it learns, and the NaN sample on one rank is skipped
by every rank."""

from __future__ import annotations

import pytest
import torch

import harness
import workers


@pytest.mark.slow
def test_fsdp2_digits_example(tmp_path):
    path = str(tmp_path / "ex")
    harness.run_ranks(workers.example, 2, path)
    r0, r1 = (torch.load(f"{path}.{r}", weights_only=True) for r in (0, 1))
    assert r0 == r1                        # the same view on every rank
    assert r0["skipped"] == 1              # the corrupt sample's step, on both ranks
    assert r0["accuracy"] > 0.9            # a 2-layer tanh MLP on digits, 120 AdamW steps
