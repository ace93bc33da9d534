"""Checks of the arguments daqlab's settings and methods take: whole numbers, real numbers, flags.

``bool`` is an ``int`` in Python, so ``True`` would pass for a count of 1; these
checks refuse it. They raise :class:`~daqlab.ConfigurationError` (or the
``error`` given) with a message that names the argument, what was given and
what is allowed. This module sits at the bottom of daqlab's layers: it imports
only :mod:`daqlab.errors` and numpy.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, TypeGuard

import numpy as np

from daqlab.errors import ConfigurationError, DaqlabError

__all__ = ["as_float", "flag", "is_real", "is_whole", "real", "shown", "whole"]


def is_whole(value: object) -> TypeGuard[int | np.integer[Any]]:
    """Whether ``value`` is an integer (Python or numpy), never a bool.

    >>> is_whole(3), is_whole(np.int64(3)), is_whole(True), is_whole(3.0)
    (True, True, False, False)
    """
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def is_real(value: object) -> TypeGuard[float | np.integer[Any] | np.floating[Any]]:
    """Whether ``value`` is a real number (int, float, numpy number...), never a bool.

    >>> is_real(2.5), is_real(np.float32(1)), is_real(False), is_real("1")
    (True, True, False, False)
    """
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def as_float(value: Any) -> float:
    """``float(value)``, with an int beyond float64's range as +-inf instead of an OverflowError.

    >>> as_float(10**400), as_float(-(10**400)), as_float(np.float32(0.5))
    (inf, -inf, 0.5)
    """
    try:
        return float(value)
    except OverflowError:  # only ints overflow: their sign is exact
        return math.inf if value > 0 else -math.inf


def shown(value: object, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters for a message (a 400-digit int, a long list).

    >>> shown(10**70)
    '1000000000000000000000000000000000000000000000000000000000... (71 characters)'
    """
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit - 2]}... ({len(text)} characters)"


def _tail(value: object, hint: str) -> str:
    return f"; got {shown(value)}. {hint}".rstrip()


def whole(
    value: object, name: str, *, minimum: int = 0, unit: str = "", note: str = "", hint: str = "",
    error: type[DaqlabError] = ConfigurationError,
) -> int:
    """``value`` as an ``int`` if it is a whole number >= ``minimum``, else raise ``error``.

    ``unit`` names what is counted ("samples"); ``note`` follows what is allowed
    ("or None for ..."); ``hint`` ends the message with how to fix it.

    >>> whole(np.int64(5), "capacity", minimum=1)
    5
    >>> whole(True, "width", minimum=10, unit="pixels", hint="Pass e.g. 800.")
    Traceback (most recent call last):
    ...
    daqlab.errors.ConfigurationError: width must be a whole number of pixels >= 10; got True. Pass e.g. 800.
    """
    if not is_whole(value) or value < minimum:
        of = f" of {unit}" if unit else ""
        also = f" {note}" if note else ""
        raise error(f"{name} must be a whole number{of} >= {minimum}{also}{_tail(value, hint)}")
    return int(value)


def real(
    value: object, name: str, *, lower: float | None = None, upper: float | None = None,
    lower_open: bool = False, finite: bool = True, note: str = "", hint: str = "",
    error: type[DaqlabError] = ConfigurationError,
) -> float:
    """``value`` as a ``float`` if it is a real number in the range asked for, else raise ``error``.

    The range is ``lower <= value <= upper`` (``lower < value`` when ``lower_open``),
    finite unless ``finite=False``; ``note`` follows what is allowed and ``hint``
    ends the message with how to fix it.

    >>> real(2, "speed", lower=0, lower_open=True)
    2.0
    >>> real(float("nan"), "stop_timeout", lower=0, lower_open=True, hint="Pass e.g. 10.0.")
    Traceback (most recent call last):
    ...
    daqlab.errors.ConfigurationError: stop_timeout must be finite and > 0; got nan. Pass e.g. 10.0.
    >>> real("1", "std", lower=0)
    Traceback (most recent call last):
    ...
    daqlab.errors.ConfigurationError: std must be a number; got '1' (str).
    """
    if not is_real(value):
        raise error(f"{name} must be a number; got {shown(value)} ({type(value).__name__}). {hint}".rstrip())
    v = as_float(value)
    if (
        (finite and not math.isfinite(v))
        or math.isnan(v)
        or (lower is not None and (v <= lower if lower_open else v < lower))
        or (upper is not None and v > upper)
    ):
        parts = ["finite"] if finite else []
        if lower is not None:
            parts.append(f"{'>' if lower_open else '>='} {lower:g}")
        if upper is not None:
            parts.append(f"at most {upper:g}")
        allowed = " and ".join([", ".join(parts[:-1]), parts[-1]] if len(parts) > 1 else parts)
        also = f" {note}" if note else ""
        raise error(f"{name} must be {allowed or 'a number'}{also}{_tail(value, hint)}")
    return v


def flag(value: object, name: str) -> bool:
    """``value`` as a ``bool`` if it is one (numpy's too), else a ConfigurationError.

    ``bool("no")`` is True: a flag given as text or a number is refused, not guessed.

    >>> flag(np.True_, "paced")
    True
    >>> flag(1, "loop")
    Traceback (most recent call last):
    ...
    daqlab.errors.ConfigurationError: loop must be True or False; got 1 (int).
    """
    if not isinstance(value, (bool, np.bool_)):
        raise ConfigurationError(f"{name} must be True or False; got {value!r} ({type(value).__name__}).")
    return bool(value)
