"""No global matplotlib state: importing the lab and drawing its figures leaves the user's
backend as it was and never loads pyplot."""

import subprocess
import sys
from pathlib import Path

import gradwell

CHECK = """
import sys
import matplotlib
matplotlib.use("svg")                      # the user's choice, e.g. a notebook's
import gradwell.lab
from gradwell.lab import catalog, plots, html_report
png = plots.curves({"loss": {"a $x^$": [(0, 1.0), (1, 0.5)]}}, log={"loss"})
flow = plots.gradient_flow({"b": {1: [1.0, 0.1], 2: [0.5, 0.2]}})
assert png and flow
assert matplotlib.get_backend() == "svg", matplotlib.get_backend()
assert "matplotlib.pyplot" not in sys.modules
print("ok")
"""


def test_importing_the_lab_and_drawing_keeps_the_users_backend():
    src = Path(gradwell.__file__).parents[1]
    r = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True,
                       env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_no_module_of_the_lab_touches_pyplot_or_the_backend():
    lab = Path(gradwell.__file__).parent / "lab"
    marks = ("matplotlib.use(", "import matplotlib.pyplot", "from matplotlib import pyplot")
    offenders = [str(p.relative_to(lab)) for p in lab.rglob("*.py")
                 if any(m in p.read_text() for m in marks)]
    assert offenders == []
