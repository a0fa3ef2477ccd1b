"""Matplotlib figures for the report, returned as :class:`Image` (base64 PNG and its size on the
page).

Every figure is a ``matplotlib.figure.Figure`` drawn by its own ``FigureCanvasAgg``: no pyplot,
no ``matplotlib.use``, so the backend of a notebook or script that imports gradwell stays as it
was. Labels are data: :func:`plain` escapes ``$`` so mathtext never reads them.

Sizes are chosen for the page, not squeezed into it: a figure is drawn at :data:`DPI` and shown
at :data:`CSS_PER_INCH` CSS pixels per inch (half its pixel size: crisp on high-density
screens), so a point of text is one CSS pixel and :data:`TEXT_PT` is the smallest text on the
page's figures. A wide panel is :data:`WIDE_IN` inches (540 px: two side by side at 1400 px,
one at 800 px); a small multiple :data:`SMALL_IN` (238 px: four in a row at 1400 px, three at
800 px). The report lays them out in rows that wrap.
"""

from __future__ import annotations

import base64
import io
import math
import struct
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullLocator

__all__ = ["Image", "image", "save", "subplots", "plain", "grid_and_legend", "palette",
           "gradient_flow", "flow_steps", "curves", "highlighted", "ranking", "DPI", "CSS_PER_INCH",
           "TEXT_PT", "FLOW_STEPS", "MAX_OVERLAID"]

Series = dict[str, list[tuple[int, float | None]]]

DPI = 144
CSS_PER_INCH = 72
TEXT_PT = 11
TITLE_PT = 12
WIDE_IN = 7.5
SMALL_IN = 3.3
#: colours of the first, middle and last recorded steps in the gradient-flow panels
FLOW_STEPS = (("first recorded step", "#1f77b4"), ("middle", "#ff7f0e"),
              ("last", "#2ca02c"))
#: more lines than this in one panel and the report draws small multiples instead
MAX_OVERLAID = 4
_CONTEXT = "#d4d4d4"


@dataclass(frozen=True)
class Image:
    """A PNG for the report: ``data`` (base64), its ``width`` x ``height`` in CSS pixels as the
    page shows it, and ``alt`` (text; the report escapes it)."""

    data: str
    width: int
    height: int
    alt: str


def subplots(*args: Any, figsize: tuple[float, float] = (6.4, 4.8), layout: str | None = None,
             **kwargs: Any) -> tuple[Figure, Any]:
    """``(fig, axes)`` like ``pyplot.subplots``, on a fresh Figure with an Agg canvas
    (``layout="constrained"``: laid out inside exactly ``figsize``)."""
    fig = Figure(figsize=figsize, layout=layout)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(*args, **kwargs)


def _figure(width: float, height: float) -> tuple[Figure, Any]:
    return subplots(figsize=(width, height), layout="constrained")


def _small(title: str, height: float) -> tuple[Figure, Any, str]:
    """A small multiple with fixed margins (inches: room for 11-pt ticks, an axis label and the
    title, wrapped to two lines at most): a dozen of them lay out in a fraction of the time
    matplotlib's constrained layout takes. Returns the figure, its axes and the title."""
    lines = textwrap.wrap(str(title), 30)[:2] or [""]
    fig, ax = subplots(figsize=(SMALL_IN, height + 0.22 * (len(lines) - 1)))
    w, h = fig.get_size_inches()
    fig.subplots_adjust(left=0.8 / w, right=1 - 0.15 / w, bottom=0.58 / h,
                        top=1 - (0.12 + 0.22 * len(lines)) / h)
    return fig, ax, "\n".join(lines)


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


