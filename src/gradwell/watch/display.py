"""Seeing a record: the ``rich`` summary table and the matplotlib gradient-flow figure."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from .history import History

__all__ = ["Summary", "plot", "short_name", "short_names"]

ELLIPSIS = "\u2026"


def short_name(name: str, width: int, keep: frozenset[int] = frozenset()) -> str:
    """``name`` in at most ``width`` characters, still telling layers apart. In turn, until it
    fits: the dotted parts nearest the root go first (each run of them becomes one "\u2026"),
    but block indices, the last part and the parts at positions ``keep`` stay
    (``bert.encoder.layer.0.attention.self.query`` -> ``\u2026.0.\u2026.self.query``); then
    every part but the indices and the last is cut to its initial (kept ones last:
    ``encoder.block.0.layer.0.layer_norm`` -> ``e.b.0.l.0.layer_norm``); then the last part is
    shortened in its middle (``m.l.0.post_at\u2026ernorm``); then only the end is kept, after
    the first part's initial."""
    if len(name) <= width:
        return name
    parts = name.split(".")
    dropped: set[int] = set()
    text = name
    for i, part in enumerate(parts[:-1]):
        if part.isdigit() or i in keep:
            continue
        dropped.add(i)
        text = _join(parts, dropped)
        if len(text) <= width:
            return text
    for spare in (keep, frozenset()):
        initials = ".".join(p if p.isdigit() or i in spare or i == len(parts) - 1 else p[:1]
                            for i, p in enumerate(parts))
        if len(initials) <= width:
            return initials
    prefix, last = initials[:len(initials) - len(parts[-1])], parts[-1]
    room = width - len(prefix) - 1                     # characters of the last part shown
    if room >= 6:
        head = (room + 1) // 2
        return prefix + last[:head] + ELLIPSIS + last[len(last) - (room - head):]
    return parts[0][:1] + ELLIPSIS + initials[len(initials) - width + 2:]


def short_names(names: list[str], width: int) -> dict[str, str]:
    """:func:`short_name` of each of ``names``; where some would read the same, each keeps the
    parts that tell it from the others (T5's ``encoder.block.0...q`` and
    ``decoder.block.0...q`` -> ``encoder.\u2026.0.\u2026.0.\u2026.q`` and
    ``decoder.\u2026.0.\u2026.0.\u2026.q``), and if they still do, leaves out a last part they
    share (peft's adapter name: ``...h.0.attn.c_attn.lora_A.default`` ->
    ``\u2026.0.\u2026.c_attn.lora_A``). A change is taken only if it tells more names apart."""
    out = {n: short_name(n, width) for n in names}
    for drop_last in (False, True, False, True):
        alike: dict[str, list[str]] = {}
        for n, shown in out.items():
            alike.setdefault(shown, []).append(n)
        for group in (g for g in alike.values() if len(g) > 1):
            split = {n: n.split(".") for n in group}
            if drop_last:
                if len({q[-1] for q in split.values()}) > 1 or min(map(len, split.values())) < 3:
                    continue
                split = {n: q[:-1] for n, q in split.items()}
            new = {**out, **{n: short_name(".".join(q), width, _telling(n, split))
                             for n, q in split.items()}}
            if len(set(new.values())) > len(set(out.values())):
                out = new
    return out


def _telling(name: str, split: dict[str, list[str]]) -> frozenset[int]:
    """The positions where ``name``'s parts differ from another name's in ``split``."""
    parts = split[name]
    return frozenset(i for i, p in enumerate(parts[:-1])
                     if any(i >= len(q) - 1 or q[i] != p for m, q in split.items() if m != name))


def _join(parts: list[str], dropped: set[int]) -> str:
    out: list[str] = []
    for i, p in enumerate(parts):
        if i not in dropped:
            out.append(p)
        elif not out or out[-1] != ELLIPSIS:
            out.append(ELLIPSIS)
    return ".".join(out)


def _plain(text: str) -> str:
    """A label shown as typed: matplotlib would read ``$...$`` as mathtext."""
    return text.replace("$", "\\$")


def _div(a: float, b: float) -> float:
    """``a / b``, NaN when ``b`` is zero or not a number (a zero weight has no ratio)."""
    return a / b if b and not math.isnan(b) else math.nan


