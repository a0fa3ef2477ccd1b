"""Gradient transformations: the building block every gradwell optimizer is made of.

A transformation turns a list of updates (at first, the gradients) into a new list, keeping
per-parameter state. The :class:`~gradwell.optim.Optimizer` then applies

.. math:: \\theta \\leftarrow \\theta - \\eta \\, u

with :math:`\\eta` the parameter group's ``lr`` (so every torch LR scheduler works unchanged).
Transformations work on whole lists of tensors, so their bodies are ``torch._foreach_*`` calls:
one kernel launch per operation for all parameters, as in torch.optim's foreach path.

Rules a transformation follows (they make transformations freely composable):

* hyperparameters live in the parameter group (``group["betas"]``), with defaults declared in
  :attr:`Transform.defaults`; the constructor's arguments set those defaults;
* per-parameter state lives in the optimizer's ``state[p]`` under the keys in
  :attr:`Transform.state_keys` (torch.optim's names, so state dicts interoperate);
* ``update`` never writes into the updates it receives; it returns new tensors or its own state.

Composition follows optax (Babuschkin et al. 2020, "The DeepMind JAX Ecosystem"):
``chain(add_decayed_weights(), scale_by_adam())`` is Adam with coupled L2 weight decay.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import Tensor

__all__ = ["Transform", "chain", "Chain", "Quotient", "check_range"]


class Quotient:
    """Updates ``num / den`` left undivided, so the last step can be one ``addcdiv``.

    A transformation whose result is a ratio (Adam, Adagrad, RMSprop) may return a Quotient;
    :class:`Chain` turns it into tensors before the next transformation, and the optimizer
    applies ``p <- p - lr * num / den`` in a single ``torch._foreach_addcdiv_`` pass, as
    torch.optim's foreach path does. ``den`` is owned by the Quotient and may be overwritten.
    """

    __slots__ = ("num", "den")

    def __init__(self, num: list[Tensor], den: list[Tensor]) -> None:
        self.num, self.den = num, den

    def tensors(self) -> list[Tensor]:
        """The divided updates, computed in place in ``den``."""
        torch._foreach_reciprocal_(self.den)
        torch._foreach_mul_(self.den, self.num)
        return list(self.den)


def as_tensors(updates: "list[Tensor] | Quotient") -> list[Tensor]:
    """The updates as a list of tensors (divides a :class:`Quotient`)."""
    return updates.tensors() if isinstance(updates, Quotient) else updates


class Transform:
    """Base class: a gradient transformation with per-parameter state."""

    #: Hyperparameter names and their defaults, copied into each parameter group.
    defaults: dict[str, Any] = {}
    #: Keys this transformation owns in ``optimizer.state[p]``.
    state_keys: tuple[str, ...] = ()

    def check(self, group: dict[str, Any]) -> None:
        """Raise ValueError if a hyperparameter of ``group`` is out of range."""

    def init(self, param: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        """Initial state for ``param`` (a dict with :attr:`state_keys`)."""
        return {}

    def update(self, updates: list[Tensor], states: list[dict[str, Any]], params: list[Tensor],
               group: dict[str, Any]) -> "list[Tensor] | Quotient":
        """Transform ``updates`` (one tensor per parameter), advancing ``states``.

        Returns new tensors (or the transformation's own state tensors), or a
        :class:`Quotient` when the result is a ratio best applied with ``addcdiv``.
        """
        raise NotImplementedError

    def transforms(self) -> list["Transform"]:
        """The elementary transformations this one is made of (itself, unless a chain)."""
        return [self]

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.defaults.items())
        return f"{type(self).__name__}({args})"


class Chain(Transform):
    """Apply transformations one after the other: ``chain(a, b)(g) = b(a(g))``."""

    def __init__(self, *parts: Transform) -> None:
        from ..clip.base import Clipper
        flat: list[Transform] = []
        for i, t in enumerate(parts):
            if isinstance(t, Clipper):
                t = ClipTransform(t)
            if not isinstance(t, Transform):
                raise TypeError(f"chain argument {i} must be a gradwell transformation or clipper, "
                                f"got {type(t).__qualname__}: {t!r}")
            flat.extend(t.transforms())
        if not flat:
            raise ValueError("chain needs at least one transformation")
        self.parts = flat
        self.defaults = merge_defaults(flat)
        keys = [k for t in flat for k in t.state_keys]
        dup = sorted({k for k in keys if keys.count(k) > 1})
        if dup:
            raise ValueError(f"chain: state keys {dup} are used by more than one transformation; "
                             "each transformation may appear once in a chain")
        self.state_keys = tuple(keys)

    def transforms(self) -> list[Transform]:
        return list(self.parts)

    def check(self, group: dict[str, Any]) -> None:
        for t in self.parts:
            t.check(group)

    def init(self, param: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        state: dict[str, Any] = {}
        for t in self.parts:
            state.update(t.init(param, group))
        return state

    def update(self, updates: list[Tensor], states: list[dict[str, Any]], params: list[Tensor],
               group: dict[str, Any]) -> list[Tensor]:
        for t in self.parts:
            updates = t.update(as_tensors(updates), states, params, group)
        return updates

    def __repr__(self) -> str:
        return "chain(" + ", ".join(map(repr, self.parts)) + ")"


def chain(*transforms: Transform) -> Chain:
    """Compose transformations (and clippers) left to right, like ``optax.chain``."""
    return Chain(*transforms)


class ClipTransform(Transform):
    """A :class:`gradwell.clip.Clipper` as a chain element: clips the updates of one group."""

    def __init__(self, clipper: Any) -> None:
        self.clipper = clipper

    def update(self, updates: list[Tensor], states: list[dict[str, Any]], params: list[Tensor],
               group: dict[str, Any]) -> list[Tensor]:
        from .._distributed import full_tensors
        from ..clip.base import full_norms, grad_norms, total_norm
        params = full_tensors(params, states)  # FSDP2: the DTensors behind the local shards
        norms = full_norms(params, grad_norms(updates, self.clipper.norm_type),
                           self.clipper.norm_type)
        total = total_norm(norms, self.clipper.norm_type)
        if self.clipper.scales_globally:
            return list(torch._foreach_mul(updates, self.clipper(updates, params, norms, total)))
        updates = [u.clone() for u in updates]
        self.clipper(updates, params, norms, total)
        return updates

    def __repr__(self) -> str:
        return repr(self.clipper)


def merge_defaults(parts: Sequence[Transform]) -> dict[str, Any]:
    """Union of the parts' defaults; the same name with two different values is an error."""
    merged: dict[str, Any] = {}
    for t in parts:
        for k, v in t.defaults.items():
            if k in merged and merged[k] != v:
                raise ValueError(f"chain: hyperparameter {k!r} has two defaults, {merged[k]!r} and "
                                 f"{v!r}; give both transformations the same value")
            merged[k] = v
    return merged


def check_range(name: str, value: Any, low: float = 0.0, high: float = math.inf,
                high_open: bool = False, allowed: str | None = None) -> None:
    """Raise ValueError naming ``name`` unless ``low <= value <= high`` (``< high`` if open)."""
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a number or a 1-element tensor, got shape "
                             f"{tuple(value.shape)}")
        value = value.item()
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
    ok = ok and low <= value and (value < high if high_open else value <= high)
    if not ok:
        if allowed is None:
            hi = ")" if high_open else "]"
            allowed = f"a number in [{low}, {high}{hi}"
        raise ValueError(f"Invalid {name}: {value!r}; allowed: {allowed}")


def scalar_steps(steps: list[Tensor]) -> list[float]:
    """Read per-parameter step counters with one host transfer (not one per parameter)."""
    if not steps:
        return []
    return torch.stack([s.detach().reshape(()).to(steps[0].device) for s in steps]).tolist()
