"""The lab from Python: build a spec as a dict, run it on worker processes, write the report.

Run ``python examples/lab_api.py`` (about 20 s): a depth sweep of ReLU MLPs with and without
batch normalisation on digits; prints the summary table and the report's path.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from rich.console import Console

from gradwell import lab
from gradwell.lab.summary import rich_table

SPEC = {
    "name": "depth-sweep",
    "description": "ReLU MLPs of growing depth on digits, with and without batch norm.",
    "base": {"data": "digits", "activation": "relu", "init": "he", "width": 32,
             "optimizer": "sgd", "lr": 0.05},
    "grid": {"depth": [2, 8, 32], "norm": ["none", "batch"]},
    "budget": {"epochs": 5},
    "target": {"metric": "test_acc", "value": 0.9},
}


def main(out: str | Path | None = None, epochs: int = 5, workers: int = 2) -> list[lab.summary.Row]:
    """Run the sweep into ``out`` (a temporary directory by default); return the summary rows."""
    out = Path(out or tempfile.mkdtemp(prefix="gradwell-lab-"))
    spec = lab.parse_spec({**SPEC, "budget": {"epochs": epochs}}, "<lab_api.py>")
    lab.run_spec(spec, out, workers=workers)
    with lab.Store(out) as store:
        rows = lab.summarize(store, spec.name)
    Console().print(rich_table(rows, title=spec.name))
    print("report:", lab.write_report(out))
    return rows


if __name__ == "__main__":          # needed: worker processes re-import this file
    main(sys.argv[1] if len(sys.argv) > 1 else None)
