"""One row per configuration (trials grouped by label, medians over seeds): the numbers shown by
``gradwell demo``, ``gradwell lab run`` and the report's tables."""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from rich import box
from rich.table import Table
from rich.text import Text

from .schema import METRICS, Metric
from .store import Store

__all__ = ["Row", "summarize", "rich_table", "fmt", "columns", "DEFAULT_METRICS"]


@dataclass
class Row:
    """The median results of one configuration over its trials (seeds)."""

    label: str
    trials: list[dict[str, Any]]
    values: dict[str, float | None] = field(default_factory=dict)
    reached: int = 0
    diagnosis: str = ""
    status: str = ""             # "" when every trial finished normally, else e.g. "diverged (1/3)"

    @property
    def config(self) -> dict[str, Any]:
        """The configuration of the first trial (seeds aside, all trials share it)."""
        return self.trials[0]["config"]


def _median(vals: list[Any]) -> float | None:
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def _diagnosis(store: Store, trials: list[dict[str, Any]]) -> str:
    """Finding kinds at warning or error level, with how many trials had each; ``info``
    findings (e.g. dead units where the gradient still flows) are not a diagnosis."""
    kinds: Counter[str] = Counter()
    for t in trials:
        kinds.update({f["kind"] for f in store.findings(t["key"])
                      if f.get("severity") in ("warning", "error")})
    n = len(trials)
    text = ", ".join(f"{k} ({c}/{n})" if n > 1 else k for k, c in kinds.most_common())
    return text or "no finding"


def summarize(store: Store, run: str) -> list[Row]:
    """Rows for every configuration of ``run``, in run order."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for t in store.trials(run):
        groups.setdefault(t["label"], []).append(t)
    rows = []
    for label, trials in groups.items():
        keys = [m.key for m in METRICS.values()]
        values = {k: _median([t["summary"].get(k) for t in trials]) for k in keys}
        statuses = Counter(t["status"] for t in trials)
        rows.append(Row(label, trials, values,
                        sum(t["summary"].get("steps_to_target") is not None for t in trials),
                        _diagnosis(store, trials),
                        ", ".join(f"{s} ({c}/{len(trials)})" if len(trials) > 1 else s
                                  for s, c in statuses.items() if s != "done")))
    return rows


def fmt(value: float | None, spec: str = ".3f", unit: str = "") -> str:
    """The lab's one number formatter: ``format(value, spec)`` plus ``unit``, "—" for None
    (accuracies ``.3f``, ratios ``.1e``, step counts ``.0f``, as :data:`METRICS` says)."""
    return "—" if value is None else f"{format(value, spec)}{unit}"


DEFAULT_METRICS = ("test_acc", "test_loss", "steps_to_target", "seconds_to_target", "grad_ratio")


def columns(metrics: list[str] | tuple[str, ...] | None = None) -> list[Metric]:
    """The summary columns for a spec's ``metrics`` (default :data:`DEFAULT_METRICS`)."""
    return [METRICS[m] for m in (metrics or DEFAULT_METRICS)]


def rich_table(rows: list[Row], title: str = "", metrics: list[str] | None = None) -> Table:
    """The summary as a rich table for the terminal, one column per metric (labels are shown
    as written: never read as rich markup). Compact enough for 80 columns: two-line headers,
    no vertical rules, numbers never wrapped, the diagnosis wrapped (never cut) in the rest."""
    cols = columns(metrics)
    table = Table(title=Text(title), title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
                  show_edge=False, collapse_padding=True)
    table.add_column("configuration", overflow="fold", max_width=30)
    for m in cols:
        header = m.title.replace("→", "→\n").replace("/", "/\n").replace(" ", "\n", 1)
        table.add_column(header, justify="right",
                         no_wrap=True)
    table.add_column("diagnosis", overflow="fold", min_width=12)
    for r in rows:
        table.add_row(Text(r.label),
                      *(fmt(r.values.get(m.key), m.spec, m.unit) for m in cols),
                      Text(f"{r.diagnosis}; {r.status}" if r.status else r.diagnosis))
    return table
