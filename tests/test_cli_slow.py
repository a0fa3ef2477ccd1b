"""The full demo (slow: ``python -m pytest -m slow``); the flagship experiment's quick version is
in the fast suite (tests/lab/catalog/test_catalog_runs.py)."""

import resource
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def test_demo_fits_in_a_minute_on_two_cores_and_reproduces(tmp_path):
    """The budget is "under 60 s on 2 cores". Wall time on a shared test machine measures the
    neighbours, so the check is on CPU time (the demo's process and its workers): at most
    100 CPU-seconds, i.e. 50 s per core, leaving 10 s for the serial start and report."""
    start, cpu = time.perf_counter(), _cpu_seconds()
    r = subprocess.run([sys.executable, "-m", "gradwell.cli", "demo", "--out", str(tmp_path / "d"),
                        "--workers", "2"], capture_output=True, text=True, timeout=300)
    elapsed, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
    assert r.returncode == 0, r.stderr
    assert cpu < 100, f"gradwell demo used {cpu:.0f} CPU-seconds ({elapsed:.0f} s wall)"
    assert "reproduced" in r.stdout and "not reproduced" not in r.stdout
    assert "sigmoid plain · SGD" in r.stdout and "ReLU + BN + residual · Adam" in r.stdout
    report = tmp_path / "d" / "report.html"
    assert f"report: {report}" in r.stdout.replace("\n", "")
    html = report.read_text()
    # the ranking, a gradient-flow panel and a total-gradient-norm panel per configuration
    # (small multiples), and the learning curves (training loss, test and training accuracy)
    assert html.count('<img alt="ranking by steps to') == 1
    assert html.count('<img alt="gradient flow: ') == 12
    assert html.count('<img alt="total gradient norm (before clipping): ') == 12
    assert html.count("data:image/png;base64,") == 1 + 12 + 12 + 3
    assert "Other recorded series" in html and "Bottom line:</b> Reproduced" in html
