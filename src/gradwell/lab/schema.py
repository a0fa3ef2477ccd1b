"""What an experiment spec may contain: every key, its type, its allowed values and default.

A trial's configuration is a flat table of the keys in :data:`TRIAL_KEYS`. Every trial kind is
listed in :data:`KINDS` with the function that runs it and the keys of its own; a kind of your
own is added with :func:`register_kind`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from .._checks import one_of
from ..nn import ACTIVATIONS, BRANCH_SCHEMES, CONNECTIONS, INITS, NORM_POSITIONS, NORMS
from .data import DATASETS, SEQUENCE_DATASETS

__all__ = ["Key", "TrialKind", "KINDS", "TRIAL_KEYS", "allowed_keys", "Metric", "METRICS",
           "TARGET_METRICS", "MODELS", "OPTIMIZERS", "CLIPS", "DEFAULT_LR", "register_kind",
           "choice", "integer", "number"]

MODELS = ("mlp", "cnn", "resnet", "rnn", "gru", "lstm", "logistic")  # logistic: one Linear
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adadelta", "adam", "adamw")
CLIPS = ("none", "global_norm", "value")


@dataclass(frozen=True)
class Metric:
    """A metric a spec's ``metrics`` may name: the trial summary key holding it, its column
    title, its number format (``format`` spec and unit) and whether a ``[target]`` may use it
    (measured at every evaluation)."""

    key: str
    title: str
    spec: str = ".3f"
    unit: str = ""
    target: bool = False


#: Every metric, in the order error messages list them.
METRICS: dict[str, Metric] = {
    "test_acc": Metric("final_test_acc", "test acc", target=True),
    "test_loss": Metric("final_test_loss", "test loss", target=True),
    "train_acc": Metric("final_train_acc", "train acc", target=True),
    "train_loss": Metric("final_train_loss", "train loss", target=True),
    "steps_to_target": Metric("steps_to_target", "steps→target", ".0f"),
    "seconds_to_target": Metric("seconds_to_target", "time→target", ".2f", " s"),
    "grad_ratio": Metric("grad_ratio", "‖g₁‖/‖g_L‖", ".1e"),
}
TARGET_METRICS = tuple(name for name, m in METRICS.items() if m.target)

#: Learning rates used when a spec gives none (torch's defaults where torch has one).
DEFAULT_LR = {"sgd": 0.1, "momentum": 0.05, "nesterov": 0.05, "adagrad": 0.01,
              "rmsprop": 1e-3, "adadelta": 1.0, "adam": 1e-3, "adamw": 1e-3}


@dataclass(frozen=True)
class Key:
    """One allowed key: accepted Python types, a check, what is allowed (in words), a default."""

    types: tuple[type, ...]
    allowed: str
    check: Callable[[Any], bool] = lambda v: True
    default: Any = None

    def accepts(self, value: Any) -> bool:
        """True when ``value`` has an accepted type (bools are not numbers) and passes check."""
        if isinstance(value, bool) and bool not in self.types:
            return False
        return isinstance(value, self.types) and self.check(value)


def choice(*values: str, default: str | None = None) -> Key:
    """A string key restricted to ``values`` (the phrase of :func:`gradwell._checks.one_of`)."""
    return Key((str,), one_of(values), lambda v: v in values, default)


def integer(lo: int, default: int | None = None) -> Key:
    """An integer key ``>= lo``."""
    return Key((int,), f"an integer >= {lo}", lambda v: v >= lo, default)


def number(lo: float, hi: float | None = None, default: float | None = None,
           lo_open: bool = True) -> Key:
    """A number in ``(lo, hi)`` (``[lo, hi)`` when not ``lo_open``)."""
    bracket = "(" if lo_open else "["
    text = f"a number in {bracket}{lo}, {'inf' if hi is None else hi})"
    ok = (lambda v: (v > lo if lo_open else v >= lo) and (hi is None or v < hi))
    return Key((int, float), text, ok, default)


TRIAL_KEYS: dict[str, Key] = {
    "kind": Key((str,), "a trial kind (train, or one listed in gradwell.lab.schema.KINDS)",
                lambda v: v in KINDS, "train"),
    "data": choice(*DATASETS, default="digits"),
    "seq_len": integer(2, 50),
    "n_train": integer(1, 4000),
    "n_test": integer(1, 1000),
    "noise": number(0.0, default=0.1, lo_open=False),
    "test_fraction": number(0.0, 1.0, default=0.2),
    "model": choice(*MODELS, default="mlp"),
    "depth": integer(1, 20),
    "width": integer(1, 64),
    "activation": choice(*ACTIVATIONS, default="relu"),
    "norm": choice(*NORMS, default="none"),
    "connection": choice(*CONNECTIONS, default="plain"),
    "init": choice(*INITS, default="default"),
    "hidden": integer(1, 64),
    "layers": integer(1, 1),
    "recurrent_gain": number(0.0),
    "channels": integer(1, 16),
    "stages": integer(1, 2),
    "blocks": integer(1, 2),
    "optimizer": choice(*OPTIMIZERS, default="sgd"),
    "lr": number(0.0),
    "momentum": number(0.0, 1.0, default=0.9, lo_open=False),
    "weight_decay": number(0.0, default=0.0, lo_open=False),
    "clip": choice(*CLIPS, default="none"),
    "clip_value": number(0.0, default=1.0),
    "batch_size": integer(1, 64),
    "seed": integer(0, 0),
}

@dataclass(frozen=True)
class TrialKind:
    """A trial kind: the function that runs it, ``"module:function"`` (imported only by the
    process that runs the trial; it takes a :class:`~gradwell.lab.spec.Trial` and returns a
    :class:`~gradwell.lab.train.TrialResult`), and the configuration keys of its own (their
    defaults are filled in for trials of this kind only)."""

    function: str
    keys: dict[str, Key] = field(default_factory=dict)


_CATALOG = "gradwell.lab.catalog."
_FORGET_BIAS = {"forget_bias": number(-1e9)}

#: Every trial kind, by name: the lab's ``train`` trial and those of the built-in experiments
#: (each documented at its function). The runner runs them all the same way
#: (:func:`gradwell.lab.runner.execute`).
KINDS: dict[str, TrialKind] = {
    "train": TrialKind("gradwell.lab.train:run_trial"),
    "at_init": TrialKind(_CATALOG + "_at_init:run_trial"),
    "train_act": TrialKind(_CATALOG + "glorot2010:run_trial"),
    "matrix_products": TrialKind(_CATALOG + "saxe2014_orthogonal:run_products_trial"),
    "rnn_gradient_lag": TrialKind(_CATALOG + "pascanu2013_clipping:lag_trial"),
    "gated_train": TrialKind(_CATALOG + "gated_rnn:gated_trial", _FORGET_BIAS),
    "latch_train": TrialKind(_CATALOG + "bengio1994_long_term:latch_trial", _FORGET_BIAS),
    "fixup_train": TrialKind(_CATALOG + "zhang2019_fixup:fixup_trial",
                             {"scheme": choice(*BRANCH_SCHEMES, default="he")}),
    "amp_train": TrialKind(_CATALOG + "micikevicius2018_loss_scaling:amp_trial", {
        "precision": choice("float32", "float16", default="float32"),
        "loss_scale": choice("none", "dynamic", default="none"),
        "loss_weight": number(0.0, default=1.0)}),
    "founding": TrialKind(_CATALOG + "founding_claims:run_trial", {
        "probe": choice("train", "lr_search", default="train"),
        "decay_to": number(0.0, default=1.0),
        "search": choice("grid", "random", default="grid"),
        "n_search": integer(2, 9),          # candidates tried by one search
        "search_epochs": integer(1, 3),
        "good_acc": number(0.0, 1.0, default=0.9)}),
    "transformer_train": TrialKind(_CATALOG + "_transformer:transformer_trial", {
        "norm_position": choice(*NORM_POSITIONS, default="pre"),
        "qk_norm": Key((bool,), "true or false", default=False),
        "d_model": integer(1, 32),
        "heads": integer(1, 2),
        "vocab": integer(2, 16),
        "warmup": Key((int,), "an integer >= 0", lambda v: v >= 0, 0),
        "z_loss": number(0.0, default=0.0, lo_open=False)}),
}

BUDGET_KEYS = {"epochs": integer(1), "steps": integer(1), "max_seconds": number(0.0)}
TARGET_KEYS = {"metric": choice(*TARGET_METRICS), "value": number(-1e300)}
RECORD_KEYS = {"eval_every": integer(1), "grad_every": integer(1, 10)}


def register_kind(name: str, function: str, keys: dict[str, Key] | None = None) -> None:
    """Add a trial kind of your own to :data:`KINDS` (call it before loading specs that use it):
    ``function`` is ``"module:function"``, importable in worker processes, taking a
    :class:`~gradwell.lab.spec.Trial` and returning a :class:`~gradwell.lab.train.TrialResult`;
    ``keys`` are the kind's own configuration keys."""
    if ":" not in function:
        raise ValueError(f"function must be 'module:function'; got {function!r}")
    every = allowed_keys()
    for key, spec in (keys or {}).items():
        if key in every and every[key] != spec:
            raise ValueError(f"trial key {key!r} is already defined differently")
    KINDS[name] = TrialKind(function, dict(keys or {}))


def allowed_keys() -> dict[str, Key]:
    """Every key a trial configuration may hold: the common ones and every kind's own."""
    out = dict(TRIAL_KEYS)
    for kind in KINDS.values():
        out.update(kind.keys)
    return out


def check_config(config: dict[str, Any]) -> list[tuple[str, str]]:
    """Cross-key constraints of a complete trial config: ``[(key, message), ...]``."""
    problems = []
    if config.get("kind") != "train":
        return problems
    if config["data"] == "copy":
        return [("data", "the copy token task is read by kind 'transformer_train' only")]
    seq_model = config["model"] in ("rnn", "gru", "lstm")
    if seq_model != (config["data"] in SEQUENCE_DATASETS):
        problems.append(("model", f"model {config['model']!r} cannot read data "
                         f"{config['data']!r}: rnn, gru and lstm go with adding or latch, the "
                         "others with digits, spirals or mnist"))
    if config["model"] in ("cnn", "resnet") and config["data"] not in ("digits", "mnist"):
        problems.append(("model", f"model {config['model']!r} needs image data (digits, mnist)"))
    if config["model"] in ("cnn", "resnet") and config["connection"] == "dense":
        problems.append(("connection", "dense connections exist for model 'mlp' only"))
    return problems
