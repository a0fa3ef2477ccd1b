"""Spec parsing and validation: expansion, defaults, and errors that name file, key, allowed."""

import pytest

from gradwell.lab.schema import DEFAULT_LR
from gradwell.lab.spec import SpecError, load_spec, parse_spec

BASE = {"name": "t", "budget": {"steps": 5}}


def spec(**parts):
    return parse_spec({**BASE, **parts}, "my.toml")


def test_variants_cross_grid_and_fill_defaults():
    s = spec(base={"depth": 3, "width": 8},
             variants=[{"name": "sig", "activation": "sigmoid"}, {"activation": "relu"}],
             grid={"optimizer": ["sgd", "adam"], "seed": [0, 1, 2]})
    trials = s.trials()
    assert len(trials) == 2 * 2 * 3
    assert trials[0].label == "sig · sgd" and trials[-1].label == "activation=relu · adam"
    c = trials[0].config
    assert (c["depth"], c["width"], c["activation"], c["model"], c["data"]) == \
        (3, 8, "sigmoid", "mlp", "digits")
    assert {t.config["lr"] for t in trials if t.config["optimizer"] == "adam"} == {1e-3}
    assert DEFAULT_LR["adam"] == 1e-3 and DEFAULT_LR["adadelta"] == 1.0   # torch's defaults
    assert len({t.key for t in trials}) == 12
    assert [t.index for t in trials] == list(range(12))


def test_table_axis_merges_partial_configs_and_labels_by_name():
    s = spec(grid={"opt": [{"name": "SGD", "optimizer": "sgd", "lr": 0.03},
                           {"optimizer": "adam"}]})
    a, b = s.trials()
    assert (a.label, a.config["optimizer"], a.config["lr"]) == ("SGD", "sgd", 0.03)
    assert (b.label, b.config["lr"]) == ("optimizer=adam", 1e-3)


def test_keys_depend_on_config_and_budget_only():
    one = spec(base={"depth": 2}).trials()[0]
    assert spec(base={"depth": 2}, description="x").trials()[0].key == one.key
    assert spec(base={"depth": 3}).trials()[0].key != one.key
    assert parse_spec({**BASE, "budget": {"steps": 6}, "base": {"depth": 2}}).trials()[0].key \
        != one.key


def test_quick_overrides_budget_grid_and_base():
    s = spec(grid={"seed": [0, 1, 2]}, quick={"budget": {"epochs": 1}, "grid": {"seed": [0]},
                                              "base": {"depth": 2}})
    q = s.trials(quick=True)
    assert len(q) == 1 and q[0].budget == {"epochs": 1} and q[0].config["depth"] == 2
    assert q[0].experiment == "t (quick)" and s.trials()[0].experiment == "t"


@pytest.mark.parametrize("parts, words", [
    ({"bugdet": 1}, ["my.toml", "'bugdet'", "did you mean 'budget'", "allowed keys"]),
    ({"base": {"actvation": "relu"}}, ["base.'actvation'", "did you mean 'activation'"]),
    ({"base": {"activation": "sigmod"}}, ["base.activation", "one of sigmoid, tanh", "'sigmod'"]),
    ({"base": {"depth": "20"}}, ["base.depth", "an integer >= 1", "'20'"]),
    ({"base": {"depth": True}}, ["base.depth", "an integer >= 1"]),
    ({"base": {"depth": 0}}, ["base.depth", "an integer >= 1", "got 0"]),
    ({"base": {"lr": -0.1}}, ["base.lr", "a number in (0.0, inf)"]),
    ({"base": {"test_fraction": 1.5}}, ["base.test_fraction", "(0.0, 1.0)"]),
    ({"base": {"momentum": 1.0}}, ["base.momentum", "[0.0, 1.0)"]),
    ({"grid": {"seed": 3}}, ["grid.seed", "non-empty list"]),
    ({"grid": {"seed": []}}, ["grid.seed", "non-empty list"]),
    ({"grid": {"optimizer": ["sgd", "adamm"]}}, ["grid.optimizer[1]", "one of sgd"]),
    ({"grid": {"opt": [{"optimizer": "sgd", "lrr": 1}]}},
     ["grid.opt[0].'lrr'", "did you mean 'lr'"]),
    ({"variants": [{"name": "a", "norm": "group"}]}, ["variants[0].norm", "none, batch, layer"]),
    ({"variants": {"a": 1}}, ["variants", "array of tables"]),
    ({"budget": {"epochs": 2, "steps": 3}}, ["budget", "exactly one of 'epochs' or 'steps'"]),
    ({"budget": {}}, ["budget", "exactly one of"]),
    ({"budget": {"epochs": 1.5}}, ["budget.epochs", "an integer >= 1"]),
    ({"target": {"metric": "test_acc"}}, ["target", "missing value"]),
    ({"target": {"metric": "accuracy", "value": 1}}, ["target.metric", "test_acc"]),
    ({"record": {"grad_every": 0}}, ["record.grad_every", "an integer >= 1"]),
    ({"quick": {"budget": {"steps": 0}}}, ["quick.budget.steps", ">= 1"]),
    ({"quick": {"variants": []}}, ["quick.'variants'", "allowed keys: base, grid, budget"]),
    ({"name": 3}, ["name", "expected a string"]),
    ({"metrics": ["accuracy"]}, ["metrics", "test_acc, test_loss", "'accuracy'"]),
    ({"metrics": "test_acc"}, ["metrics", "expected a list"]),
    ({"base": {"model": "lstm"}}, ["base.model", "rnn, gru and lstm go with adding"]),
    ({"base": {"data": "copy"}}, ["base.data", "transformer_train"]),
    ({"base": {"model": "cnn", "data": "spirals"}}, ["model", "needs image data"]),
    ({"base": {"model": "cnn", "connection": "dense"}}, ["connection", "'mlp' only"]),
    ({"base": {"model": "gru", "data": "adding"}, "target": {"metric": "test_acc", "value": 1}},
     ["target.metric", "regression", "test_loss"]),
])
def test_errors_name_file_key_and_what_is_allowed(parts, words):
    with pytest.raises(SpecError) as e:
        spec(**parts)
    msg = str(e.value)
    assert msg.startswith("my.toml: ")
    for w in words:
        assert w in msg, (w, msg)


def test_missing_budget_says_what_to_add():
    with pytest.raises(SpecError, match=r"budget: missing; add e.g. \[budget\] epochs"):
        parse_spec({"name": "x"}, "f.toml")


def test_load_spec_reads_toml_and_reports_bad_files(tmp_path):
    good = tmp_path / "exp.toml"
    good.write_text('[base]\ndepth = 2\n[grid]\nseed = [0, 1]\n[budget]\nsteps = 3\n')
    s = load_spec(good)
    assert s.name == "exp" and len(s.trials()) == 2
    bad = tmp_path / "bad.toml"
    bad.write_text("[base\n")
    with pytest.raises(SpecError, match="bad.toml: not valid TOML"):
        load_spec(bad)
    with pytest.raises(SpecError, match="nope.toml: cannot read"):
        load_spec(tmp_path / "nope.toml")
