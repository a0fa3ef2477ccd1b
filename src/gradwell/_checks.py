"""The one vocabulary of argument checks, used by optim, clip, guard, watch, nn and the lab.

Every error has one format, :func:`invalid`: ``{argument} must be {allowed}, got {value!r}`` --
which argument, what is allowed, what was given (a ``ValueError``; a ``TypeError`` for a flag
that is not a bool). ``allowed`` phrases come from :func:`interval` and :func:`one_of`, which the
lab's spec keys (:mod:`gradwell.lab.schema`) use too; a spec error adds the file and the key in
front (``my.toml: base.depth: expected an integer >= 1; got 0``). The drop-in optimizers keep
torch's own wording (``Invalid momentum value: -0.5``) and add the same ``allowed`` phrase.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Sequence

__all__ = ["invalid", "interval", "one_of", "is_number", "check_int", "check_number",
           "check_bool", "check_choice"]


def invalid(argument: str, allowed: str, value: Any, error: type[Exception] = ValueError
            ) -> Exception:
    """The error for ``argument`` given ``value``: ``{argument} must be {allowed}, got {value!r}``."""
    return error(f"{argument} must be {allowed}, got {value!r}")


def _num(x: float) -> str:
    return "inf" if math.isinf(x) else f"{x:g}"


def interval(low: float = -math.inf, high: float = math.inf, low_open: bool = False,
             high_open: bool = False) -> str:
    """The phrase for a number range: ``a positive number`` for ``(0, inf)``, else e.g.
    ``a number in (0, 1]``."""
    if low == 0 and low_open and math.isinf(high):
        return "a positive number"
    lo, hi = "(" if low_open or math.isinf(low) else "[", ")" if high_open or math.isinf(high) else "]"
    return f"a number in {lo}{_num(low)}, {_num(high)}{hi}"


def one_of(allowed: Sequence[str]) -> str:
    """The phrase for a choice: ``one of a, b, c``."""
    return "one of " + ", ".join(allowed)


def is_number(value: Any) -> bool:
    """True for a real number that is not a bool and not NaN (Python and NumPy scalars)."""
    return (isinstance(value, numbers.Real) and not isinstance(value, bool)
            and type(value).__name__ != "bool_" and not math.isnan(value))


def check_int(argument: str, value: Any, minimum: int = 1, note: str = "") -> int:
    """``value`` if it is an int ``>= minimum``; ``note`` explains it (``" (steps ...)"``)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise invalid(argument, f"an int >= {minimum}{note}", value)
    return value


def check_number(argument: str, value: Any, low: float = -math.inf, high: float = math.inf,
                 low_open: bool = False, high_open: bool = False, *, optional: str = "",
                 note: str = "") -> float | None:
    """``float(value)`` if it is a number in the range (ends closed unless ``*_open``; an
    infinite end is never reached); None when ``optional`` names what None means."""
    if value is None and optional:
        return None
    ok = is_number(value) and (low < value if low_open else low <= value) and (
        value < high if high_open or math.isinf(high) else value <= high)
    if not ok:
        extra = f" or None ({optional})" if optional else ""
        raise invalid(argument, interval(low, high, low_open, high_open) + note + extra, value)
    return float(value)


def check_bool(argument: str, value: Any, note: str = "") -> bool:
    """``value`` if it is True or False, else a TypeError."""
    if not isinstance(value, bool):
        raise invalid(argument, f"True or False{note}", value, TypeError)
    return value


def check_choice(argument: str, value: Any, allowed: Sequence[str]) -> str:
    """``value`` if it is one of ``allowed``."""
    if value not in allowed:
        raise invalid(argument, one_of(allowed), value)
    return value
