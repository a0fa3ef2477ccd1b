"""The ``gradwell`` command end to end: usage errors exit 2 with advice, tiny runs exit 0."""

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import gradwell
from gradwell.cli import main

TINY = """
name = "tiny"
[base]
depth = 2
width = 8
[grid]
activation = ["relu", "sigmoid"]
[budget]
steps = 10
[target]
metric = "test_acc"
value = 0.05
"""


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "gradwell.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


def test_version_and_help():
    r = run("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"gradwell {gradwell.__version__}"
    r = run("--help")
    assert r.returncode == 0
    for word in ("demo", "lab", "gradwell lab run", "gradwell lab report"):
        assert word in r.stdout
    r = run("lab", "run", "--help")
    assert r.returncode == 0 and "--workers" in r.stdout and "--quick" in r.stdout


def test_console_script_is_installed():
    script = Path(sys.executable).with_name("gradwell")
    assert script.exists()
    r = subprocess.run([str(script), "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and "gradwell" in r.stdout


@pytest.mark.parametrize("args, words", [
    ([], ["usage: gradwell", "demo", "lab"]),
    (["lab"], ["usage: gradwell lab", "list", "run", "report"]),
    (["frobnicate"], ["invalid choice", "'frobnicate'"]),
    (["lab", "run"], ["the following arguments are required", "NAME|FILE.toml"]),
    (["lab", "run", "vanishin"], ["no built-in experiment 'vanishin'", "gradwell lab list"]),
    (["lab", "run", "missing.toml"], ["missing.toml does not exist", ".toml"]),
    (["lab", "run", "vanishing", "--workers", "0"], ["--workers", "positive integer"]),
    (["lab", "run", "vanishing", "--workers", "two"], ["--workers", "positive integer"]),
    (["lab", "report", "nowhere"], ["not a lab directory", "gradwell lab run"]),
    (["demo", "--bogus"], ["unrecognized arguments: --bogus"]),
])
def test_bad_usage_exits_2_and_says_what_to_do(args, words, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, err = in_process(args, capsys)
    assert code == 2
    for w in words:
        assert w in err, (w, err)


def in_process(args, capsys):
    try:
        code = main(args)
    except SystemExit as e:            # argparse's own usage errors
        code = e.code
    return code, capsys.readouterr().err


def test_out_must_be_a_directory(tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    code, err = in_process(["demo", "--out", str(tmp_path / "afile")], capsys)
    assert code == 2 and "is a file; give a directory" in err


def test_invalid_spec_exits_2_naming_file_and_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(TINY.replace("depth = 2", "depth = -2"))
    r = run("lab", "run", str(bad), cwd=tmp_path)          # through a real process, once
    assert r.returncode == 2
    assert "bad.toml: base.depth: expected an integer >= 1; got -2" in r.stderr


def test_lab_list(capsys):
    assert main(["lab", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("vanishing ") and "depth-20" in line for line in lines)
    assert main(["lab", "list", "--names"]) == 0
    names = capsys.readouterr().out.split()
    from gradwell.lab.catalog import EXPERIMENTS
    assert names == list(EXPERIMENTS) and "vanishing" in names


def test_lab_run_then_report_end_to_end(tmp_path, capsys):
    spec = tmp_path / "tiny.toml"
    spec.write_text(TINY)
    out = tmp_path / "runs" / "tiny"
    r = run("lab", "run", str(spec), "--out", str(out), "--workers", "1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "relu" in r.stdout and "sigmoid" in r.stdout and "2 trials run" in r.stdout
    assert "gradwell lab report" in r.stdout
    with sqlite3.connect(out / "lab.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM trials WHERE status = 'done'").fetchone() == (2,)
        assert db.execute("SELECT COUNT(*) FROM layer_stats").fetchone()[0] > 0
    assert main(["lab", "run", str(spec), "--out", str(out), "--workers", "1"]) == 0
    assert "0 trials run, 2 already" in capsys.readouterr().out
    assert main(["lab", "report", str(out)]) == 0
    assert capsys.readouterr().out.strip().endswith("report.html")
    html = (out / "report.html").read_text()
    assert "tiny" in html and "relu" in html
    # the ranking, a gradient-flow panel per configuration, the learning curves
    assert html.count('<img alt="ranking by steps to') == 1
    assert html.count('<img alt="gradient flow: ') == 2
    assert '<img alt="training loss"' in html and '<img alt="test accuracy"' in html


def test_default_out_directory_is_under_gradwell_lab(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.toml").write_text(TINY.replace("steps = 10", "steps = 2"))
    assert main(["lab", "run", "tiny.toml", "--workers", "1", "--no-progress"]) == 0
    assert (tmp_path / "gradwell-lab" / "tiny" / "lab.sqlite").is_file()
