"""The terminal from the first second: a spinner while a command starts (torch imports, data
loads), then a bar of trials with an honest estimate of the time left.

Only rich is imported here, so the CLI can show the spinner before it imports torch.
"""

from __future__ import annotations

import contextlib
import time
from typing import Iterator

from rich.console import Console
from rich.live import Live
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn,
                           SpinnerColumn, Task, TextColumn, TimeElapsedColumn)
from rich.spinner import Spinner
from rich.table import Column
from rich.text import Text

__all__ = ["TimeLeft", "trials_bar", "starting"]


class TimeLeft(ProgressColumn):
    """Time left at this run's own pace: (seconds since it started / trials it finished) x
    trials left. Trials found in the store do not count (they took no time now); until the
    first trial finishes, or while the number of trials is not known yet (``known=False``),
    there is no honest estimate, and it says so."""

    def render(self, task: Task) -> Text:
        ran, started = task.fields.get("ran", 0), task.fields.get("started")
        if task.finished:
            return Text("done")
        if not ran or started is None or not task.fields.get("known", True):
            return Text("left: estimating…")
        left = (time.perf_counter() - started) / ran * (task.total - task.completed)
        minutes, seconds = divmod(int(left + 0.5), 60)
        return Text(f"left ~{minutes}:{seconds:02d}")


def trials_bar(console: Console, enabled: bool, description: str = "[bold]{task.description}"
               ) -> Progress:
    """Spinner, description, bar, trials done / total, time elapsed, :class:`TimeLeft`, in 80
    columns (a long description is shortened, never the numbers). Tasks carry ``ran`` (trials
    finished in this process) and ``started`` (``time.perf_counter()``)."""
    text = Column(no_wrap=True, overflow="ellipsis", max_width=30)
    return Progress(SpinnerColumn(), TextColumn(description, table_column=text),
                    BarColumn(bar_width=12), MofNCompleteColumn(), TextColumn("trials"),
                    TimeElapsedColumn(), TimeLeft(), console=console, disable=not enabled,
                    transient=False)


@contextlib.contextmanager
def starting(what: str, enabled: bool = True, console: Console | None = None) -> Iterator[None]:
    """A spinner saying ``starting: WHAT`` (text, never markup) until the block ends; the
    progress bar that follows takes over. Nothing is shown when ``enabled`` is false or the
    console is not a terminal."""
    console = console or Console(stderr=True)
    if not enabled:
        yield
        return
    spinner = Spinner("dots", Text(f"starting: {what}"))
    with Live(spinner, console=console, transient=True, refresh_per_second=12.5):
        yield                                   # Live draws its first frame on entering
