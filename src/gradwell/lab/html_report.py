"""``gradwell lab report DIR``: one self-contained HTML file (plots embedded as PNG data URIs,
no scripts, no server) with, for every run in the store: the verdict when one is given, a
summary table, a ranking by steps to target, gradient-flow plots and learning curves.

This module knows no experiment: verdicts come in as a function ``verdict(run, results)``
(:func:`gradwell.lab.write_report` passes the catalog's)."""

from __future__ import annotations

import html
import json
import math
import time
from pathlib import Path
from typing import Any, Callable

from . import plots
from .schema import METRICS
from .store import Store
from .summary import Row, columns, fmt, summarize
from .verdict import Criterion, Results

__all__ = ["write_report", "REPORT_NAME", "RunVerdict", "run_section", "page", "figures"]

REPORT_NAME = "report.html"

#: ``verdict(run name, results) -> criteria``, or None when the run has no verdict
RunVerdict = Callable[[str, Results], "list[Criterion] | None"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f6f7f9;
color:#1d2330}
main{max-width:1180px;margin:0 auto;padding:24px 28px 48px;overflow-wrap:anywhere}
h1{font-size:26px;margin:0 0 4px}h2{font-size:21px;margin:36px 0 6px;border-bottom:2px solid #dde
;padding-bottom:4px}h3{font-size:16px;margin:22px 0 8px}
p.meta{color:#5a6272;margin:0 0 12px;font-size:14px}
table{border-collapse:collapse;width:100%;background:#fff;font-size:13px;margin:6px 0 12px;
box-shadow:0 1px 2px rgba(0,0,0,.06)}
th,td{padding:6px 9px;border-bottom:1px solid #e6e8ec;text-align:right;vertical-align:top}
th{background:#eef0f4;font-weight:600}td:first-child,th:first-child{text-align:left}
td.text,th.text{text-align:left}tr:nth-child(even) td{background:#fafbfc}
.pass{color:#17803d;font-weight:600}.fail{color:#b42318;font-weight:600}
.bad{color:#b42318}.good{color:#17803d}
p.bottom{font-size:16px;background:#fff;border-left:4px solid #17803d;padding:8px 12px;margin:8px 0}
p.bottom.bad{border-left-color:#b42318}
img{box-sizing:border-box;max-width:100%;height:auto;background:#fff;border:1px solid #e6e8ec;
border-radius:4px}
th,td{overflow-wrap:break-word}
div.figs{display:flex;flex-wrap:wrap;gap:10px 12px;align-items:flex-start;margin:6px 0 14px}
ul.legend{list-style:none;display:flex;flex-wrap:wrap;gap:2px 18px;padding:0;margin:6px 0;
font-size:13px}ul.legend i{display:inline-block;width:20px;height:4px;margin-right:6px;
vertical-align:middle;border-radius:2px}
details{margin:4px 0 12px;font-size:13px}code,pre{font-size:12px}
pre{background:#fff;border:1px solid #e6e8ec;padding:8px;overflow-x:auto}
"""


def _e(x: Any) -> str:
    return html.escape(str(x))


def _verdict_html(criteria: list[Criterion] | None) -> str:
    if not criteria:
        return ""
    ok = all(c.passed for c in criteria)
    rows = "".join(
        f"<tr><td class=text>{_e(c.claim)}</td><td class=text>{_e(c.expected)}</td>"
        f"<td class=text>{_e(c.measured)}</td><td class={'pass' if c.passed else 'fail'}>"
        f"{'✔ holds' if c.passed else '✘ fails'}</td></tr>" for c in criteria)
    head = ("<span class=pass>reproduced</span>" if ok
            else "<span class=fail>not reproduced</span>")
    return (f"<h3>Verdict: {head}</h3><table><tr><th class=text>criterion</th>"
            f"<th class=text>expected</th><th class=text>measured</th><th>result</th></tr>"
            f"{rows}</table>")


def _summary_html(rows: list[Row], metrics: list[str] | None) -> str:
    cols = columns(metrics)
    head = "".join(f"<th>{_e(m.title)}</th>" for m in cols)
    body = []
    for r in rows:
        cells = "".join(f"<td>{fmt(r.values.get(m.key), m.spec, m.unit)}</td>" for m in cols)
        diag = _e(r.diagnosis)
        cls = "good" if r.diagnosis == "no finding" else "bad"
        status = f"<br><small>{_e(r.status)}</small>" if r.status else ""
        body.append(f"<tr><td>{_e(r.label)}</td><td>{len(r.trials)}</td>{cells}"
                    f"<td class='text {cls}'>{diag}{status}</td></tr>")
    return (f"<table><tr><th>configuration</th><th>trials</th>{head}<th class=text>diagnosis"
            f"</th></tr>{''.join(body)}</table>")


def _metric(row: Row, name: str) -> str:
    m = METRICS[name]
    return fmt(row.values[m.key], m.spec, m.unit)


def _ranking_html(rows: list[Row], target: dict | None) -> tuple[str, str]:
    if not target:
        return "<p class=meta>No target in this spec: no ranking by steps to target.</p>", ""
    order = ranked(rows)
    body = "".join(
        f"<tr><td>{i}</td><td class=text>{_e(r.label)}</td>"
        f"<td>{_metric(r, 'seconds_to_target')}</td>"
        f"<td>{_metric(r, 'steps_to_target')}</td><td>{r.reached}/{len(r.trials)}</td>"
        "</tr>" for i, r in enumerate(order, 1))
    sign = "≥" if target["metric"].endswith("acc") else "≤"
    goal = f"{target['metric']} {sign} {target['value']}"
    table = (f"<table><tr><th>rank</th><th class=text>configuration</th><th>time→target</th>"
             f"<th>steps→target</th><th>reached</th></tr>{body}</table>"
             f"<p class=meta>{_e(RANK_RULE)}</p>")
    img = plots.ranking({r.label: r.values["steps_to_target"] for r in order}, goal)
    return table, figures([img] if img else [])


RANK_RULE = ("Ranked by steps to target (median over seeds; evaluated on the spec's step grid), "
             "ties broken by higher final test accuracy, then by spec order; wall-clock time is "
             "shown but never used to order configurations (it is timer noise at this scale).")


def ranked(rows: list[Row]) -> list[Row]:
    """``rows`` by steps to target (those that never reached it last), ties by higher final
    test accuracy, then spec order (a stable sort): never by wall-clock time."""
    return sorted(rows, key=lambda r: (r.values["steps_to_target"] is None,
                                       r.values["steps_to_target"] or 0.0,
                                       -(r.values["final_test_acc"] or 0.0)))


def bottom_line(rows: list[Row], target: dict | None) -> str:
    """One sentence: which configurations reach the target, which is fastest, by how much."""
    if not target:
        return ""
    goal = f"{target['metric']} {'≥' if target['metric'].endswith('acc') else '≤'} " \
           f"{target['value']}"
    order = [r for r in ranked(rows) if r.values["steps_to_target"] is not None]
    never = [r.label for r in rows if r.values["steps_to_target"] is None]
    if not order:
        return f"No configuration reached {goal}."
    best, slow = order[0], order[-1]
    text = (f"{len(order)} of {len(rows)} configurations reach {goal}; the fastest is "
            f"{best.label} ({best.values['steps_to_target']:.0f} steps")
    if slow is not best and best.values["steps_to_target"] > 0:
        ratio = slow.values["steps_to_target"] / best.values["steps_to_target"]
        text += f", {ratio:.1f}x fewer than the slowest that got there, {slow.label}"
    text += ")."
    if never:
        text += f" Never reached: {', '.join(never)}."
    return text


def _findings_html(store: Store, rows: list[Row]) -> str:
    items, remedies = [], {}
    for r in rows:
        found = store.findings(r.trials[0]["key"])
        if not found:
            continue
        kinds = "; ".join(f"{f['kind']} ({f['severity']}) in {f['layer'] or 'model'} from step "
                          f"{f['step']}" for f in found)
        items.append(f"<tr><td class=text>{_e(r.label)}</td><td class='text bad'>{_e(kinds)}"
                     "</td></tr>")
        for f in found:
            for fix in f["remedies"][:3]:
                remedies.setdefault(fix, set()).add(f["kind"])
    if not items:
        return "<p class=meta>gradwell.watch found nothing wrong in any configuration.</p>"
    fixes = "".join(f"<li><b>{_e(', '.join(sorted(k)))}</b>: {_e(fix)}</li>"
                    for fix, k in remedies.items())
    return ("<table><tr><th class=text>configuration</th><th class=text>findings</th></tr>"
            f"{''.join(items)}</table><p class=meta>Remedies (each once):</p><ul>{fixes}</ul>")


def figures(images: list[plots.Image], legend: dict[str, str] | None = None) -> str:
    """``images`` at their page size in rows that wrap (never wider than the page), after a
    legend of ``{label: colour}`` as text."""
    if not images:
        return ""
    keys = "".join(f'<li><i style="background:{_e(colour)}"></i>{_e(label)}</li>'
                   for label, colour in (legend or {}).items())
    imgs = "".join(f'<img alt="{_e(i.alt)}" width={i.width} height={i.height} '
                   f'src="data:image/png;base64,{i.data}">' for i in images)
    return (f"<ul class=legend>{keys}</ul>" if keys else "") + f"<div class=figs>{imgs}</div>"


#: (panel title, metric name) of the learning curves; every other series a trial records
#: (the total gradient norm of training trials, a custom trial kind's own) is shown after them.
_LEARNING = (("training loss", "train_loss"), ("test loss", "test_loss"),
             ("test accuracy", "test_acc"), ("training accuracy", "train_acc"))
_MAX_OTHER = 4
_OTHER_TITLES = {"grad_norm_total": "total gradient norm (before clipping)"}


def _series(store: Store, rows: list[Row]) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """``{metric: {configuration: [(step, value), ...]}}`` of each configuration's first seed."""
    out: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for r in rows:
        for name, points in store.metrics(r.trials[0]["key"]).items():
            out.setdefault(name, {})[r.label] = [(s, v) for s, _, v in points]
    return out


def _curves(series: dict[str, dict[str, list]], colors: dict[str, str]) -> str:
    panels = {title: series.get(name, {}) for title, name in _LEARNING}
    if panels["test accuracy"]:
        panels.pop("test loss")
    shown = {label for s in panels.values() for label in s}
    return figures(plots.curves(panels, colors, log={"training loss", "test loss"}),
                   {k: v for k, v in colors.items() if k in shown})


def _other_curves(series: dict[str, dict[str, list]], colors: dict[str, str]) -> str:
    """Up to four further series with more than one point, log-scaled where they are positive
    and span two decades or more: one panel of overlaid lines for a few configurations, small
    multiples (each configuration highlighted over the others in grey) for more."""
    known = {name for _, name in _LEARNING}
    names = [n for n, s in series.items()
             if n not in known and any(len(p) > 1 for p in s.values())][:_MAX_OTHER]
    out, xlabel = [], "step (as the trial records it)"
    for name in names:
        title, lines = _OTHER_TITLES.get(name, name), series[name]
        values = [v for points in lines.values() for _, v in points
                  if v is not None and math.isfinite(v)]
        log = bool(values) and min(values) > 0 and max(values) >= 100 * min(values)
        if len(lines) <= plots.MAX_OVERLAID:
            out.append(figures(plots.curves({title: lines}, colors, {title} if log else None,
                                            xlabel), {k: colors[k] for k in lines}))
        else:
            out.append(f"<p class=meta>{_e(title)}: each configuration in colour, the others "
                       "in grey, on the same axes.</p>"
                       + figures(plots.highlighted(title, lines, colors, log, xlabel)))
    return "".join(out)


def _flow_html(store: Store, rows: list[Row]) -> str:
    flows = {r.label: store.layer_stats(r.trials[0]["key"]) for r in rows}
    steps = {tuple(plots.flow_steps(f)) for f in flows.values() if f}
    names = [n for n, _ in plots.FLOW_STEPS]
    if len(steps) == 1 and len(next(iter(steps))) == 3:
        names = [f"{n} (step {s})" for n, s in zip(names, next(iter(steps)))]
    legend = dict(zip(names, (c for _, c in plots.FLOW_STEPS)))
    return figures(plots.gradient_flow(flows), legend)


def _run_html(store: Store, run: dict[str, Any], verdict: RunVerdict | None) -> str:
    name = run["name"]
    rows = summarize(store, name)
    if not rows:
        return f"<h2>{_e(name)}</h2><p class=meta>No finished trials yet.</p>"
    criteria = verdict(name, Results(store, name)) if verdict else None
    return _page_html(store, run, rows, criteria)


def _verdict_line(criteria: list[Criterion] | None) -> str:
    if not criteria:
        return ""
    failed = [c.claim for c in criteria if not c.passed]
    if not failed:
        return f"Reproduced: all {len(criteria)} criteria hold."
    return (f"Not reproduced: {len(failed)} of {len(criteria)} criteria fail "
            f"({'; '.join(failed)}).")


def _page_html(store: Store, run: dict[str, Any], rows: list[Row],
               criteria: list[Criterion] | None) -> str:
    name, spec = run["name"], run["spec"]
    ranking_table, ranking_img = _ranking_html(rows, spec.get("target"))
    series = _series(store, rows)
    colors = plots.palette([r.label for r in rows])
    curves, others = _curves(series, colors), _other_curves(series, colors)
    budget = ", ".join(f"{k} = {v}" for k, v in (spec.get("budget") or {}).items())
    failed = [t for r in rows for t in r.trials if t["status"] == "failed"]
    seeds = max(len(r.trials) for r in rows)
    medians = f" · medians over {seeds} seeds" if seeds > 1 else " · one seed per configuration"
    errors = "".join(f"<details><summary>failed: {_e(t['label'])}</summary><pre>{_e(t['error'])}"
                     "</pre></details>" for t in failed)
    line = " ".join(x for x in (_verdict_line(criteria), bottom_line(rows, spec.get("target")))
                    if x)
    bad = " bad" if criteria and not all(c.passed for c in criteria) else ""
    line = f"<p class='bottom{bad}'><b>Bottom line:</b> {_e(line)}</p>" if line else ""
    return f"""<h2>{_e(name)}</h2>{line}<p class=meta>{_e(run['description'])}</p>
<p class=meta>{sum(len(r.trials) for r in rows)} trials · {len(rows)} configurations ·
budget: {_e(budget)}{medians}</p>
{_verdict_html(criteria)}
<h3>Summary</h3>{_summary_html(rows, spec.get("metrics"))}{errors}
<h3>Findings (gradwell.watch, first seed)</h3>{_findings_html(store, rows)}
<h3>Ranking by steps to target</h3>{ranking_table}{ranking_img}
<h3>Gradient flow per configuration</h3>
<p class=meta>Gradient norm of each layer's weights, input layer on the left (first seed), every
panel on the same y-axis. A line falling steeply to the left is a vanishing gradient.</p>
{_flow_html(store, rows)}
<h3>Learning curves</h3>{curves}
{'<h3>Other recorded series</h3>' + others if others else ''}
<details><summary>Spec</summary><pre>{_e(json.dumps(spec, indent=2))}</pre></details>"""


def run_section(store: Store, name: str, verdict: RunVerdict | None = None) -> str:
    """The HTML section the report shows for the stored run ``name`` ("" if there is none)."""
    return "\n".join(_run_html(store, run, verdict) for run in store.runs()
                     if run["name"] == name)


def page(title: str, meta: str, body: str) -> str:
    """A self-contained HTML page in the report's style; ``title`` and ``meta`` are text."""
    return f"""<!DOCTYPE html><html lang=en><head><meta charset=utf-8>
<meta name=viewport content="width=device-width,initial-scale=1">
<title>{_e(title)}</title><style>{_CSS}</style></head><body><main>
<h1>{_e(title)}</h1><p class=meta>{_e(meta)}</p>
{body}
</main></body></html>"""


def write_report(directory: str | Path, out: str | Path | None = None,
                 verdict: RunVerdict | None = None) -> Path:
    """Write the report of every run stored in ``directory`` to ``out`` (default
    ``DIR/report.html``), each run with ``verdict(run, results)`` when given; return its path."""
    directory = Path(directory)
    out = Path(out) if out else directory / REPORT_NAME
    with Store(directory, readonly=True) as store:
        sections = "\n".join(_run_html(store, run, verdict) for run in store.runs())
    stamp = time.strftime("%Y-%m-%d %H:%M")
    out.write_text(page("gradwell lab report", f"{directory.resolve()} · {stamp}",
                        sections or "<p>No runs in this directory.</p>"), encoding="utf-8")
    return out
