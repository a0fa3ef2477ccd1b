"""The lab never mixes runs: trials belong to their run, a changed spec is refused with advice,
a second spec sharing configurations runs its own trials, and one writer per directory."""

import pytest

from gradwell.lab.runner import run_spec
from gradwell.lab.spec import SpecError, parse_spec
from gradwell.lab.store import Store, StoreError
from gradwell.lab.summary import summarize

TINY = {"name": "tiny", "base": {"depth": 2, "width": 8},
        "grid": {"seed": [0, 1], "activation": ["relu", "tanh"]}, "budget": {"steps": 6},
        "record": {"eval_every": 3, "grad_every": 3},
        "quick": {"grid": {"seed": [0]}}}


def _spec(**changes):
    return parse_spec({**TINY, **changes})


def test_a_changed_budget_is_refused_and_the_old_trials_stay_alone(tmp_path):
    first = run_spec(_spec(), tmp_path, workers=1, progress=False)
    assert first.ran == 4
    with pytest.raises(StoreError, match=r"4 trial\(s\) of run 'tiny'.*delete that directory "
                                         r"or give --out another one"):
        run_spec(_spec(budget={"steps": 9}), tmp_path, workers=1, progress=False)
    with Store(tmp_path) as store:
        rows = summarize(store, "tiny")
        assert [len(r.trials) for r in rows] == [2, 2]
        assert {t["config"]["seed"] for r in rows for t in r.trials} == {0, 1}


def test_another_spec_with_the_same_configurations_runs_its_own_trials(tmp_path):
    run_spec(_spec(), tmp_path, workers=1, progress=False)
    other = run_spec(_spec(name="other"), tmp_path, workers=1, progress=False)
    assert (other.ran, other.skipped) == (4, 0)
    with Store(tmp_path) as store:
        assert [len(r.trials) for r in summarize(store, "other")] == [2, 2]
        assert [len(r.trials) for r in summarize(store, "tiny")] == [2, 2]


def test_a_full_run_after_a_quick_one_runs_every_trial(tmp_path):
    quick = run_spec(_spec(), tmp_path, workers=1, quick=True, progress=False)
    assert (quick.run, quick.ran) == ("tiny (quick)", 2)
    full = run_spec(_spec(), tmp_path, workers=1, progress=False)
    assert (full.run, full.ran, full.skipped) == ("tiny", 4, 0)


def test_a_grown_grid_continues_where_it_left_off(tmp_path):
    run_spec(_spec(), tmp_path, workers=1, progress=False)
    grown = _spec(grid={"seed": [0, 1, 2], "activation": ["relu", "tanh"]})
    again = run_spec(grown, tmp_path, workers=1, progress=False)
    assert (again.ran, again.skipped) == (2, 4)


def test_a_second_writer_is_refused(tmp_path):
    with Store(tmp_path) as holder:
        holder.lock()
        with pytest.raises(StoreError, match="being written by another gradwell run"):
            run_spec(_spec(), tmp_path, workers=1, progress=False)
    assert run_spec(_spec(), tmp_path, workers=1, progress=False).ran == 4


@pytest.mark.parametrize("name", ["../../x", "/tmp/x", "a/b", "..", "a\\b"])
def test_a_spec_name_cannot_leave_the_output_root(name):
    with pytest.raises(SpecError, match="name: expected a plain name"):
        _spec(name=name)
