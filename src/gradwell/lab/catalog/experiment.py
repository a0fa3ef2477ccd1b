"""A built-in experiment: a named TOML spec and, optionally, its verdict."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass

from ..spec import Spec, parse_spec
from ..verdict import Verdict

__all__ = ["Experiment"]


@dataclass(frozen=True)
class Experiment:
    """A named spec (TOML text, so it ships inside the package) plus an optional verdict
    ``verdict(results, quick) -> [Criterion]``."""

    name: str
    summary: str
    spec: str
    verdict: Verdict | None = None

    def load(self) -> Spec:
        """The validated spec."""
        return parse_spec(tomllib.loads(self.spec), f"<built-in experiment {self.name}>", self.name)
