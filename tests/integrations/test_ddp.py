"""Both callbacks under DDP on the CPU: 2 processes, gloo (slow: two framework start-ups).

The NaN is in rank 0's half of global batch 3 (of 8; accumulation 2, so optimizer step 1):
both ranks must skip that step and end equal to each other and to one torch process that
trains on the full batches without it, with per-layer norms equal to torch's pre-clip norms.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from integration_helpers import batches, mlp, torch_loop
from spawn import on_free_port, port_taken

HERE = Path(__file__).resolve().parent


def _run(args: Callable[[int], list[str]], out: Path) -> tuple[dict, dict]:
    """Run ``python *args(port) out`` (on a new port if rank 0 finds its port taken)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(HERE), str(HERE.parents[1] / "src"), os.environ.get("PYTHONPATH", "")]))

    def start(port: int) -> None:
        run = subprocess.run([sys.executable, *args(port), str(out)],
                             env=dict(env, MASTER_PORT=str(port)), capture_output=True,
                             text=True, timeout=600)
        if run.returncode and port_taken(run.stderr):
            raise RuntimeError(run.stderr[-3000:])
        assert run.returncode == 0, run.stderr[-3000:]
    on_free_port(start)
    return tuple(torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1))


def _check(r0: dict, r1: dict) -> None:
    for a, b in zip(r0["params"], r1["params"]):
        assert torch.equal(a, b)
    assert r0["events"] == r1["events"] == [(1, "skipped", "nonfinite_loss")]
    assert r0["findings"] == r1["findings"] and "nonfinite" in r0["findings"]
    assert r0["last_epoch"] == 3                       # 4 optimizer steps, one skipped
    data = batches(8, size=16, nan_at=3)
    ref = torch_loop(mlp(), data[:2] + data[4:], schedule=True, accumulate=2, clip=0.5)
    # the all-reduce rounds the mean gradient differently (~1e-7 relative); Adam divides by
    # sqrt(v), so in a near-zero coordinate that can move a weight by ~1e-5 (lr 1e-2)
    for a, b in zip(r0["params"], ref["net"].parameters()):
        torch.testing.assert_close(a, b.detach(), rtol=1e-4, atol=2e-5)
    norms = np.array(r0["grad_norm"])
    np.testing.assert_allclose(np.delete(norms, 1, axis=0), ref["layer_norms"], rtol=1e-4)
    assert not np.isfinite(norms[1]).all()


@pytest.mark.slow
def test_lightning_ddp_skips_a_nan_on_one_rank_on_every_rank_exactly(tmp_path):
    pytest.importorskip("lightning")
    _check(*_run(lambda port: [str(HERE / "ddp_lightning_run.py")], tmp_path))


@pytest.mark.slow
def test_transformers_ddp_skips_a_nan_on_one_rank_on_every_rank_exactly(tmp_path):
    pytest.importorskip("transformers")
    r0, r1 = _run(lambda port: ["-m", "torch.distributed.run", "--nproc_per_node", "2",
                                "--master_port", str(port),
                                str(HERE / "ddp_transformers_run.py")], tmp_path)
    _check(r0, r1)
    logged = np.array(r0["logged"])
    assert logged.shape == (4,) and np.isnan(logged[1])
