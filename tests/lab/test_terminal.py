"""The terminal: the summary fits 80 columns without cutting the diagnosis, and the time left
is estimated from this run's own pace (never from trials found in the store)."""

import time

from rich.console import Console
from rich.progress import Progress

from gradwell.lab.runner import _TimeLeft
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
    column = _TimeLeft()
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
