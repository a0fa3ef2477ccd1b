"""Matplotlib figures for the report, returned as base64 PNG strings.

Every figure is a ``matplotlib.figure.Figure`` drawn by its own ``FigureCanvasAgg``: no pyplot,
no ``matplotlib.use``, so the backend of a notebook or script that imports gradwell stays as it
was. Labels are data: :func:`plain` escapes ``$`` so mathtext never reads them.
"""

from __future__ import annotations

import base64
import io
import math
from pathlib import Path
from typing import Any

from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullFormatter

__all__ = ["png", "save", "subplots", "plain", "grid_and_legend", "gradient_flow", "curves",
           "ranking"]

Series = dict[str, list[tuple[int, float | None]]]


def subplots(*args: Any, figsize: tuple[float, float] = (6.4, 4.8), **kwargs: Any
             ) -> tuple[Figure, Any]:
    """``(fig, axes)`` like ``pyplot.subplots``, on a fresh Figure with an Agg canvas."""
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(*args, **kwargs)


def plain(text: Any) -> str:
    """``text`` as matplotlib must show it: literally (``$`` would start mathtext)."""
    return str(text).replace("$", r"\$")


def save(fig: Any, out: str | Path, dpi: int = 80) -> Path:
    """Lay out ``fig``, write it to ``out`` as a PNG, and return the path."""
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=dpi)
    return out


def grid_and_legend(axes: Any, fontsize: int = 7, **legend: Any) -> None:
    """A light grid on every axis, and a legend on those that have labelled lines (a panel left
    empty, e.g. by a ``--quick`` run that skipped its trials, gets none and no warning)."""
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=fontsize, **legend)


def png(fig: Any) -> str:
    """Encode ``fig`` as a base64 PNG and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _colors(n: int) -> list:
    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def gradient_flow(flows: dict[str, dict[int, list[float | None]]], cols: int = 4) -> str | None:
    """Small multiples, one per configuration: gradient norm of each layer (input -> output,
    log scale) at the first, middle and last recorded steps."""
    flows = {k: v for k, v in flows.items() if v}
    if not flows:
        return None
    cols = min(cols, len(flows))
    rows = math.ceil(len(flows) / cols)
    fig, axes = subplots(rows, cols, figsize=(3.6 * cols, 2.7 * rows), squeeze=False,
                         sharey=True)              # one y-axis: the panels compare at a glance
    for ax, (label, by_step) in zip(axes.flat, flows.items()):
        steps = sorted(by_step)
        picks = sorted({steps[0], steps[len(steps) // 2], steps[-1]})
        for step, color in zip(picks, ("#1f77b4", "#ff7f0e", "#2ca02c")):
            vals = [v if v and v > 0 else float("nan") for v in by_step[step]]
            ax.plot(range(len(vals)), vals, marker="o", ms=2.5, lw=1.2, color=color,
                    label=f"step {step}")
        ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_title(plain(label), fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="best")
    for ax in axes.flat[len(flows):]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("layer (input → output)", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("‖grad‖", fontsize=8)
    fig.tight_layout()
    return png(fig)


def curves(panels: dict[str, Series], log: set[str] | None = None,
           xlabel: str = "step") -> str | None:
    """Side-by-side panels (e.g. training loss, test accuracy) of one line per configuration
    against the training step, with a shared legend."""
    panels = {k: v for k, v in panels.items() if v}
    if not panels:
        return None
    labels = list(dict.fromkeys(lbl for series in panels.values() for lbl in series))
    colors = dict(zip(labels, _colors(len(labels))))
    fig, axes = subplots(1, len(panels), figsize=(6.4 * len(panels), 3.8), squeeze=False)
    for ax, (title, series) in zip(axes[0], panels.items()):
        for label, points in series.items():
            xs = [s for s, v in points if v is not None]
            ys = [v for _, v in points if v is not None]
            ax.plot(xs, ys, lw=1.3, color=colors[label], label=plain(label))
        if log and title in log:
            ax.set_yscale("log")
        ax.set_title(plain(title), fontsize=10)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="upper center", bbox_to_anchor=(0.5, 0.0),
               ncol=min(4, len(names)), fontsize=7, frameon=False)
    fig.tight_layout()
    return png(fig)


def ranking(times: dict[str, float | None], target: str) -> str | None:
    """Horizontal bars of steps-to-target per configuration in the given (ranked) order,
    fastest on top; configurations that never reached the target are listed as such."""
    if not any(v is not None for v in times.values()):
        return None                      # nothing reached the target: the table says so
    order = list(times)
    fig, ax = subplots(figsize=(7.5, 0.32 * len(order) + 1.0))
    reached = [times[k] or 0.0 for k in order]
    bars = ax.barh(range(len(order)), reached, color=["#2ca02c" if times[k] is not None
                                                       else "#cccccc" for k in order])
    for bar, k in zip(bars, order):
        if times[k] is None:
            ax.text(0.0, bar.get_y() + bar.get_height() / 2, "  target not reached",
                    va="center", fontsize=7, color="#a00")
    ax.set_yticks(range(len(order)), [plain(k) for k in order], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(left=0)
    ax.set_xlabel(plain(f"steps to {target}"), fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return png(fig)
