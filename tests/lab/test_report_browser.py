"""The demo's report, rendered by headless Chromium at 1400 and 800 px: nothing wider than the
page's content box, no horizontal scrolling, the smallest text of every figure at least
``MIN_PX`` CSS pixels as displayed, labels shown as text (never markup), and the bottom line on
top. Skipped only where no Chromium binary exists (``apt-get install -y chromium``)."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess

import pytest
from matplotlib.text import Text

from gradwell.lab import html_report, plots
from gradwell.lab.runner import write_report       # the report with the catalog's verdicts
from gradwell.lab.spec import Trial
from gradwell.lab.train import TrialResult

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")
#: the smallest text of a figure, in CSS pixels as the page shows it (body text is 13-16 px)
MIN_PX = 10.0
#: a label that would become an element (and a mathtext error) if it were read as markup
TRAP = "<em class=gw-trap>[red]$x^$[/]</em> & co"
LABELS = [f"{a} · {o}" for a in ("sigmoid plain", "tanh plain", "ReLU + He", "sigmoid + BN",
                                 TRAP, "ReLU + BN + residual") for o in ("SGD", "Adam")]

MEASURE = """<script>
addEventListener('load', () => {
  const main = document.querySelector('main'), cs = getComputedStyle(main);
  const box = main.getBoundingClientRect();
  const rect = e => { const r = e.getBoundingClientRect();
                      return {left: r.left, right: r.right, top: r.top, width: r.width}; };
  const out = {inner: innerWidth, scroll: document.documentElement.scrollWidth,
    left: box.left + parseFloat(cs.paddingLeft), right: box.right - parseFloat(cs.paddingRight),
    imgs: [...document.images].map(i => ({natural: i.naturalWidth, inner: i.clientWidth,
                                         alt: i.alt, ...rect(i)})),
    tables: [...document.querySelectorAll('table')].map(rect),
    bottom: rect(document.querySelector('p.bottom')),
    firstTable: rect(document.querySelector('table')),
    traps: document.querySelectorAll('.gw-trap').length,
    text: document.body.innerText};
  const pre = document.createElement('pre');
  pre.id = 'gw-measure';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def _browser() -> str | None:
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


def _demo_like_store(store) -> None:
    """The demo's shape: 12 configurations of a 21-layer net, recorded every 10 steps."""
    store.save_run("vanishing-like", "twelve configurations",
                   {"name": "vanishing-like", "budget": {"epochs": 30},
                    "target": {"metric": "test_acc", "value": 0.9}})
    steps = range(0, 661, 10)
    for i, label in enumerate(LABELS):
        t = Trial(f"t{i}", "vanishing-like", label, {"seed": 0}, {"epochs": 30},
                  {"metric": "test_acc", "value": 0.9}, {}, index=i)
        good = i >= 4
        metrics = [(s, s / 10, name, v) for s in steps for name, v in (
            ("train_loss", 2.3 * (0.99 ** s if good else 1.0)),
            ("test_acc", min(0.97, 0.1 + (0.9 * s / 300 if good else 0.0))),
            ("train_acc", min(0.99, 0.1 + (0.9 * s / 300 if good else 0.0))),
            ("grad_norm_total", (1.0 + i) * 10.0 ** (-3 + 4 * (s % 200) / 200)))]
        stats = [(s, k, f"blocks.{k}.linear", "grad_norm", 10.0 ** (-(20 - k) * (0.9 - i / 15)))
                 for s in (1, 331, 661) for k in range(21)]
        finding = {"kind": "vanishing", "layer": "blocks.0.linear", "step": 1,
                   "severity": "error", "evidence": {}, "remedies": [
                       "use ReLU with He initialisation", "add batch normalisation"]}
        summary = {"final_test_acc": 0.95 if good else 0.1, "grad_ratio": 1e-17,
                   "steps_to_target": 300 + 10 * i if good else None,
                   "seconds_to_target": 3.0 if good else None, "final_test_loss": 0.2}
        store.save_trial(t, TrialResult(t.key, "done", 1.0, summary, metrics, stats,
                                        [] if good else [finding]))


def _render(browser: str, page, width: int, tmp_path) -> dict:
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           "--no-first-run", "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}",
           f"--window-size={width},1000", "--virtual-time-budget=15000", "--dump-dom",
           page.as_uri()]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="gw-measure">(.*?)</pre>', r.stdout, re.S)
    assert found, f"{browser} rendered no measurement (exit {r.returncode}): {r.stderr[-2000:]}"
    return json.loads(html.unescape(found.group(1)))


def test_the_report_reads_at_1400_and_800_px(store, tmp_path, monkeypatch):
    browser = _browser()
    if browser is None:
        pytest.skip("no Chromium binary on PATH (chromium, chromium-browser, google-chrome): "
                    "the layout check needs one; apt-get install -y chromium")
    drawn: dict[str, tuple[float, float, list]] = {}      # base64 -> (inches, points, y-limits)
    original = plots.image

    def measured(fig, alt):
        img = original(fig, alt)
        sizes = [t.get_fontsize() for t in fig.findobj(Text)
                 if t.get_visible() and t.get_text().strip()]
        drawn[img.data] = (fig.get_size_inches()[0], min(sizes),
                           [tuple(ax.get_ylim()) for ax in fig.axes])
        return img

    monkeypatch.setattr(plots, "image", measured)
    _demo_like_store(store)
    page = write_report(store.directory)
    source = page.read_text()
    shown = [(html.unescape(alt), src) for alt, src in re.findall(
        r'<img alt="([^"]*)" width=\d+ height=\d+ src="data:image/png;base64,([^"]+)"', source)]
    assert len(shown) == source.count("<img") and all(src in drawn for _, src in shown)
    flows = [drawn[src][2] for alt, src in shown if alt.startswith("gradient flow")]
    assert len(flows) == 12 and len(set(map(tuple, flows))) == 1     # one shared y-axis
    norms = [drawn[src][2] for alt, src in shown if alt.startswith("total gradient norm")]
    assert len(norms) == 12 and len(set(map(tuple, norms))) == 1     # small multiples
    srcs = [src for _, src in shown]
    page.write_text(source.replace("</body>", MEASURE + "</body>"))
    for width in (1400, 800):
        m = _render(browser, page, width, tmp_path)
        assert m["inner"] == width and m["scroll"] <= width, (width, m["scroll"])
        content = m["right"] - m["left"]
        assert len(m["imgs"]) == len(srcs)
        for img, src in zip(m["imgs"], srcs):
            inches, points, _ = drawn[src]
            assert img["left"] >= m["left"] - 0.5 and img["right"] <= m["right"] + 0.5, img
            assert img["width"] <= min(content, img["natural"]) + 0.5, img
            shown = points * img["inner"] / (72 * inches)     # the text's CSS px, as displayed
            assert shown >= MIN_PX, (width, img["alt"], round(shown, 1))
        assert all(t["right"] <= m["right"] + 0.5 for t in m["tables"]), width
        assert m["bottom"]["top"] < m["firstTable"]["top"]   # the bottom line comes first
        assert m["traps"] == 0 and TRAP in m["text"]          # labels are text, not markup
    assert "Remedies (each once)" in m["text"]
    assert m["text"].count("use ReLU with He initialisation") == 1


def test_figures_escape_labels_and_colours() -> None:
    img = plots.Image("AAAA", 10, 5, 'a "quoted" <alt>')
    out = html_report.figures([img], {"<b>x</b>": "#123456"})
    assert "&lt;b&gt;x&lt;/b&gt;" in out and "&quot;quoted&quot; &lt;alt&gt;" in out
    assert "width=10 height=5" in out and html_report.figures([]) == ""
