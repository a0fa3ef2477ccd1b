"""The benchmark scripts run (their --quick smoke mode) and print their comparison tables.

Their timings are not asserted: benchmarks are measured on a quiet machine and recorded in
docs/benchmarks.md, never timed inside the test suite.
"""

import pathlib
import subprocess
import sys

import pytest

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.slow
@pytest.mark.parametrize("script, expected", [
    ("optim_step.py", "clip_grad_norm_ + torch Adam fused"),
    ("clip_overhead.py", "clip_grad_norm_"),
    ("watch_overhead.py", "watch"),
    ("distributed_overhead.py", "ratio gradwell / torch"),
    ("locate_overhead.py", "detect_anomaly(check_nan=True)"),
])
def test_benchmark_runs(script: str, expected: str) -> None:
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), "--quick"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]    # what failed, not only that it did
    assert expected in done.stdout


@pytest.mark.slow
def test_optim_step_components_runs() -> None:
    out = subprocess.run([sys.executable, str(BENCHMARKS / "optim_step.py"), "--components",
                          "--numel", "2e5", "--warmup", "1", "--steps", "2"], check=True,
                         capture_output=True, text=True, timeout=600).stdout
    for name in ("norm:", "read:", "scale:", "adam:", "adam_s:", "when clipping fires"):
        assert name in out
