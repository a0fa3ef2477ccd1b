"""Trial kinds and experiments: one visible table each, no registration by import, lower layers
that never import the catalog, and one failure path (the runner's) for every kind."""

import importlib
import pkgutil
import subprocess
import sys
import textwrap

import pytest
import torch

import gradwell.lab.catalog as catalog
from gradwell.lab.html_report import run_section
from gradwell.lab.runner import run_spec
from gradwell.lab.schema import KINDS
from gradwell.lab.spec import parse_spec
from gradwell.lab.store import Store

#: a configuration of each kind that runs in a fraction of a second
TINY = {
    "train": {},
    "train_act": {},
    "at_init": {},
    "founding": {},
    "fixup_train": {},
    "amp_train": {},
    "matrix_products": {},
    "rnn_gradient_lag": {"seq_len": 3, "hidden": 4},
    "gated_train": {"data": "adding", "model": "gru", "seq_len": 3, "hidden": 4,
                    "n_train": 32, "n_test": 16},
    "latch_train": {"data": "latch", "model": "lstm", "seq_len": 3, "hidden": 4,
                    "n_train": 32, "n_test": 16, "forget_bias": 1.0},
    "transformer_train": {"data": "copy", "seq_len": 3, "d_model": 8, "heads": 2, "layers": 1,
                          "vocab": 4, "n_train": 32, "n_test": 16},
}


def test_every_kind_has_a_tiny_configuration_here():
    assert set(TINY) == set(KINDS)


def test_every_kind_names_an_importable_function():
    for name, kind in KINDS.items():
        module, _, function = kind.function.partition(":")
        assert callable(getattr(importlib.import_module(module), function)), name


def test_every_experiment_module_is_listed_in_the_catalog_table():
    listed = {e.name for e in catalog.EXPERIMENTS.values()}
    for info in pkgutil.iter_modules(catalog.__path__):
        module = importlib.import_module(f"{catalog.__name__}.{info.name}")
        if hasattr(module, "EXPERIMENT"):
            assert module.EXPERIMENT.name in listed, info.name
            assert catalog.EXPERIMENTS[module.EXPERIMENT.name] is module.EXPERIMENT


def test_a_catalog_kind_loads_in_a_fresh_process_and_lower_layers_never_import_the_catalog(
        tmp_path):
    """The import graph, measured: load_spec on a spec whose kind lives in the catalog works in a
    process that imported nothing else, and the spec, report, summary, verdict, store, train and
    plot modules leave every ``gradwell.lab.catalog`` module unimported."""
    path = tmp_path / "k.toml"
    path.write_text('name = "k"\n[base]\nkind = "at_init"\ndepth = 3\n[budget]\nsteps = 1\n')
    code = textwrap.dedent(f"""
        import sys
        from gradwell.lab.spec import load_spec
        print(load_spec({str(path)!r}).trials()[0].function)
        from gradwell.lab import html_report, summary, verdict, store, train, plots, runner
        print(sorted(m for m in sys.modules if m.startswith("gradwell.lab.catalog")))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split("\n")
    assert out[:2] == ["gradwell.lab.catalog._at_init:run_trial", "[]"]


@pytest.mark.parametrize("kind", sorted(TINY))
def test_a_trial_that_raises_is_stored_as_failed_and_the_run_goes_on(kind, tmp_path, monkeypatch):
    """Each kind raises inside its own function (seeding with seed 1 raises): the runner stores
    a failed trial with the traceback, runs the next trial, and the report shows the failure."""
    real = torch.manual_seed

    def planted(seed):
        if seed == 1:
            raise RuntimeError("planted failure")
        return real(seed)

    monkeypatch.setattr(torch, "manual_seed", planted)
    base = {"kind": kind, "depth": 2, "width": 8, "batch_size": 16, **TINY[kind]}
    spec = parse_spec({"name": f"fail-{kind}", "base": base,
                       "variants": [{"name": "planted", "seed": 1}, {"name": "after", "seed": 0}],
                       "budget": {"steps": 2}, "record": {"eval_every": 1, "grad_every": 1}})
    summary = run_spec(spec, tmp_path, workers=1, progress=False)
    assert summary.ran == 2 and len(summary.failed) == 1
    assert summary.failed[0] == "planted: RuntimeError: planted failure"
    with Store(tmp_path) as store:
        status = {t["label"]: (t["status"], t["error"]) for t in store.trials(spec.name)}
        section = run_section(store, spec.name)
    assert status["after"] == ("done", "")
    module = KINDS[kind].function.partition(":")[0].rsplit(".", 1)[-1]
    assert status["planted"][0] == "failed" and f"{module}.py" in status["planted"][1]
    assert "failed: planted" in section and "RuntimeError: planted failure" in section
