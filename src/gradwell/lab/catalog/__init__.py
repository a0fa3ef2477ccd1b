"""The built-in experiments: ``gradwell lab list`` shows them, ``gradwell lab run NAME`` runs one.

An :class:`Experiment` is a TOML spec (text, so it ships inside the package) and, optionally, a
verdict function turning the stored results into pass criteria. Add one with :func:`register`.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass

from ..spec import Spec, parse_spec
from ..verdict import Verdict

__all__ = ["Experiment", "EXPERIMENTS", "register", "get"]


@dataclass(frozen=True)
class Experiment:
    """A named spec plus an optional verdict ``verdict(results, quick) -> [Criterion]``."""

    name: str
    summary: str
    spec: str
    verdict: Verdict | None = None

    def load(self) -> Spec:
        """The validated spec."""
        return parse_spec(tomllib.loads(self.spec), f"<built-in experiment {self.name}>", self.name)


EXPERIMENTS: dict[str, Experiment] = {}


def register(experiment: Experiment) -> Experiment:
    """Add ``experiment`` to the catalog (names are unique)."""
    if experiment.name in EXPERIMENTS:
        raise ValueError(f"experiment {experiment.name!r} is already registered")
    EXPERIMENTS[experiment.name] = experiment
    return experiment


def get(name: str) -> Experiment:
    """The built-in experiment ``name``; a KeyError lists the available ones."""
    if name not in EXPERIMENTS:
        raise KeyError(f"no built-in experiment {name!r}; available: {', '.join(EXPERIMENTS)}")
    return EXPERIMENTS[name]


from . import vanishing  # noqa: E402,F401  (registers itself)
from . import pascanu2013_clipping  # noqa: E402,F401
from . import gated_rnn  # noqa: E402,F401
from . import he2016_degradation  # noqa: E402,F401
from . import he2015_init  # noqa: E402,F401
from . import glorot2010  # noqa: E402,F401
from . import saxe2014_orthogonal  # noqa: E402,F401
from . import ioffe2015_bn  # noqa: E402,F401
from . import kingma2015_optimizers  # noqa: E402,F401
from . import founding_claims  # noqa: E402,F401
from . import bengio1994_long_term  # noqa: E402,F401
from . import zhang2019_fixup  # noqa: E402,F401
from . import micikevicius2018_loss_scaling  # noqa: E402,F401
from . import _transformer  # noqa: E402,F401
from . import xiong2020_warmup  # noqa: E402,F401
