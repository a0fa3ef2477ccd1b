"""Rankings are not timer noise: steps to target first, ties by final accuracy, then spec order;
wall-clock time never orders configurations."""

from gradwell.lab.html_report import ranked
from gradwell.lab.summary import Row


def _row(label, steps, acc, seconds):
    return Row(label, [{"config": {}}], {"steps_to_target": steps, "final_test_acc": acc,
                                         "seconds_to_target": seconds})


def test_rank_by_steps_then_accuracy_then_spec_order_never_by_seconds():
    rows = [_row("never", None, 0.99, None), _row("slow clock", 69, 0.94, 9.5),
            _row("fast clock", 69, 0.94, 8.1), _row("more steps", 138, 0.93, 1.0),
            _row("better acc", 69, 0.95, 30.0)]
    assert [r.label for r in ranked(rows)] == ["better acc", "slow clock", "fast clock",
                                               "more steps", "never"]
    # identical runs with different timer readings give the same order
    swapped = [_row(r.label, r.values["steps_to_target"], r.values["final_test_acc"],
                    (r.values["seconds_to_target"] or 0) * 3 % 7) for r in rows]
    assert [r.label for r in ranked(swapped)] == [r.label for r in ranked(rows)]


def test_the_bottom_line_names_what_works_the_fastest_and_by_how_much():
    from gradwell.lab.html_report import bottom_line

    rows = [_row("plain", None, 0.1, None), _row("BN", 69, 0.95, 9.0),
            _row("residual", 460, 0.94, 40.0)]
    line = bottom_line(rows, {"metric": "test_acc", "value": 0.9})
    assert line == ("2 of 3 configurations reach test_acc ≥ 0.9; the fastest is BN (69 steps, "
                    "6.7x fewer than the slowest that got there, residual). Never reached: plain.")
    assert bottom_line(rows, None) == ""
    at_start = bottom_line([_row("a", 0, 0.95, 0.0), _row("b", 10, 0.9, 1.0)],
                           {"metric": "test_acc", "value": 0.05})
    assert at_start == "2 of 2 configurations reach test_acc ≥ 0.05; the fastest is a (0 steps)."
