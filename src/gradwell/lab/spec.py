"""Experiment specs: a TOML file (or dict) -> validated trials.

.. code-block:: toml

    name = "my-experiment"
    description = "what it shows"
    metrics = ["test_acc", "steps_to_target", "grad_ratio"]   # optional: summary columns
    [base]                      # the configuration every trial starts from (keys: schema.py)
    depth = 20
    activation = "sigmoid"
    [grid]                      # axes, crossed with each other and with the variants
    seed = [0, 1, 2]            # an axis of values of one key, or of partial configurations:
    opt = [{ optimizer = "sgd", lr = 0.03 }, { name = "Adam", optimizer = "adam" }]
    [[variants]]                # optional named partial configurations
    name = "relu + He"
    activation = "relu"
    init = "he"
    [budget]                    # exactly one of epochs / steps; optional max_seconds
    epochs = 30
    [target]                    # optional: for steps- and seconds-to-target
    metric = "test_acc"
    value = 0.9
    [record]                    # optional: eval_every (steps), grad_every (steps)
    grad_every = 10
    [quick]                     # optional overrides for --quick: base, grid, budget, record
    budget = { epochs = 3 }

Every error names the file, the key and what is allowed.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .schema import (BUDGET_KEYS, DEFAULT_LR, KINDS, METRICS, RECORD_KEYS, TARGET_KEYS,
                     TARGET_METRICS, TRIAL_KEYS, Key, allowed_keys, check_config)

__all__ = ["Spec", "Trial", "SpecError", "load_spec", "parse_spec"]

TOP_KEYS = ("name", "description", "base", "grid", "variants", "budget", "target", "metrics",
            "record", "quick")
QUICK_KEYS = ("base", "grid", "budget", "record")


class SpecError(ValueError):
    """A spec that cannot be run; the message names the file, the key and what is allowed."""


@dataclass(frozen=True)
class Trial:
    """One run of one configuration: everything a worker process needs."""

    key: str
    experiment: str
    label: str
    config: dict[str, Any]
    budget: dict[str, Any]
    target: dict[str, Any] | None
    record: dict[str, Any]
    function: str = "gradwell.lab.train:run_trial"
    index: int = 0                 # position in the spec's expansion (report order)


@dataclass
class Spec:
    """A validated experiment spec. :meth:`trials` expands it."""

    name: str
    description: str = ""
    base: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    variants: list[dict[str, Any]] = field(default_factory=list)
    budget: dict[str, Any] = field(default_factory=dict)
    target: dict[str, Any] | None = None
    record: dict[str, Any] = field(default_factory=dict)
    quick: dict[str, Any] = field(default_factory=dict)
    source: str = "<spec>"
    metrics: list[str] = field(default_factory=list)     # summary columns; [] = the default

    def resolved(self, quick: bool = False) -> Spec:
        """This spec, with the ``[quick]`` overrides applied when ``quick``."""
        if not quick or not self.quick:
            return self
        q = self.quick
        return Spec(self.name, self.description, {**self.base, **q.get("base", {})},
                    {**self.grid, **q.get("grid", {})}, self.variants,
                    q.get("budget", self.budget), self.target,
                    {**self.record, **q.get("record", {})}, {}, self.source, self.metrics)

    def trials(self, quick: bool = False) -> list[Trial]:
        """Every trial: variants x grid axes, each config complete (defaults filled in)."""
        spec = self.resolved(quick)
        run = f"{spec.name} (quick)" if quick and self.quick else spec.name
        axes = list(spec.grid)
        out = []
        for i, variant in enumerate(spec.variants or [{}]):
            for point in itertools.product(*(spec.grid[a] for a in axes)):
                config = _complete({**spec.base, **_strip(variant), **_point(axes, point)})
                where = f"variants[{i}]" if spec.variants else "base"
                for key, msg in check_config(config):
                    raise SpecError(f"{self.source}: {where}.{key}: {msg}")
                _check_target(spec.target, config, self.source)
                label = _label(variant, axes, point)
                out.append(_trial(run, label, config, spec, len(out)))
        return out


def _strip(variant: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in variant.items() if k != "name"}


def _point(axes: list[str], point: tuple) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for axis, value in zip(axes, point):
        out.update(_strip(value) if isinstance(value, dict) else {axis: value})
    return out


def _axis_label(axis: str, value: Any) -> str:
    if isinstance(value, (int, float)):
        return f"{axis}={value}"           # numbers alone say nothing: "depth=20"
    if not isinstance(value, dict):
        return str(value)
    if "name" in value:
        return str(value["name"])
    if axis in value:
        return str(value[axis])
    return " ".join(f"{k}={v}" for k, v in value.items())


def _complete(config: dict[str, Any]) -> dict[str, Any]:
    kind = config.get("kind", TRIAL_KEYS["kind"].default)
    keys = {**TRIAL_KEYS, **(KINDS[kind].keys if kind in KINDS else {})}
    full = {**config, **{k: (config[k] if k in config else key.default)
                         for k, key in keys.items()}}
    if full.get("lr") is None and full.get("optimizer") in DEFAULT_LR:
        full["lr"] = DEFAULT_LR[full["optimizer"]]
    return {k: v for k, v in full.items() if v is not None}


def _label(variant: dict[str, Any], axes: list[str], point: tuple) -> str:
    parts = [str(variant["name"])] if "name" in variant else [
        f"{k}={v}" for k, v in _strip(variant).items()]
    parts += [_axis_label(a, v) for a, v in zip(axes, point) if a != "seed"]
    return " · ".join(parts) or "base"


def _trial(run: str, label: str, config: dict, spec: Spec, index: int) -> Trial:
    record = {"grad_every": 10, **spec.record}
    # the run is part of the key: trials belong to their run, never to another spec's
    blob = json.dumps([run, config, spec.budget, spec.target, record], sort_keys=True)
    key = hashlib.sha1(blob.encode()).hexdigest()[:16]
    return Trial(key, run, label, config, dict(spec.budget), spec.target, record,
                 KINDS[config["kind"]].function, index)


def _check_target(target: dict | None, config: dict, source: str) -> None:
    if target and target["metric"].endswith("acc") and config.get("data") == "adding":
        raise SpecError(f"{source}: target.metric: {target['metric']!r} needs a classification "
                        "dataset; the adding problem is a regression: use test_loss or train_loss")


def _unknown(source: str, path: str, key: str, allowed: Any) -> SpecError:
    near = difflib.get_close_matches(key, list(allowed), n=1)
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    return SpecError(f"{source}: unknown key {path}{key!r}{hint}; allowed keys: "
                     f"{', '.join(allowed)}")


def _table(source: str, path: str, value: Any, keys: dict[str, Key]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SpecError(f"{source}: {path.rstrip('.')}: expected a table, got {value!r}")
    for k, v in value.items():
        if k not in keys:
            raise _unknown(source, path, k, keys)
        _value(source, f"{path}{k}", v, keys[k])
    return dict(value)


def _value(source: str, path: str, value: Any, key: Key) -> None:
    if not key.accepts(value):
        raise SpecError(f"{source}: {path}: expected {key.allowed}; got {value!r}")


def _grid(source: str, grid: Any) -> dict[str, list]:
    if not isinstance(grid, dict):
        raise SpecError(f"{source}: grid: expected a table of lists, got {grid!r}")
    every = allowed_keys()
    partial = {"name": Key((str,), "a string"), **every}
    for k, values in grid.items():
        if isinstance(values, list) and values and all(isinstance(v, dict) for v in values):
            for i, v in enumerate(values):         # an axis of partial configurations
                _table(source, f"grid.{k}[{i}].", v, partial)
            continue
        if k not in every:
            raise _unknown(source, "grid.", k, every)
        if not isinstance(values, list) or not values:
            raise SpecError(f"{source}: grid.{k}: expected a non-empty list of values "
                            f"({every[k].allowed}) or of tables (partial configurations); "
                            f"got {values!r}")
        for i, v in enumerate(values):
            _value(source, f"grid.{k}[{i}]", v, every[k])
    return {k: list(v) for k, v in grid.items()}


def _variants(source: str, variants: Any) -> list[dict]:
    if not isinstance(variants, list) or not all(isinstance(v, dict) for v in variants):
        raise SpecError(f"{source}: variants: expected an array of tables ([[variants]])")
    keys = {"name": Key((str,), "a string"), **allowed_keys()}
    return [_table(source, f"variants[{i}].", v, keys) for i, v in enumerate(variants)]


def _budget(source: str, path: str, budget: Any) -> dict:
    budget = _table(source, path, budget, BUDGET_KEYS)
    if ("epochs" in budget) == ("steps" in budget):
        raise SpecError(f"{source}: {path.rstrip('.')}: give exactly one of 'epochs' or 'steps' "
                        f"(an integer >= 1); got {sorted(budget) or 'neither'}")
    return budget


def _target(source: str, target: Any) -> dict:
    target = _table(source, "target.", target, TARGET_KEYS)
    missing = [k for k in TARGET_KEYS if k not in target]
    if missing:
        raise SpecError(f"{source}: target: missing {', '.join(missing)} "
                        f"(metric: one of {', '.join(TARGET_METRICS)}; value: a number)")
    return target


def _quick(source: str, quick: Any) -> dict:
    checkers = {"base": lambda v: _table(source, "quick.base.", v, allowed_keys()),
                "grid": lambda v: _grid(source, v),
                "budget": lambda v: _budget(source, "quick.budget.", v),
                "record": lambda v: _table(source, "quick.record.", v, RECORD_KEYS)}
    if not isinstance(quick, dict):
        raise SpecError(f"{source}: quick: expected a table, got {quick!r}")
    for k in quick:
        if k not in checkers:
            raise _unknown(source, "quick.", k, QUICK_KEYS)
    return {k: checkers[k](v) for k, v in quick.items()}


def _metrics(source: str, metrics: Any) -> list[str]:
    if not isinstance(metrics, list) or not all(m in METRICS for m in metrics):
        raise SpecError(f"{source}: metrics: expected a list of {', '.join(METRICS)}; "
                        f"got {metrics!r}")
    return list(metrics)


def _name(source: str, name: str) -> str:
    """A spec's name: it names the default output directory, so it must be one plain name."""
    if (not name.strip() or name in (".", "..") or any(c in name for c in "/\\\0")
            or Path(name).is_absolute()):
        raise SpecError(f"{source}: name: expected a plain name (no '/', '\\', '..' or "
                        f"absolute path: it names the output directory); got {name!r}")
    return name


