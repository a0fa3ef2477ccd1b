"""The terminal: the summary fits 80 columns without cutting the diagnosis, and the time left
is estimated from this run's own pace (never from trials found in the store)."""

import time

from rich.console import Console
from rich.progress import Progress

from gradwell.lab.progress import TimeLeft
from gradwell.lab.summary import Row, rich_table

DIAG = "vanishing (3/3), saturation (2/3), dead_units (1/3); diverged (1/3)"


def test_the_summary_fits_80_columns_and_keeps_every_word():
    rows = [Row(f"ReLU + BN + residual · Adam {i}", [{}] * 3,
                {"final_test_acc": 0.947, "final_test_loss": 0.182, "steps_to_target": 69,
                 "seconds_to_target": 17.58, "grad_ratio": 1.1e-17}, diagnosis=DIAG)
            for i in range(2)]
    console = Console(width=80, record=True)
    console.print(rich_table(rows, "vanishing"))
    text = console.export_text()
    assert max(map(len, text.splitlines())) <= 80
    assert "…" not in text
    flat = " ".join(text.split())
    for word in ("ReLU + BN +", "residual · Adam 0", "0.947", "17.58 s", "1.1e-17", "vanishing",
                 "(3/3),", "saturation", "dead_units", "diverged"):
        assert word in flat, word


def test_time_left_follows_this_runs_pace():
    column = TimeLeft()
    progress = Progress(column)
    # 10 trials, 4 already in the store, none finished here yet: no honest estimate
    task_id = progress.add_task("x", total=10, completed=4, ran=0, started=time.perf_counter())
    task = progress.tasks[0]
    assert column.render(task).plain == "left: estimating…"
    # 2 trials finished here in 30 s: 4 left at 15 s each is 60 s, whatever the 4 stored ones
    progress.update(task_id, completed=6, ran=2, started=time.perf_counter() - 30.0)
    assert column.render(task).plain == "left ~1:00"


def test_mon_summary_is_readable_at_80_columns():
    import torch
    from torch import nn

    import gradwell

    torch.manual_seed(0)
    model = gradwell.nn.MLP(64, 10, depth=12, activation="sigmoid")
    mon = gradwell.watch(model)
    x, y = torch.randn(32, 64), torch.randint(0, 10, (32,))
    for _ in range(3):
        loss = nn.functional.cross_entropy(model(x), y)
        model.zero_grad()
        loss.backward()
        mon.step(loss)
    mon.close()
    console = Console(width=80, record=True)
    console.print(mon.summary())
    text = console.export_text()
    assert max(map(len, text.splitlines())) <= 80 and "…" not in text
    for name in ("blocks.0.linear", "blocks.11.linear", "head", "upd/w", "rated", "vanishing"):
        assert name in text, name


def test_time_left_waits_while_the_number_of_trials_is_unknown():
    """The doctor learns how many candidates it tries only after the baseline: no estimate
    from the baseline's trials alone."""
    column = TimeLeft()
    progress = Progress(column)
    progress.add_task("x", total=3, completed=2, ran=2, known=False,
                      started=time.perf_counter() - 10.0)
    assert column.render(progress.tasks[0]).plain == "left: estimating…"


def test_the_doctors_table_fits_80_columns_and_keeps_every_word():
    from types import SimpleNamespace

    from gradwell.doctor.report import CandidateResult, Report

    names = ["optimizer: SGD + momentum 0.9, lr 0.0148 (lr_find)", "structure: ReLU + He init",
             "variant: [red]wide[/] $x^$"]
    cands = [CandidateResult(n, "vanishing, saturation, dead_units", v, imp, 0.0712, 2.3021,
                             [2.30, 2.31, 2.29], {})
             for n, v, imp in zip(names, ("helps", "no measurable change", "hurts"),
                                  (1.9513, 0.00042, -0.25))]
    report = Report([], SimpleNamespace(findings=[]), cands, [2.3026, 2.3027, 2.3030], None,
                    200, 3, 1e-3, "eval loss", False)
    console = Console(width=80, record=True)
    report.print(console)
    text = console.export_text()
    assert max(map(len, text.splitlines())) <= 80 and "…" not in text
    flat = " ".join(text.split())
    for word in ("SGD +", "momentum 0.9,", "(lr_find)", "[red]wide[/]", "$x^$", "+1.95", "+0.00042",
                 "-0.25", "0.0712", "no measurable", "change", "dead_units", "Best measured"):
        assert word in flat, word


def test_mon_summary_show_fits_an_80_column_terminal(capsys, monkeypatch):
    """``mon.summary(show=True)`` prints at the terminal's width: the long layer names of a
    model we did not write (nn.TransformerEncoder) are shortened, the numbers never cut."""
    import torch
    from torch import nn

    import gradwell

    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(32, 4, dim_feedforward=64, batch_first=True)
    model = nn.Sequential(nn.TransformerEncoder(layer, 2, enable_nested_tensor=False),
                          nn.Flatten(), nn.Linear(32 * 5, 3))
    mon = gradwell.watch(model)
    x, y = torch.randn(8, 5, 32), torch.randint(0, 3, (8,))
    for _ in range(2):
        model.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        mon.step(loss)
    mon.close()
    monkeypatch.setenv("COLUMNS", "80")
    mon.summary(show=True)
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert lines and max(map(len, lines)) <= 80
    # only layer names are shortened (in the middle, "…"); no number or type is cut
    assert all("…" not in cell for ln in lines for cell in ln.split()[1:]), text
    assert "0.layers.1.linear2" in text and "0.….1.….out_proj" in text and "upd/w" in text
    rows = [ln.split() for ln in lines if ln.startswith("0.layers.0.linear1")]
    assert len(rows) == 2 and rows[0][1] == "Linear" and len(rows[0]) == 7   # all 5 numbers
    assert float(rows[0][2]) > 0 and float(rows[1][3]) > 0


def test_the_progress_line_fits_80_columns_with_a_long_description():
    """The doctor's descriptions name candidates ("structure: residual connections · seed 1"):
    the description is shortened, the counts, elapsed time and time left never."""
    import io

    from gradwell.lab.progress import trials_bar

    out = io.StringIO()
    console = Console(file=out, width=80, force_terminal=True, color_system=None)
    with trials_bar(console, True, "[bold]doctor[/] {task.description}") as bar:
        bar.add_task("structure: residual connections · seed 1 of a long name", total=24,
                     completed=13, ran=13, started=time.perf_counter() - 26.0)
    import re

    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())
    last = plain.replace("\r", "\n").strip().splitlines()[-1]
    assert len(last.rstrip()) <= 80 and "13/24 trials" in last and "left ~0:22" in last, last
