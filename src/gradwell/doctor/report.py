"""The doctor's report: the object ``gradwell.doctor`` returns, its rich tables and its HTML
page (the lab's style, with the lab's section for the stored run: summary, gradient flow per
candidate, learning curves)."""

from __future__ import annotations

import html
import time
from statistics import median
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console, Group
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from ..diagnose import Finding
from .initcheck import InitCheck
from .verdict import seed_range

__all__ = ["Report", "CandidateResult", "REPORT_NAME"]

REPORT_NAME = "doctor.html"


@dataclass
class CandidateResult:
    """One candidate, measured: ``verdict`` is ``"helps"``, ``"no measurable change"`` or
    ``"hurts"``; ``improvement`` the baseline's median score minus this one's (positive is
    better), ``spread`` the seeds' spread it was judged against (:mod:`.verdict`)."""

    name: str
    reason: str
    verdict: str
    improvement: float
    spread: float
    median: float
    scores: list[float]
    config: dict[str, Any]
    findings: list[Finding] = field(default_factory=list)
    grad_ratio: float | None = None


@dataclass
class Report:
    """What the doctor found and measured. ``candidates`` are best first."""

    findings: list[Finding]
    init: InitCheck
    candidates: list[CandidateResult]
    baseline: list[float]
    baseline_grad_ratio: float | None
    budget_steps: int
    seeds: int
    baseline_lr: float
    metric: str
    maximize: bool
    lr_find: dict[str, Any] = field(default_factory=dict)
    run: str = "doctor"
    seconds: float = 0.0
    directory: Path | None = None

    @property
    def nothing_to_fix(self) -> bool:
        """True when neither the check at initialisation nor the baseline found anything."""
        return not self.findings and not self.init.findings

    @property
    def helpful(self) -> list[CandidateResult]:
        """The candidates that measurably help, best first."""
        return [c for c in self.candidates if c.verdict == "helps"]

    def conclusion(self) -> str:
        """The bottom line, one sentence or two."""
        if self.nothing_to_fix and not self.candidates:
            return ("Nothing to fix: no finding at initialisation or in the baseline run "
                    f"({self.budget_steps} steps x {self.seeds} seeds).")
        kinds = ", ".join(dict.fromkeys(f.kind for f in self.init.findings + self.findings))
        found = f"Found: {kinds}. " if kinds else "No finding. "
        if not self.candidates:
            return found + "No remedy the doctor can apply mechanically; see the findings."
        if not self.helpful:
            return (found + f"Nothing helps measurably: none of {len(self.candidates)} "
                    f"candidates beat the baseline by more than the spread over {self.seeds} "
                    "seeds.")
        best = self.helpful[0]
        return (found + f"Best measured remedy: {best.name} ({self.metric} median "
                f"{best.median:.4g} vs {median(self.baseline):.4g}, improvement "
                f"{best.improvement:.3g} > spread {best.spread:.3g}); "
                f"{len(self.helpful)} of {len(self.candidates)} candidates help.")

    def table(self) -> Table:
        """The candidates against the baseline, as a rich table (labels shown literally) that
        fits 80 columns: numbers never wrapped, names, verdicts and findings wrapped, never
        cut."""
        arrow = "higher" if self.maximize else "lower"
        t = Table(title=Text(f"{self.metric} ({arrow} is better), median over {self.seeds} "
                             f"seeds, {self.budget_steps} steps each"), title_justify="left",
                  box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, collapse_padding=True)
        t.add_column("#", justify="right", no_wrap=True)
        t.add_column("candidate", overflow="fold", ratio=3, min_width=14)
        for col in ("median", "improve-\nment", "spread"):
            t.add_column(col, justify="right", no_wrap=True)
        t.add_column("verdict", overflow="fold", ratio=1, min_width=10)
        t.add_column("for", overflow="fold", ratio=1, min_width=8)
        t.add_row("", Text("baseline"), f"{median(self.baseline):.4g}", "",
                  _f(seed_range(self.baseline)), "", "")
        colour = {"helps": "green", "hurts": "red"}
        for i, c in enumerate(self.candidates, 1):
            t.add_row(str(i), Text(c.name), f"{c.median:.4g}", f"{c.improvement:+.3g}",
                      _f(c.spread), Text(c.verdict, style=colour.get(c.verdict, "")),
                      Text(c.reason))
        return t

    def print(self, console: Console | None = None) -> None:
        """Print the findings, the candidates' table and the conclusion."""
        console = console or Console()
        parts: list[Any] = []
        for f in self.init.findings:
            parts.append(f"[bold]at initialisation[/] {escape(f.message)}")
        for f in self.findings:
            parts.append(f"[bold]baseline[/] {escape(f'[{f.severity}] {f.message}')}")
        if self.candidates:
            parts.append(self.table())
        parts.append(f"[bold]{escape(self.conclusion())}[/]")
        console.print(Group(*parts))

    def write_html(self, path: str | Path | None = None) -> Path:
        """Write the HTML report (default ``DIRECTORY/doctor.html``); returns its path."""
        from .html import render

        if path is None:
            if self.directory is None:
                raise ValueError("give a path: this doctor run had no directory")
            path = self.directory / REPORT_NAME
        path = Path(path)
        path.write_text(render(self, time.strftime("%Y-%m-%d %H:%M")), encoding="utf-8")
        return path


def _f(x: float) -> str:
    return f"{x:.3g}"


def e(x: Any) -> str:
    """HTML-escaped text."""
    return html.escape(str(x))
