"""The SQLite store: WAL, one transaction per trial, resume bookkeeping."""

import math
import sqlite3

import pytest

from gradwell.lab.store import DB_NAME, Store

from lab_helpers import fake_result, fake_trial


def test_database_is_in_wal_mode(store):
    assert (store.directory / DB_NAME).is_file()
    mode = sqlite3.connect(store.path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_roundtrip_of_a_trial(store):
    t = fake_trial("r", "a", seed=1, depth=3)
    finding = {"kind": "vanishing", "layer": "layer0", "step": 1, "severity": "error",
               "evidence": {"ratio": 1e-9}, "remedies": ["use BN"]}
    store.save_run("r", "desc", {"name": "r"})
    store.save_trial(t, fake_result(t, 0.5, 1e-3, None, [finding]))
    [row] = store.trials("r")
    assert (row["label"], row["config"]["depth"], row["status"]) == ("a", 3, "done")
    assert row["summary"]["final_test_acc"] == 0.5
    assert [v for _, _, v in store.metrics(t.key)["test_acc"]] == [0.0, 0.25, 0.5]
    flow = store.layer_stats(t.key)
    assert sorted(flow) == [1, 51, 91] and flow[1][0] == pytest.approx(1e-3)
    assert store.findings(t.key) == [finding]
    assert store.runs() == [{"name": "r", "description": "desc", "spec": {"name": "r"}}]


def test_a_trial_is_written_all_or_nothing(store):
    t = fake_trial("r", "a")
    bad = fake_result(t, 0.5, 1.0, None, [{"no kind": 1}])     # fails after the first inserts
    with pytest.raises(KeyError):
        store.save_trial(t, bad)
    for table in ("trials", "metrics", "layer_stats", "findings"):
        assert store.db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] == 0


def test_saving_again_replaces_and_failed_trials_are_not_finished(store):
    t, u = fake_trial("r", "a"), fake_trial("r", "b")
    store.save_trial(t, fake_result(t, 0.5, 1.0, None, status="failed"))
    store.save_trial(u, fake_result(u, 0.5, 1.0, None))
    assert store.finished_keys() == {u.key}
    store.save_trial(t, fake_result(t, 0.7, 1.0, None))
    assert store.finished_keys() == {t.key, u.key}
    assert store.db.execute("SELECT COUNT(*) FROM metrics WHERE trial = ?",
                            (t.key,)).fetchone()[0] == 5


def test_nan_becomes_null_and_inf_survives(store):
    t = fake_trial("r", "a")
    r = fake_result(t, 0.5, 1.0, None)
    r.metrics = [(1, 0.1, "train_loss", math.nan), (2, 0.2, "train_loss", math.inf)]
    store.save_trial(t, r)
    values = [v for _, _, v in store.metrics(t.key)["train_loss"]]
    assert values[0] is None and values[1] >= 1e308


def test_trials_come_back_in_spec_order(store):
    for i, label in reversed(list(enumerate("abc"))):
        t = fake_trial("r", label, index=i)
        store.save_trial(t, fake_result(t, 0.5, 1.0, None))
    assert [t["label"] for t in store.trials("r")] == ["a", "b", "c"]
    with Store(store.directory) as again:                      # reopening keeps everything
        assert len(again.trials()) == 3
