"""The runner: resume, skipping finished trials, repeatability across worker counts, and a run
killed with SIGKILL in the middle."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from gradwell.lab.runner import run_spec
from gradwell.lab.spec import load_spec, parse_spec
from gradwell.lab.store import DB_NAME, Store
from lab_helpers import fake_result

TINY = {"name": "tiny", "base": {"depth": 2, "width": 8},
        "grid": {"seed": [0, 1], "optimizer": ["sgd", "adam"]}, "budget": {"steps": 12},
        "record": {"eval_every": 6, "grad_every": 4}}

SPEC = """
name = "resume"
[base]
depth = 6
width = 32
[grid]
seed = [0, 1, 2, 3]
activation = ["relu", "tanh"]
[budget]
steps = 150
[record]
eval_every = 50
"""


def _final(directory):
    with Store(directory) as s:
        return {t["key"]: t["summary"]["final_test_acc"] for t in s.trials()}


def test_second_run_skips_finished_trials_and_reruns_failed_ones(tmp_path):
    spec = parse_spec(TINY)
    first = run_spec(spec, tmp_path, workers=1, progress=False)
    assert (first.total, first.ran, first.skipped, first.failed) == (4, 4, 0, [])
    again = run_spec(spec, tmp_path, workers=1, progress=False)
    assert (again.ran, again.skipped) == (0, 4)
    with Store(tmp_path) as s:
        t = spec.trials()[2]
        s.save_trial(t, fake_result(t, 0.0, 1.0, None, status="failed"))
    third = run_spec(spec, tmp_path, workers=1, progress=False)
    assert (third.ran, third.skipped) == (1, 3)
    with Store(tmp_path) as s:
        assert sorted(t["status"] for t in s.trials()) == ["done"] * 4


def test_two_workers_give_the_same_numbers_as_one(tmp_path):
    spec = parse_spec(TINY)
    run_spec(spec, tmp_path / "one", workers=1, progress=False)
    two = run_spec(spec, tmp_path / "two", workers=2, progress=False)
    assert two.ran == 4 and not two.failed
    assert _final(tmp_path / "one") == _final(tmp_path / "two")


def _count(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=5) as c:
            return c.execute("SELECT COUNT(*) FROM trials").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _run(spec_file, out, workers):
    cmd = [sys.executable, "-m", "gradwell.cli", "lab", "run", str(spec_file), "--out", str(out),
           "--workers", str(workers), "--no-progress"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_kill_9_mid_run_then_rerun_runs_every_trial_exactly_once(tmp_path):
    spec_file = tmp_path / "resume.toml"
    spec_file.write_text(SPEC)
    out, db = tmp_path / "lab", tmp_path / "lab" / DB_NAME
    proc = _run(spec_file, out, workers=2)
    deadline = time.time() + 120
    while _count(db) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    workers = _children(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = _count(db)
    assert 2 <= killed_at < 8, "the run must be killed in the middle"
    deadline = time.time() + 15                       # orphaned workers notice and exit
    while any(_alive(w) for w in workers) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(_alive(w) for w in workers)
    proc = _run(spec_file, out, workers=2)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()
    keys = [t.key for t in load_spec(spec_file).trials()]
    with sqlite3.connect(db) as c:
        stored = [k for (k,) in c.execute("SELECT key FROM trials")]
        per_trial = c.execute("SELECT trial, COUNT(*) FROM metrics GROUP BY trial").fetchall()
    assert sorted(stored) == sorted(keys)             # every trial exactly once
    assert len({n for _, n in per_trial}) == 1         # and none with duplicated rows
