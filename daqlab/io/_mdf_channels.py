"""How the channels of an MDF4 channel group become a run's (see :mod:`daqlab.io._mdf`).

:func:`_plan` picks a group's numeric scalar channels and names them (:func:`channel_names`);
it keeps a linear conversion as the channel's Calibration, a value-to-text conversion as its
table in the metadata (:func:`_text_table`), and marks the other conversions to be applied
(:meth:`_Plan.physical`). ``_text`` and ``_json`` turn asammdf's values into text and JSON.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from daqlab.model import Calibration, Channel, numbered

__all__ = ["channel_names"]


_LINEAR, _IDENTITY = 1, 0
_TEXT_KINDS = {7: "value_to_text", 8: "range_to_text", 11: "bitfield_text"}
_APPLIED = {2: "rational", 3: "algebraic", 4: "table with interpolation", 5: "table",
            6: "value range to value"}
_NUMERIC = {0, 1, 2, 3, 4, 5}  # unsigned, signed and float data types (Intel or Motorola)
_BAD_CHARS = re.compile(r"[/\x00-\x1f\x7f-\x9f]")


def _text(x: Any) -> str:
    if isinstance(x, bytes):
        return x.decode("utf-8", "replace").rstrip("\0")
    return "" if x is None else str(x)


def _json(x: Any) -> Any:
    """A number as a JSON number, anything else as text."""
    if isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x)
    return _text(x)


def _text_table(conv: Any) -> dict[str, Any]:
    """The table of a value-to-text conversion, as JSON values."""
    kind = int(conv.conversion_type)
    refs = conv.referenced_blocks or {}

    def ref(key: str) -> Any:
        v = refs.get(key)
        if v is None or isinstance(v, (bytes, str)):
            return _text(v)
        sub = int(getattr(v, "conversion_type", -1))  # a nested conversion: what it is
        if sub == _LINEAR:
            return {"conversion": "linear", "a": _json(v.a), "b": _json(v.b)}
        return {"conversion": _TEXT_KINDS.get(sub) or _APPLIED.get(sub, f"type {sub}")}

    if kind == 11:
        masks = [[_json(conv[f"mask_{i}"]), ref(f"text_{i}")] for i in range(int(conv.val_param_nr))]
        return {"kind": _TEXT_KINDS[kind], "table": masks}
    n = int(conv.ref_param_nr) - 1
    table = ([[_json(conv[f"val_{i}"]), ref(f"text_{i}")] for i in range(n)] if kind == 7 else
             [[_json(conv[f"lower_{i}"]), _json(conv[f"upper_{i}"]), ref(f"text_{i}")] for i in range(n)])
    return {"kind": _TEXT_KINDS[kind], "table": table, "default": ref("default_addr")}


def channel_names(names: list[str]) -> tuple[list[str], dict[str, str]]:
    """Names a run takes ('/' and control characters as '_', trimmed, repeats made unique
    with ``_2``, ``_3``...) and ``{new: original}`` for those changed.

    >>> channel_names(["a", "a", "b/c", " d "])
    (['a', 'a_2', 'b_c', 'd'], {'a_2': 'a', 'b_c': 'b/c', 'd': ' d '})
    """
    cleaned = (_BAD_CHARS.sub("_", raw).strip() for raw in names)
    out = numbered(name if name not in ("", ".", "..") else "channel" for name in cleaned)
    return out, {n: o for n, o in zip(out, names, strict=True) if n != o}


def _range(ch: Any, conv: Any, numeric: bool) -> tuple[float, float] | None:
    """The channel's limits (physical for numeric conversions, raw for value-to-text ones, as
    the values daqlab keeps), else its conversion's physical range."""
    lo = hi = math.nan
    if ch.flags & (1 << 4):
        lo, hi = float(ch.lower_limit), float(ch.upper_limit)
    elif conv is not None and numeric and int(getattr(conv, "flags", 0)) & 2:
        lo, hi = float(conv.min_phy_value), float(conv.max_phy_value)
    return (lo, hi) if lo < hi else None


