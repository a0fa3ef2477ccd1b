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
import numbers
from collections.abc import MutableMapping
from typing import Any, Iterator

import numpy as np
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
        """The divided updates ``num / den`` (new tensors; ``1 / den`` first would overflow in
        float16 when ``den`` is small, and ``inf * 0`` is NaN)."""
        return list(torch._foreach_div(self.num, self.den))


def as_tensors(updates: "list[Tensor] | Quotient") -> list[Tensor]:
    """The updates as a list of tensors (divides a :class:`Quotient`)."""
    return updates.tensors() if isinstance(updates, Quotient) else updates


class Transform:
    """Base class: a gradient transformation with per-parameter state."""

    #: Hyperparameter names and their defaults, copied into each parameter group.
    defaults: dict[str, Any] = {}
    #: Keys this transformation owns in ``optimizer.state[p]``.
    state_keys: tuple[str, ...] = ()
    #: True if :meth:`update` takes a fifth argument, ``group_state``: a dict the optimizer
    #: keeps per parameter group (and per chain position) in its ``state_dict`` (clippers).
    uses_group_state: bool = False

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
    """Apply transformations one after the other: ``chain(a, b)(g) = b(a(g))``.

    Each element owns its hyperparameters and its state, as in optax. They live in the
    parameter groups and ``optimizer.state[p]`` under the element's own names (``eps``,
    ``exp_avg``); a name that several elements use is qualified by the element's position,
    ``name@i``: ``chain(add_decayed_weights(1e-4), scale_by_adam(), add_decayed_weights(1e-2))``
    has group keys ``weight_decay@0``, ``betas``, ``eps``, ``amsgrad`` and ``weight_decay@2``.
    """

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
        self.hyper_names = _qualified([list(t.defaults) for t in flat])
        self.state_names = _qualified([list(t.state_keys) for t in flat])
        self.defaults = {names.get(k, k): v for t, names in zip(flat, self.hyper_names)
                         for k, v in t.defaults.items()}
        self.state_keys = tuple(names.get(k, k) for t, names in zip(flat, self.state_names)
                                for k in t.state_keys)
        self.uses_group_state = any(t.uses_group_state for t in flat)

    def transforms(self) -> list[Transform]:
        return list(self.parts)

    def check(self, group: dict[str, Any]) -> None:
        for t, names in zip(self.parts, self.hyper_names):
            t.check(KeyView.of(group, names))

    def init(self, param: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        state: dict[str, Any] = {}
        for t, hyper, names in zip(self.parts, self.hyper_names, self.state_names):
            for k, v in t.init(param, KeyView.of(group, hyper)).items():
                state[names.get(k, k)] = v
        return state

    def update(self, updates: list[Tensor], states: list[dict[str, Any]], params: list[Tensor],
               group: dict[str, Any], group_state: dict[int, Any] | None = None
               ) -> "list[Tensor] | Quotient":
        for i, (t, hyper, names) in enumerate(zip(self.parts, self.hyper_names,
                                                  self.state_names)):
            own = [KeyView(s, names) for s in states] if names else states
            args = (as_tensors(updates), own, params, KeyView.of(group, hyper))
            if t.uses_group_state:
                slot = None if group_state is None else group_state.setdefault(i, {})
                updates = t.update(*args, slot)  # type: ignore[call-arg]
            else:
                updates = t.update(*args)
        return updates

    def __repr__(self) -> str:
        return "chain(" + ", ".join(map(repr, self.parts)) + ")"


def _qualified(names: list[list[str]]) -> list[dict[str, str]]:
    """Per element, the renames ``name -> name@i`` of names that more than one element uses."""
    counts: dict[str, int] = {}
    for keys in names:
        for k in set(keys):
            counts[k] = counts.get(k, 0) + 1
    return [{k: f"{k}@{i}" for k in keys if counts[k] > 1} for i, keys in enumerate(names)]


class KeyView(MutableMapping):
    """A dict seen through renames (``eps`` read and written as ``eps@2``)."""

    __slots__ = ("base", "names")

    def __init__(self, base: Any, names: dict[str, str]) -> None:
        self.base, self.names = base, names

    @staticmethod
    def of(base: Any, names: dict[str, str]) -> Any:
        """``base`` itself when nothing is renamed (no cost for the drop-ins' chains)."""
        return KeyView(base, names) if names else base

    def __getitem__(self, key: str) -> Any:
        return self.base[self.names.get(key, key)]

    def __setitem__(self, key: str, value: Any) -> None:
        self.base[self.names.get(key, key)] = value

    def __delitem__(self, key: str) -> None:
        del self.base[self.names.get(key, key)]

    def __iter__(self) -> Iterator[str]:
        back = {v: k for k, v in self.names.items()}
        return (back.get(k, k) for k in self.base)

    def __len__(self) -> int:
        return len(self.base)


def chain(*transforms: Transform) -> Chain:
    """Compose transformations (and clippers) left to right, like ``optax.chain``."""
    return Chain(*transforms)


class ClipTransform(Transform):
    """A :class:`gradwell.clip.Clipper` as a chain element: clips the updates of one group.

    A stateful clipper's state (AutoClip's history, ZClip's statistics) is the optimizer's,
    one per parameter group and chain position (``group_state``)."""

    uses_group_state = True

    def __init__(self, clipper: Any) -> None:
        self.clipper = clipper

    def update(self, updates: list[Tensor], states: list[dict[str, Any]], params: list[Tensor],
               group: dict[str, Any], group_state: dict[str, Any] | None = None
               ) -> list[Tensor]:
        from .._distributed import full_tensors
        from ..clip.base import call_clipper, full_norms, grad_norms, total_norm
        params = full_tensors(params, states)  # FSDP2: the DTensors behind the local shards
        norms = full_norms(params, grad_norms(updates, self.clipper.norm_type),
                           self.clipper.norm_type)
        total = total_norm(norms, self.clipper.norm_type)
        if self.clipper.scales_globally:
            factor = call_clipper(self.clipper, updates, params, norms, total, group_state)
            return list(torch._foreach_mul(updates, factor))
        updates = [u.clone() for u in updates]
        call_clipper(self.clipper, updates, params, norms, total, group_state)
        return updates

    def __repr__(self) -> str:
        return repr(self.clipper)


def check_range(name: str, value: Any, low: float = 0.0, high: float = math.inf,
                high_open: bool = False, allowed: str | None = None, label: str | None = None
                ) -> None:
    """Raise ValueError naming ``name`` unless ``low <= value <= high`` (``< high`` if open).

    Every number type torch accepts passes: Python and NumPy scalars (``numbers.Real``) and
    1-element tensors. The message starts like torch's (``Invalid momentum value: -0.5``).
    """
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a number or a 1-element tensor, got shape "
                             f"{tuple(value.shape)}")
        value = value.item()
    ok = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
    if ok:
        value = float(value) if not isinstance(value, numbers.Integral) else int(value)
        ok = not math.isnan(value) and low <= value and (
            value < high if high_open else value <= high)
    if not ok:
        if allowed is None:
            hi = ")" if high_open else "]"
            allowed = f"a number in [{low}, {high}{hi}"
        raise ValueError(f"Invalid {label or name + ' value'}: {value!r}; allowed: {allowed}")


def scalar_steps(steps: list[Tensor]) -> list[float]:
    """Read per-parameter step counters with one host transfer (not one per parameter)."""
    if not steps:
        return []
    return torch.stack([s.detach().reshape(()).to(steps[0].device) for s in steps]).tolist()