def parse_spec(data: dict[str, Any], source: str = "<spec>", name: str | None = None) -> Spec:
    """Validate a spec given as a dict (as parsed from TOML) and return it."""
    for k in data:
        if k not in TOP_KEYS:
            raise _unknown(source, "", k, TOP_KEYS)
    for k in ("name", "description"):
        if k in data and not isinstance(data[k], str):
            raise SpecError(f"{source}: {k}: expected a string; got {data[k]!r}")
    if "budget" not in data:
        raise SpecError(f"{source}: budget: missing; add e.g. [budget] epochs = 10 "
                        "(or steps = 500)")
    spec = Spec(
        name=_name(source, data.get("name") or name or Path(source).stem), description=data.get("description", ""),
        base=_table(source, "base.", data.get("base", {}), allowed_keys()),
        grid=_grid(source, data.get("grid", {})),
        variants=_variants(source, data.get("variants", [])),
        budget=_budget(source, "budget.", data["budget"]),
        target=_target(source, data["target"]) if "target" in data else None,
        record=_table(source, "record.", data.get("record", {}), RECORD_KEYS),
        quick=_quick(source, data.get("quick", {})), source=source,
        metrics=_metrics(source, data.get("metrics", [])))
    spec.trials()                       # cross-key checks on every configuration
    if spec.quick:
        spec.trials(quick=True)
    return spec


def load_spec(path: str | Path) -> Spec:
    """Read and validate the TOML spec at ``path``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise SpecError(f"{path}: cannot read the spec: {e.strerror}") from e
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"{path}: not valid TOML: {e}") from e
    return parse_spec(data, str(path), path.stem)
