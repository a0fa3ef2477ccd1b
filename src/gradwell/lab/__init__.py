"""The lab: offline datasets, experiment specs, the runner, the results store and reports.

>>> from gradwell import lab
>>> spec = lab.load_spec("my.toml")                  # or lab.get("vanishing").load()
>>> lab.run_spec(spec, "runs/my", workers=2)         # resumable; trials stored as they finish
>>> lab.write_report("runs/my")                      # runs/my/report.html

Names are imported on first use, so worker processes that only train never import matplotlib.
"""

from __future__ import annotations

import importlib
from typing import Any

_NAMES = {
    "catalog": ("EXPERIMENTS", "Experiment", "get", "register"),
    "data": ("DATASETS", "Dataset", "load"),
    "runner": ("RunSummary", "default_workers", "run_spec", "write_report"),
    "schema": ("register_kind",),
    "spec": ("Spec", "SpecError", "Trial", "load_spec", "parse_spec"),
    "store": ("Store",),
    "summary": ("summarize",),
    "train": ("TrialResult", "run_trial"),
    "verdict": ("Criterion", "Results"),
}
_WHERE = {name: module for module, names in _NAMES.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