def _num(x: float, log: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if log:
        return "-inf" if x <= 0 else f"{math.log10(x):.1f}"
    return f"{x:.3g}"


def _pct(x: float | None) -> str:
    return "-" if x is None or math.isnan(x) else f"{x:.0%}"


def last_measured(history: History, stat: str) -> dict[str, float]:
    """The latest non-NaN value of every column of ``stat`` (NaN if never measured)."""
    _, names, values = history.series(stat)
    out = {}
    for j, n in enumerate(names):
        ok = np.flatnonzero(~np.isnan(values[:, j]))
        out[n] = float(values[ok[-1], j]) if ok.size else math.nan
    return out


class Summary:
    """Per-layer statistics at the latest recorded step, and the findings.

    ``str(summary)`` is plain text; in ``rich`` (``rich.print``, Jupyter) it is a table.
    """

    def __init__(self, history: History, findings: list[Any], width: int | None = None) -> None:
        self.history, self.findings = history, findings
        self.width = width          # characters; None: the console's (160 for str())

    def rows(self) -> list[dict[str, Any]]:
        """One dict per layer (module with parameters) and per activation module."""
        rec = self.history.latest()
        if rec is None:
            return []
        meta = self.history.meta
        upd = last_measured(self.history, "update_ratio")
        out = []
        for x in meta.get("layers", []):
            n = x["name"]
            g, w = rec["grad_norm"][n], rec["weight_norm"][n]
            out.append({"layer": n, "type": x["type"], "grad_norm": g, "weight_norm": w,
                        "grad/weight": _div(g, w),
                        "update/weight": upd[n],
                        "out_grad_rms": rec.get("out_grad_rms", {}).get(n, math.nan),
                        "out_mean": rec.get("out_mean", {}).get(n, math.nan),
                        "out_std": rec.get("out_std", {}).get(n, math.nan)})
        for a in meta.get("activations", []):
            n = a["name"]
            out.append({"layer": n, "type": a["type"],
                        "out_mean": rec.get("out_mean", {}).get(n, math.nan),
                        "out_std": rec.get("out_std", {}).get(n, math.nan),
                        "saturated": rec.get("saturated", {}).get(n),
                        "dead": rec.get("dead", {}).get(n)})
        return out

    def __rich_console__(self, console: Any, options: Any) -> Any:
        """Two compact tables (weights and gradients; outputs and activations) sized for the
        console they are printed on (80 columns included), then the findings."""
        yield self.renderable(self.width or options.max_width)

    def renderable(self, width: int = 160) -> Any:
        """The tables and findings for a console ``width`` characters wide (a rich Group)."""
        from rich.console import Group
        rec = self.history.latest()
        step = rec["step"] if rec else "-"
        rows = self.rows()
        name_w = max(12, width // 4)
        t = _table(f"gradwell.watch - step {step} ({self.history.recorded} recorded): "
                   "weights and gradients", name_w,
                   ("grad\nnorm", "weight\nnorm", "grad/\nweight", "log10\nupd/w",
                    "out-grad\nrms"),
                   [(r, (_num(r["grad_norm"]), _num(r["weight_norm"]), _num(r["grad/weight"]),
                         _num(r["update/weight"], log=True), _num(r["out_grad_rms"])))
                    for r in rows if "grad_norm" in r])
        outs = _table("outputs and activations", name_w,
                      ("out\nmean", "out\nstd", "satu-\nrated", "dead"),
                      [(r, (_num(r["out_mean"]), _num(r["out_std"]), _pct(r.get("saturated")),
                            _pct(r.get("dead")))) for r in rows])
        colour = {"error": "red", "warning": "yellow", "info": "cyan"}
        lines, said = [], set()
        for f in self.findings:                  # each remedy once, with its first finding
            rems = [r for r in f.remedies if r not in said]
            said.update(rems)
            text = "\n".join([f"[{f.severity}] {f.message}"] + [f"  -> {r}" for r in rems])
            lines.append(f"[{colour[f.severity]}]{_escape(text)}[/]")
        verdict = "\n".join(lines) if lines else "[green]no findings: gradients look healthy[/]"
        return Group(t, outs, verdict)

    def __str__(self) -> str:
        from rich.console import Console
        console = Console(width=self.width or 160, record=True, color_system=None,
                          force_terminal=False, file=_Null())
        console.print(self)
        return console.export_text()

    def print(self) -> None:
        from rich.console import Console
        Console(width=self.width).print(self)


def _table(title: str, name_w: int, headers: tuple[str, ...],
           rows: list[tuple[dict, tuple[str, ...]]]) -> Any:
    """A borderless rich table: layer (shortened in the middle to ``name_w``), type, and the
    numbers (never wrapped) under two-line headers. Names are shown literally."""
    from rich import box
    from rich.table import Table
    from rich.text import Text
    t = Table(title=Text(title), title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
              show_edge=False, collapse_padding=True)
    t.add_column("layer", no_wrap=True,
                 min_width=min(name_w, max((len(r["layer"]) for r, _ in rows), default=5)))
    t.add_column("type", overflow="fold")
    for h in headers:
        t.add_column(h, justify="right", no_wrap=True)
    shown = short_names([r["layer"] for r, _ in rows], name_w)
    for r, cells in rows:
        t.add_row(Text(shown[r["layer"]]), Text(r["type"]), *cells)
    return t


def _escape(text: str) -> str:
    from rich.markup import escape
    return escape(text)


class _Null:
    def write(self, s: str) -> int:
        return len(s)

    def flush(self) -> None:
        pass


def plot(history: History, path: str | Path, findings: list[Any] | None = None) -> Path:
    """Save the gradient-flow figure: layers x steps heatmap of log10 gradient norm, per-layer
    gradient/weight and update/weight bars (latest step), activation saturation and dead
    shares (Glorot & Bengio 2010 plot the same quantities per layer)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    if len(history) == 0:
        raise ValueError("nothing to plot: the history is empty (record some steps first)")
    fig = Figure(figsize=(13, 8.5), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 2)
    steps, names, grad = history.series("grad_norm")
    _heatmap(axes[0, 0], steps, names, grad)
    _bars(axes[0, 1], history, names)
    _activation_panel(axes[1, 0], history)
    _total_panel(axes[1, 1], history, findings or [])
    path = Path(path)
    fig.savefig(path, dpi=110)
    return path


def _heatmap(ax: Any, steps: np.ndarray, names: list[str], grad: np.ndarray) -> None:
    with np.errstate(divide="ignore", invalid="ignore"):
        img = np.log10(np.where(grad > 0, grad, np.nan)).T
    im = ax.imshow(img, aspect="auto", interpolation="nearest", cmap="viridis",
                   extent=(float(steps[0]) - 0.5, float(steps[-1]) + 0.5, len(names) - 0.5, -0.5))
    shown = short_names(names, 28)
    ax.set_yticks(range(len(names)), [_plain(shown[n]) for n in names], fontsize=6)
    ax.set_xlabel("step")
    ax.set_title("log10 gradient norm per layer (input at top)")
    ax.figure.colorbar(im, ax=ax)


def _bars(ax: Any, history: History, names: list[str]) -> None:
    rec = history.latest()
    with np.errstate(divide="ignore", invalid="ignore"):
        gw = np.log10([_div(rec["grad_norm"][n], rec["weight_norm"][n]) for n in names])
        upd = last_measured(history, "update_ratio")
        uw = np.log10([upd[n] for n in names])
    gw[~np.isfinite(gw)] = np.nan          # a zero update (the layer did not move) has no bar
    uw[~np.isfinite(uw)] = np.nan
    x = np.arange(len(names))
    ax.bar(x - 0.2, gw, 0.4, label="log10 grad/weight")
    ax.bar(x + 0.2, uw, 0.4, label="log10 update/weight")
    ax.axhline(-3, color="grey", ls="--", lw=0.8, label="update/weight 1e-3 (Karpathy)")
    shown = short_names(names, 20)
    ax.set_xticks(x, [_plain(shown[n]) for n in names], rotation=90, fontsize=6)
    ax.set_title(f"per layer at step {rec['step']}")
    ax.legend(fontsize=7)


def _activation_panel(ax: Any, history: History) -> None:
    drawn = False
    for stat, label in (("saturated", "saturated share"), ("dead", "dead share")):
        if history.columns.get(stat):
            steps, names, vals = history.series(stat)
            shown = short_names(names, 20)
            for j, n in enumerate(names):
                ax.plot(steps, vals[:, j], lw=0.9, label=_plain(f"{label}: {shown[n]}"))
            drawn = True
    ax.set_title("activation saturation / dead units")
    ax.set_xlabel("step")
    ax.set_ylim(-0.02, 1.02)
    if drawn and len(ax.lines) <= 12:
        ax.legend(fontsize=6)
    if not drawn:
        ax.text(0.5, 0.5, "no sigmoid/tanh/ReLU modules watched\n(or activations=False)",
                ha="center", va="center", transform=ax.transAxes)


def _total_panel(ax: Any, history: History, findings: list[Any]) -> None:
    steps, _, total = history.series("total_grad_norm")
    ax.semilogy(steps, total[:, 0], lw=1.0, label="total gradient norm")
    for f in findings:
        ax.axvline(f.step, color="red" if f.severity == "error" else "orange", lw=0.8)
        ax.text(f.step, ax.get_ylim()[1], f.kind, rotation=90, va="top", fontsize=7)
    ax.set_title("total gradient norm (findings marked)")
    ax.set_xlabel("step")
    ax.legend(fontsize=7)
