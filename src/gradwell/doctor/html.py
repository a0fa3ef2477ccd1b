"""The doctor's HTML page: the bottom line, the check at initialisation, the findings, the
candidates with their verdicts and a figure of every seed's score, then the lab's section for
the stored run (gradient flow per candidate, learning curves). Every label is escaped."""

from __future__ import annotations

import math
from statistics import median
from typing import Any

from ..lab.html_report import figures, page, run_section
from ..lab.store import Store
from .report import Report, e

__all__ = ["render", "scores_figure"]


def _init_html(r: Report) -> str:
    rows = "".join(
        f"<tr><td class=text>{e(x.name)}</td><td>{x.grad_norm:.3g}</td>"
        f"<td>{x.relative_grad:.3g}</td><td>{x.weight_std:.3g}</td><td>{x.he_std:.3g}</td>"
        f"<td>{x.glorot_std:.3g}</td></tr>" for x in r.init.layers)
    acts = "".join(f"<tr><td class=text>{e(n)}</td><td class=text>{e(stat)}</td>"
                   f"<td>{share:.1%}</td></tr>" for n, (stat, share) in r.init.activations.items())
    span = r.init.gradient_span
    meta = (f"Loss on the first batch {r.init.loss:.4g}; relative gradients span "
            f"{span:.3g}x from the smallest to the largest layer." if span else "")
    return (f"<p class=meta>{e(meta)}</p><table><tr><th class=text>weight</th><th>‖∂L/∂W‖</th>"
            "<th>‖∂L/∂W‖/‖W‖</th><th>std(W)</th><th>He √(2/fan_in)</th>"
            f"<th>Glorot √(2/(fan_in+fan_out))</th></tr>{rows}</table>"
            + (f"<table><tr><th class=text>activation</th><th class=text>statistic</th>"
               f"<th>share</th></tr>{acts}</table>" if acts else "")
            + _findings_html(r.init.findings, "at initialisation"))


def _findings_html(findings: list, where: str) -> str:
    if not findings:
        return f"<p class=meta>No finding {e(where)}.</p>"
    rows = "".join(
        f"<tr><td class='text bad'>{e(f.kind)} ({e(f.severity)})</td><td class=text>"
        f"{e(f.layer or 'model')}</td><td>{e(f.step)}</td><td class=text>"
        f"{e(f.evidence.get('summary', ''))}</td><td class=text>{e('; '.join(f.remedies[:3]))}"
        "</td></tr>" for f in findings)
    return ("<table><tr><th class=text>finding</th><th class=text>layer</th><th>step</th>"
            f"<th class=text>evidence</th><th class=text>remedies</th></tr>{rows}</table>")


def _candidates_html(r: Report) -> str:
    if not r.candidates:
        return "<p class=meta>No candidate was tried.</p>"
    cls = {"helps": "pass", "hurts": "fail"}
    rows = "".join(
        f"<tr><td>{i}</td><td class=text>{e(c.name)}</td><td>{c.median:.4g}</td>"
        f"<td>{c.improvement:+.3g}</td><td>{c.spread:.3g}</td>"
        f"<td class={cls.get(c.verdict, 'text')}>{e(c.verdict)}</td>"
        f"<td class=text>{e(', '.join(f'{s:.4g}' for s in c.scores))}</td>"
        f"<td class=text>{e(c.reason)}</td></tr>" for i, c in enumerate(r.candidates, 1))
    base = ", ".join(f"{s:.4g}" for s in r.baseline)
    return ("<table><tr><th>rank</th><th class=text>candidate</th><th>median</th>"
            "<th>improvement</th><th>spread</th><th class=text>verdict</th>"
            "<th class=text>scores per seed</th><th class=text>answers</th></tr>"
            f"<tr><td></td><td class=text>baseline</td><td>{median(r.baseline):.4g}</td><td></td>"
            f"<td></td><td></td><td class=text>{e(base)}</td><td></td></tr>{rows}</table>")


def scores_figure(r: Report) -> Any:
    """Every seed's score per configuration (baseline on top), as a
    :class:`gradwell.lab.plots.Image` (None without candidates)."""
    if not r.candidates:
        return None
    from ..lab import plots

    rows = [("baseline", r.baseline, "0.4")] + [
        (c.name, c.scores, {"helps": "C2", "hurts": "C3"}.get(c.verdict, "C0"))
        for c in r.candidates]
    fig, ax = plots.subplots(figsize=(9.0, 0.4 * len(rows) + 1.3), layout="constrained")
    for i, (label, scores, colour) in enumerate(rows):
        finite = [s for s in scores if math.isfinite(s)]
        ax.scatter(finite, [i] * len(finite), color=colour, zorder=3)
        if finite:
            ax.plot([min(finite), max(finite)], [i, i], color=colour, lw=1)
    ax.set_yticks(range(len(rows)), [plots.plain(label) for label, _, _ in rows])
    ax.invert_yaxis()
    ax.set_xlabel(plots.plain(f"{r.metric} ({'higher' if r.maximize else 'lower'} is better), "
                              "one dot per seed"), fontsize=plots.TEXT_PT)
    ax.tick_params(labelsize=plots.TEXT_PT)
    ax.axvline(median(r.baseline), color="0.4", ls=":")
    ax.grid(alpha=0.3)
    return plots.image(fig, "scores per seed")


def _lr_find_html(r: Report) -> str:
    if not r.lr_find:
        return ""
    from ..lab import plots

    items = "".join(f"<li>{e(name)}: {e(res)}</li>" for name, res in r.lr_find.items())
    images = []
    for name, res in r.lr_find.items():
        fig = res.figure()
        fig.axes[0].set_title(plots.plain(f"learning-rate range test: {name}"), fontsize=12)
        images.append(plots.image(fig, f"learning-rate range test: {name}"))
    return f"<h3>Learning-rate range tests</h3><ul>{items}</ul>{figures(images)}"


def render(r: Report, stamp: str) -> str:
    """The whole page."""
    img = scores_figure(r)
    lab = ""
    if r.directory is not None:
        with Store(r.directory) as store:
            lab = run_section(store, r.run)
    body = f"""<h2>Conclusion</h2><p class=bottom>{e(r.conclusion())}</p>
<p class=meta>Score: {e(r.metric)} ({'higher' if r.maximize else 'lower'} is better).
{r.seeds} seeds x {r.budget_steps} steps per configuration, the same seeds and
data order for all; baseline lr {r.baseline_lr:.3g}. A candidate <b>helps</b> only when its
median beats the baseline's by more than the spread (max - min) over seeds.</p>
<h2>Check at initialisation</h2>{_init_html(r)}
<h2>Findings of the baseline run (gradwell.watch, seed 0)</h2>
{_findings_html(r.findings, "in the baseline run")}
<h2>Candidates, best first</h2>{_candidates_html(r)}
{figures([img] if img else [])}
{_lr_find_html(r)}
{lab}"""
    where = str(r.directory.resolve()) if r.directory is not None else "not stored"
    return page("gradwell doctor", f"{where} · {stamp} · {r.seconds:.1f} s", body)