def image(fig: Figure, alt: str) -> Image:
    """``fig`` as a PNG at :data:`DPI`, sized for the page (:class:`Image`)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    raw = buf.getvalue()
    width, height = struct.unpack(">II", raw[16:24])        # the PNG header (IHDR)
    scale = DPI / CSS_PER_INCH
    return Image(base64.b64encode(raw).decode("ascii"), round(width / scale),
                 round(height / scale), str(alt))


def palette(labels: list[str]) -> dict[str, str]:
    """A colour (hex) per label, in order: tab10, or tab20 beyond ten labels."""
    cmap = colormaps["tab10" if len(labels) <= 10 else "tab20"]
    return {label: to_hex(cmap(i % cmap.N)) for i, label in enumerate(labels)}


def _style(ax: Any, title: str, xlabel: str, ylabel: str = "") -> None:
    ax.set_title(plain(title), fontsize=TITLE_PT)
    ax.set_xlabel(plain(xlabel), fontsize=TEXT_PT)
    if ylabel:
        ax.set_ylabel(plain(ylabel), fontsize=TEXT_PT)
    ax.tick_params(labelsize=TEXT_PT)
    ax.grid(alpha=0.3)


def _log_limits(values: list[float]) -> tuple[float, float] | None:
    vals = [v for v in values if v is not None and math.isfinite(v) and v > 0]
    if not vals:
        return None
    lo, hi = min(vals), max(vals)
    return lo / 2.0, hi * 2.0


def gradient_flow(flows: dict[str, dict[int, list[float | None]]]) -> list[Image]:
    """Small multiples, one per configuration, all on one y-axis (the same log-scale limits):
    the gradient norm of each layer (input -> output) at the first, middle and last recorded
    steps (colours :data:`FLOW_STEPS`)."""
    flows = {k: v for k, v in flows.items() if v}
    limits = _log_limits([v for by_step in flows.values() for vals in by_step.values()
                          for v in vals])
    layers = max((len(vals) for by_step in flows.values() for vals in by_step.values()),
                 default=1)
    out = []
    for label, by_step in flows.items():
        fig, ax, title = _small(label, 2.9)
        steps = flow_steps(by_step)
        for step in steps:
            role = 0 if step == steps[0] else 2 if step == steps[-1] else 1
            vals = [v if v and v > 0 else float("nan") for v in by_step[step]]
            ax.plot(range(len(vals)), vals, marker="o", ms=3, lw=1.4, color=FLOW_STEPS[role][1])
        ax.set_yscale("log")
        if limits:
            ax.set_ylim(*limits)
        ax.set_xlim(-0.5, layers - 0.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=5))
        _decades(ax, limits)
        _style(ax, title, "layer (input → output)", "‖grad‖")
        out.append(image(fig, f"gradient flow: {label} (steps {', '.join(map(str, steps))})"))
    return out


def flow_steps(by_step: dict[int, list[float | None]]) -> list[int]:
    """The recorded steps a gradient-flow panel shows: the first, the middle and the last."""
    steps = sorted(by_step)
    return sorted({steps[0], steps[len(steps) // 2], steps[-1]})


def _decades(ax: Any, limits: tuple[float, float] | None) -> None:
    """A log y-axis ticked on at most five powers of ten and no minor ticks, so small panels
    stay legible (and spans of 40 decades do not lay out hundreds of hidden labels)."""
    span = math.log10(limits[1]) - math.log10(limits[0]) if limits else 5.0
    ax.yaxis.set_major_locator(LogLocator(base=10.0 ** max(1, math.ceil(span / 5))))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_formatter(FuncFormatter(_power))


def _power(value: float, _: Any = None) -> str:
    """``1e-12``: a power of ten as plain text (mathtext labels cost a parse each)."""
    return f"1e{round(math.log10(value))}" if value > 0 else ""


def _points(points: list[tuple[int, float | None]]) -> tuple[list[int], list[float]]:
    kept = [(s, v) for s, v in points if v is not None]
    return [s for s, _ in kept], [v for _, v in kept]


def curves(panels: dict[str, Series], colors: dict[str, str] | None = None,
           log: set[str] | None = None, xlabel: str = "step") -> list[Image]:
    """One wide panel per entry of ``panels`` (e.g. training loss, test accuracy), one line
    per configuration in ``colors``' colour (default :func:`palette`); the report shows the
    legend as text."""
    if colors is None:
        colors = palette(list(dict.fromkeys(k for s in panels.values() for k in s)))
    out = []
    for title, series in panels.items():
        if not series:
            continue
        fig, ax = _figure(WIDE_IN, 3.6)
        for label, points in series.items():
            ax.plot(*_points(points), lw=1.5, color=colors.get(label, "0.3"))
        if log and title in log:
            ax.set_yscale("log")
        _style(ax, title, xlabel)
        out.append(image(fig, title))
    return out


def highlighted(title: str, series: Series, colors: dict[str, str], log: bool = False,
                xlabel: str = "step") -> list[Image]:
    """Small multiples of one series: a panel per configuration, its own line in colour over
    every other configuration's in light grey, all on the same axes limits."""
    ys = [v for points in series.values() for _, v in points if v is not None]
    limits = _log_limits(ys) if log else None
    out = []
    for label, points in series.items():
        fig, ax, name = _small(label, 2.7)
        for other, pts in series.items():
            if other != label:
                ax.plot(*_points(pts), lw=0.9, color=_CONTEXT)
        ax.plot(*_points(points), lw=1.7, color=colors.get(label, "0.2"))
        if log:
            ax.set_yscale("log")
            if limits:
                ax.set_ylim(*limits)
            _decades(ax, limits)
        elif ys:
            ax.set_ylim(min(ys), max(ys))
            ax.yaxis.set_major_locator(MaxNLocator(nbins=5))
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4))
        _style(ax, name, xlabel)
        out.append(image(fig, f"{title}: {label}"))
    return out


def ranking(times: dict[str, float | None], target: str) -> Image | None:
    """Horizontal bars of steps-to-target per configuration in the given (ranked) order,
    fastest on top; configurations that never reached the target are listed as such."""
    if not any(v is not None for v in times.values()):
        return None                      # nothing reached the target: the table says so
    order = list(times)
    fig, ax = _figure(WIDE_IN + 1.5, 0.3 * len(order) + 1.0)
    reached = [times[k] or 0.0 for k in order]
    bars = ax.barh(range(len(order)), reached, color=["#2ca02c" if times[k] is not None
                                                       else "#cccccc" for k in order])
    for bar, k in zip(bars, order):
        if times[k] is None:
            ax.text(0.0, bar.get_y() + bar.get_height() / 2, "  target not reached",
                    va="center", fontsize=TEXT_PT, color="#a00")
    ax.set_yticks(range(len(order)), [plain(k) for k in order])
    ax.invert_yaxis()
    ax.set_xlim(left=0)
    _style(ax, "", f"steps to {target}")
    ax.grid(axis="y", visible=False)
    return image(fig, f"ranking by steps to {target}")
