"""Every experiment of the catalog reproduces through the CLI: its quick version in the fast
suite, its full version in the slow one (``gradwell lab run NAME [--quick]`` exits 0 only when
every pass criterion holds)."""

from __future__ import annotations

import importlib
import inspect

import pytest

from gradwell.cli import main

#: (experiment, its module, number of criteria when the test pins it)
EXPERIMENTS = [
    ("he2015-init", "he2015_init", 8),
    ("glorot2010", "glorot2010", 5),
    ("saxe2014-orthogonal", "saxe2014_orthogonal", 4),
    ("pascanu2013-clipping", "pascanu2013_clipping", None),
    ("gated-rnn", "gated_rnn", None),
    ("he2016-degradation", "he2016_degradation", None),
    ("ioffe2015-bn", "ioffe2015_bn", None),
    ("kingma2015-optimizers", "kingma2015_optimizers", None),
    ("founding-claims", "founding_claims", None),
    ("bengio1994-long-term", "bengio1994_long_term", 5),
    ("zhang2019-fixup", "zhang2019_fixup", 7),
    ("micikevicius2018-loss-scaling", "micikevicius2018_loss_scaling", 4),
    ("xiong2020-warmup", "xiong2020_warmup", 5),
    ("wortsman2023-instabilities", "wortsman2023_instabilities", 8),
]


def run(name: str, out: str, quick: bool, workers: int) -> int:
    args = ["lab", "run", name, "--workers", str(workers), "--no-progress", "--out", out]
    return main(args + (["--quick"] if quick else []))


@pytest.mark.parametrize("name, module, criteria", EXPERIMENTS)
def test_quick_version_reproduces(name, module, criteria, tmp_path, capsys) -> None:
    code = run(name, str(tmp_path / "lab"), quick=True, workers=1)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "reproduced" in out and "not reproduced" not in out and "✘" not in out
    if criteria is not None:
        assert out.count("✔") == criteria
    # every module draws its docs figure from a lab directory: plot(lab_dir, out[, quick])
    plot = importlib.import_module(f"gradwell.lab.catalog.{module}").plot
    quick = {"quick": True} if "quick" in inspect.signature(plot).parameters else {}
    assert plot(tmp_path / "lab", tmp_path / "figure.png", **quick).stat().st_size > 1000


def test_vanishing_quick_version_reproduces(tmp_path, capsys) -> None:
    """The flagship experiment (its full version is `gradwell demo`, in the slow suite); its
    figures are the report's, so it has no ``plot``."""
    code = run("vanishing", str(tmp_path / "lab"), quick=True, workers=1)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "not reproduced" not in out and "✘" not in out
    assert out.count("✔") == 10                        # 2 + 4 remedies x 2 optimizers


@pytest.mark.slow
@pytest.mark.parametrize("name", [e[0] for e in EXPERIMENTS])
def test_full_version_reproduces(name, tmp_path, capsys) -> None:
    code = run(name, str(tmp_path / "lab"), quick=False, workers=2)
    assert code == 0, capsys.readouterr().out
