"""The built-in experiments: ``gradwell lab list`` shows them, ``gradwell lab run NAME`` runs one.

An :class:`Experiment` is a TOML spec and, optionally, a verdict function turning the stored
results into pass criteria. The built-in ones are listed in :data:`EXPERIMENTS` below (one
module each; a trial kind of their own is listed in :data:`gradwell.lab.schema.KINDS`). Add one
of your own at run time with :func:`register`.
"""

from __future__ import annotations

from ..verdict import Criterion, Results
from . import (bengio1994_long_term, founding_claims, gated_rnn, glorot2010, he2015_init,
               he2016_degradation, ioffe2015_bn, kingma2015_optimizers,
               micikevicius2018_loss_scaling, pascanu2013_clipping, saxe2014_orthogonal,
               vanishing, wortsman2023_instabilities, xiong2020_warmup, zhang2019_fixup)
from .experiment import Experiment

__all__ = ["Experiment", "EXPERIMENTS", "register", "get", "verdict_for"]

#: Every experiment by name, in the order ``gradwell lab list`` shows them.
EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in (
    vanishing.EXPERIMENT,
    pascanu2013_clipping.EXPERIMENT,
    gated_rnn.EXPERIMENT,
    he2016_degradation.EXPERIMENT,
    he2015_init.EXPERIMENT,
    glorot2010.EXPERIMENT,
    saxe2014_orthogonal.EXPERIMENT,
    ioffe2015_bn.EXPERIMENT,
    kingma2015_optimizers.EXPERIMENT,
    founding_claims.EXPERIMENT,
    bengio1994_long_term.EXPERIMENT,
    zhang2019_fixup.EXPERIMENT,
    micikevicius2018_loss_scaling.EXPERIMENT,
    xiong2020_warmup.EXPERIMENT,
    wortsman2023_instabilities.EXPERIMENT,
)}


def register(experiment: Experiment) -> Experiment:
    """Add an experiment of your own to :data:`EXPERIMENTS` (names are unique)."""
    if experiment.name in EXPERIMENTS:
        raise ValueError(f"experiment {experiment.name!r} is already registered")
    EXPERIMENTS[experiment.name] = experiment
    return experiment


def get(name: str) -> Experiment:
    """The built-in experiment ``name``; a KeyError lists the available ones."""
    if name not in EXPERIMENTS:
        raise KeyError(f"no built-in experiment {name!r}; available: {', '.join(EXPERIMENTS)}")
    return EXPERIMENTS[name]


def verdict_for(run: str, results: Results) -> list[Criterion] | None:
    """The criteria of the experiment behind the stored ``run`` (``name`` or ``name (quick)``);
    None when it has no verdict or no trials."""
    quick = run.endswith(" (quick)")
    exp = EXPERIMENTS.get(run.removesuffix(" (quick)"))
    if exp is None or exp.verdict is None or not results.trials:
        return None
    return exp.verdict(results, quick)
