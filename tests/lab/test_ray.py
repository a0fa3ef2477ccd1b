"""`gradwell lab run SPEC --ray`: trials as Ray tasks on a local Ray instance give the store a
run with local workers gives; a worker that dies is retried once, then the trial is failed."""

from __future__ import annotations

import dataclasses

import pytest

from gradwell.lab.ray_runner import RETRIES, run_trials_ray
from gradwell.lab.runner import run_spec
from gradwell.lab.spec import Trial, parse_spec
from gradwell.lab.store import Store
from test_runner import TINY

ray = pytest.importorskip("ray")


def _results(directory):
    with Store(directory) as s:
        return {t["key"]: (t["status"], {k: v for k, v in t["summary"].items()
                                          if k.startswith("final_") or k == "steps"})
                for t in s.trials()}


@pytest.fixture(scope="module")
def local_ray():
    import os
    import sys
    env = {"env_vars": {"PYTHONPATH": os.pathsep.join(sys.path)}}   # tests/lab: ray_trials
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env=env)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_ray_sweep_writes_the_store_local_workers_write(tmp_path, local_ray):
    spec = parse_spec(TINY)
    local, remote = tmp_path / "local", tmp_path / "ray"
    run_spec(spec, local, workers=1, progress=False)
    summary = run_spec(spec, remote, ray=True, progress=False)
    assert summary.ran == 4 and not summary.failed
    assert _results(remote) == _results(local)            # seeded: the same numbers
    again = run_spec(spec, remote, ray=True, progress=False)
    assert again.ran == 0 and again.skipped == 4          # resume works as with workers


@pytest.mark.slow
def test_a_dead_worker_is_retried_once_then_failed(tmp_path, local_ray):
    base = Trial("k", "ray-deaths", "once", {}, {}, None, {})
    once = dataclasses.replace(base, key="once", config={"marker": str(tmp_path / "once")},
                               function="ray_trials:die_once")
    always = dataclasses.replace(base, key="always", label="always",
                                 config={"marker": str(tmp_path / "always")},
                                 function="ray_trials:always_die")
    got = {}
    run_trials_ray([once, always], lambda t, r: got.setdefault(t.key, r))
    assert got["once"].status == "done" and got["once"].summary == {"attempt": 2}
    assert got["always"].status == "failed" and "died" in got["always"].error
    assert (tmp_path / "always").read_text() == "x" * (1 + RETRIES)


@pytest.mark.slow
def test_cli_runs_a_spec_on_a_local_ray_instance(tmp_path):
    import subprocess
    import sys
    spec = tmp_path / "tiny.toml"
    spec.write_text('name = "tiny-ray"\n[base]\ndepth = 2\nwidth = 8\n[grid]\nseed = [0, 1]\n'
                    '[budget]\nsteps = 6\n[record]\neval_every = 3\n')
    out = subprocess.run([sys.executable, "-m", "gradwell.cli", "lab", "run", str(spec), "--out",
                          str(tmp_path / "run"), "--ray", "--no-progress"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "2 trials run" in out.stdout
    assert all(s == "done" for s, _ in _results(tmp_path / "run").values())