@dataclass
class _Plan:
    """How a group's channels become a run's."""

    index: list[int] = field(default_factory=list)  # asammdf's channel indexes read
    channels: list[Channel] = field(default_factory=list)
    convert: dict[int, Any] = field(default_factory=dict)  # position -> conversion applied
    all_invalid: list[int] = field(default_factory=list)  # positions flagged BAD throughout
    with_bits: set[int] = field(default_factory=set)  # positions with invalidation bits
    metadata: dict[str, Any] = field(default_factory=dict)

    def physical(self, pos: int, raw: NDArray[Any], out: NDArray[np.float64]) -> None:
        """Channel ``pos``'s values into ``out``: ``raw`` as float64, or converted where the
        conversion is applied."""
        conv = self.convert.get(pos)
        if conv is None:
            out[...] = raw
        else:
            with np.errstate(all="ignore"):  # a conversion's inf/NaN are flagged BAD, not warned
                out[...] = conv.convert(raw)


def _plan(grp: Any, master_index: int | None) -> _Plan:
    plan = _Plan()
    skipped: dict[str, str] = {}
    for i, ch in enumerate(grp.channels):
        if i == master_index:
            continue
        deps = grp.channel_dependencies[i] if i < len(grp.channel_dependencies) else None
        if ch.channel_type not in (0, 6) or ch.data_type not in _NUMERIC or deps or ch.component_addr:
            skipped[_text(ch.name)] = (f"not a numeric scalar channel (channel type {ch.channel_type}, "
                                       f"data type {ch.data_type}{', composed' if deps else ''})")
            continue
        plan.index.append(i)
    names, renamed = channel_names([_text(grp.channels[i].name) for i in plan.index])
    meta: dict[str, dict[str, Any]] = {k: {} for k in (
        "renamed", "conversions", "value_to_text", "comments", "raw_value_ranges", "extended_limits")}
    meta["renamed"] = dict(renamed)
    for pos, (i, name) in enumerate(zip(plan.index, names, strict=True)):
        ch = grp.channels[i]
        conv = ch.conversion
        kind = _IDENTITY if conv is None else int(conv.conversion_type)
        cal = Calibration()
        if kind == _LINEAR:
            a, b = float(conv.a), float(conv.b)
            if a != 0.0 and math.isfinite(a) and math.isfinite(b):
                cal = Calibration(slope=a, offset=b)
            elif not (a == 1.0 and b == 0.0):
                plan.convert[pos] = conv
                meta["conversions"][name] = f"applied: linear with a={a!r}, b={b!r} (not invertible)"
        elif kind in _TEXT_KINDS:
            meta["value_to_text"][name] = _text_table(conv)
        elif kind != _IDENTITY:
            plan.convert[pos] = conv
            what = _APPLIED.get(kind, f"conversion type {kind}")
            formula = f" ({_text(conv.formula)})" if kind == 3 else ""
            meta["conversions"][name] = f"applied: {what}{formula}"
        unit = _text((conv is not None and getattr(conv, "unit", "")) or ch.unit)
        plan.channels.append(Channel(name, unit, range=_range(ch, conv, kind not in _TEXT_KINDS),
                                     calibration=cal))
        if _text(ch.comment):
            meta["comments"][name] = _text(ch.comment)
        if ch.flags & (1 << 3):
            meta["raw_value_ranges"][name] = [float(ch.min_raw_value), float(ch.max_raw_value)]
        if ch.flags & (1 << 5):
            meta["extended_limits"][name] = [float(ch.lower_ext_limit), float(ch.upper_ext_limit)]
        if ch.flags & 1:
            plan.all_invalid.append(pos)
        if ch.flags & 2:
            plan.with_bits.add(pos)
    plan.metadata = {k: v for k, v in {**meta, "skipped_channels": skipped}.items() if v}
    return plan
