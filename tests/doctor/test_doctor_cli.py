"""``gradwell doctor FILE``: a file defining make_model() and make_data() in, a table, a
conclusion and doctor.html out; bad files are usage errors (exit 2)."""

from __future__ import annotations

import os
import pathlib
import resource
import time

import pytest

from gradwell.cli import main
from gradwell.lab.store import Store

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"

HEALTHY = '''
import torch
from torch import nn
from gradwell.lab import data

def make_model():
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))

def make_data():
    d = data.digits()
    return [(d.x_train[i:i + 64], d.y_train[i:i + 64]) for i in range(0, 640, 64)]
'''


def test_cli_on_a_healthy_file_says_nothing_to_fix(tmp_path, capsys) -> None:
    (tmp_path / "net.py").write_text(HEALTHY)
    out = tmp_path / "out"
    code = main(["doctor", str(tmp_path / "net.py"), "--steps", "30", "--out", str(out),
                 "--no-progress"])
    text = capsys.readouterr().out
    assert code == 0 and "Nothing to fix" in text
    assert (out / "doctor.html").is_file()
    with Store(out) as store:
        assert len(store.trials("doctor")) == 3


@pytest.mark.parametrize("source, match", [
    ("def make_model(): pass\n", "make_data"),
    (None, "is not a Python file"),
])
def test_cli_bad_files_are_usage_errors(tmp_path, capsys, source, match) -> None:
    path = tmp_path / ("net.py" if source else "missing.py")
    if source:
        path.write_text(source)
    assert main(["doctor", str(path), "--out", str(tmp_path / "o")]) == 2
    assert match in capsys.readouterr().err


@pytest.mark.parametrize("source, expected", [
    ("def make_model(:\n", ["has a syntax error at line 1"]),
    ("import torch\nx = undefined_name\n",
     ["loading", "raised NameError: name 'undefined_name' is not defined",
      "net.py, line 2, in <module>: x = undefined_name"]),
    ("def make_model():\n    pass\n\ndef make_data():\n    return 1 / 0\n",
     ["make_data() in", "raised ZeroDivisionError",
      "net.py, line 5, in make_data: return 1 / 0"]),
])
def test_cli_errors_in_the_users_file_are_reported_without_gradwell_frames(
        tmp_path, capsys, source, expected) -> None:
    (tmp_path / "net.py").write_text(source)
    assert main(["doctor", str(tmp_path / "net.py"), "--out", str(tmp_path / "o"),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert all(e in err for e in expected), err
    assert "Traceback" not in err and "gradwell/doctor" not in err


def test_cli_refuses_fewer_than_three_seeds(tmp_path, capsys) -> None:
    (tmp_path / "net.py").write_text(HEALTHY)
    assert main(["doctor", str(tmp_path / "net.py"), "--seeds", "2"]) == 2
    assert "at least 3" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_defaults_on_the_demo_net_find_vanishing_and_a_remedy_in_budget(tmp_path,
                                                                            capsys) -> None:
    """Budget: single-threaded trials, so the CPU time is the wall time on an idle core;
    measured 36 s CPU (138 s wall with 8 helpers sharing 2 cores, load average 20)."""
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    wall = time.perf_counter()
    code = main(["doctor", str(EXAMPLES / "doctor_digits.py"), "--out", str(tmp_path)])
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    captured = capsys.readouterr()
    assert code == 0
    assert "vanishing" in captured.out and "Best measured remedy" in captured.out
    assert "trials" in captured.err                      # the progress bar
    assert cpu < 120, f"{cpu:.0f} s CPU ({time.perf_counter() - wall:.0f} s wall, load " \
                      f"{os.getloadavg()[0]:.1f})"
    with Store(tmp_path) as store:
        trials = store.trials("doctor")
    assert len(trials) >= 3 * 4 and all(t["status"] != "failed" for t in trials)
