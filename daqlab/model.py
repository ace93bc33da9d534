"""The seed's value types: :class:`Channel`, :class:`Calibration`, :class:`Quality`."""

from __future__ import annotations

import datetime as _dt
import math
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, TypeAlias

import numpy as np

from daqlab.checks import as_float, is_real, shown
from daqlab.errors import CalibrationError, ChannelError, ConfigurationError

__all__ = [
    "Calibration",
    "Channel",
    "ChannelLike",
    "Quality",
    "check_channel_name",
    "is_utf8",
    "numbered",
    "to_channels",
    "to_datetime64",
    "wrapped_outside_ns",
]


class Quality(IntEnum):
    """Per-sample quality flag, stored as ``int8`` in a run's ``quality`` variable."""

    GOOD = 0
    SUSPECT = 1
    BAD = 2
    INTERPOLATED = 3

    @classmethod
    def meanings(cls) -> str:
        """CF ``flag_meanings``: the lower-case names in value order."""
        return " ".join(q.name.lower() for q in cls)


def wrapped_outside_ns(arr: Any) -> tuple[Any, Any]:
    """``arr`` (any ``datetime64`` unit) as ``datetime64[ns]``, and a mask of the dates that
    do not fit the nanosecond range (1677-2262): numpy wraps a coarse date around without a word.
    """
    ns = arr.astype("datetime64[ns]")
    if arr.dtype == ns.dtype or np.datetime_data(arr.dtype)[0] not in _COARSER_THAN_NS:
        return ns, np.zeros(np.shape(arr), dtype=bool)
    return ns, ~np.isnat(arr) & (ns.astype(arr.dtype) != arr)


_COARSER_THAN_NS = ("Y", "M", "W", "D", "h", "m", "s", "ms", "us")


def _in_ns_range(value: np.datetime64, what: str) -> np.datetime64:
    out, outside = wrapped_outside_ns(value)
    if outside:
        raise ConfigurationError(
            f"{what} {value} lies outside the range of datetime64[ns] (1677-09-21 to "
            "2262-04-11) that daqlab stamps samples in; check the date."
        )
    result: np.datetime64 = out
    return result


def to_datetime64(value: Any, *, what: str = "time") -> np.datetime64:
    """Convert a datetime-like to ``datetime64[ns]`` (UTC); ``None`` gives NaT.

    Aware datetimes are converted to UTC; naive ones are taken as UTC.

    >>> to_datetime64("2024-01-02T03:04:05Z")
    np.datetime64('2024-01-02T03:04:05.000000000')
    """
    if value is None:
        return np.datetime64("NaT", "ns")
    if isinstance(value, _dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(_dt.UTC).replace(tzinfo=None)
        return _in_ns_range(np.datetime64(value, "us"), what)
    if isinstance(value, _dt.date):
        return _in_ns_range(np.datetime64(value, "D"), what)
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in ("now", "today"):  # numpy accepts these words; ISO 8601 does not
            text = "not a date"
        if text.endswith(("Z", "z")):
            text = text[:-1]
        elif len(text) > 6 and text[-6] in "+-" and text[-3] == ":":
            try:
                return to_datetime64(_dt.datetime.fromisoformat(text), what=what)
            except ValueError:
                pass
        try:
            parsed = np.datetime64(text)
        except ValueError:
            pass
        else:
            return _in_ns_range(parsed, what)
    elif isinstance(value, np.datetime64):
        return _in_ns_range(value, what)
    raise ConfigurationError(
        f"{what} must be a datetime, a date, an ISO 8601 string or numpy.datetime64; "
        f"got {value!r} ({type(value).__name__}). "
        "Pass e.g. datetime.datetime(2024, 5, 1, tzinfo=datetime.UTC) or '2024-05-01T00:00:00Z'."
    )


@dataclass(frozen=True)
class Calibration:
    """A linear calibration: ``physical = slope * raw + offset``.

    Parameters
    ----------
    slope
        Finite and non-zero, so that the calibration can be undone.
    offset
        Finite.
    reference_date
        When the calibration was determined (UTC, kept to the microsecond);
        ``None`` when unknown.

    Examples
    --------
    >>> cal = Calibration(slope=2.0, offset=1.0, reference_date="2024-05-01")
    >>> cal.apply(np.array([0.0, 1.0]))
    array([1., 3.])
    """

    slope: float = 1.0
    """Multiplier from raw to physical units."""
    offset: float = 0.0
    """Added after the multiplication."""
    reference_date: np.datetime64 | _dt.datetime | _dt.date | str | None = None
    """Calibration reference date, kept as ``datetime64[ns]`` (any datetime-like is accepted), or ``None``."""

    def __post_init__(self) -> None:
        slope, offset = self.slope, self.offset
        for label, v in (("slope", slope), ("offset", offset)):
            if not is_real(v):
                raise CalibrationError(
                    f"Calibration {label} must be a real number; got {v!r} "
                    f"({type(v).__name__}). Pass a float such as 1.0."
                )
        slope, offset = as_float(slope), as_float(offset)
        if not math.isfinite(slope) or slope == 0.0:
            raise CalibrationError(
                f"Calibration slope must be finite and non-zero; got {slope!r}. "
                "A zero or NaN slope cannot be undone; use slope=1.0 for 'no calibration'."
            )
        if not math.isfinite(offset):
            raise CalibrationError(
                f"Calibration offset must be finite; got {offset!r}. "
                "Use offset=0.0 for 'no offset'."
            )
        object.__setattr__(self, "slope", slope)
        object.__setattr__(self, "offset", offset)
        try:
            date = to_datetime64(self.reference_date, what="Calibration reference_date")
        except ConfigurationError as exc:
            raise CalibrationError(str(exc)) from None
        # kept to the microsecond: files store it as microseconds since the epoch
        date = date.astype("datetime64[us]").astype("datetime64[ns]")
        object.__setattr__(self, "reference_date", None if np.isnat(date) else date)

    @property
    def is_identity(self) -> bool:
        """True when applying this calibration changes nothing."""
        return self.slope == 1.0 and self.offset == 0.0

    def apply(self, raw: Any) -> Any:
        """Raw to physical units (works on numpy, dask and xarray objects)."""
        return raw * self.slope + self.offset

    def invert(self, physical: Any) -> Any:
        """Physical to raw units, the arithmetic inverse of :meth:`apply`."""
        return (physical - self.offset) / self.slope


_FORBIDDEN_NAMES = {".", ".."}


def is_utf8(text: str) -> bool:
    """Whether ``text`` can be written as UTF-8 (no lone surrogates, which h5py and
    ``surrogateescape`` give for bytes that were not UTF-8)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def numbered(names: Iterable[str]) -> list[str]:
    """``names`` with repeats made unique by ``_2``, ``_3``... (a name already taken, given
    or made, is never reused): how every reader of other tools' files, the LSL source and
    tree nodes make names unique after cleaning them their own way.

    >>> numbered(["a", "a", "a_2", "b", "a"])
    ['a', 'a_2', 'a_2_2', 'b', 'a_3']
    """
    out: list[str] = []
    taken: set[str] = set()
    for name in names:
        base, k = name, 1
        while name in taken:
            k += 1
            name = f"{base}_{k}"
        taken.add(name)
        out.append(name)
    return out


def check_channel_name(name: object) -> str:
    """Return ``name`` if it can name a channel in every format, else raise.

    Allowed: any non-empty text without ``/``, control characters, or
    leading/trailing whitespace, other than ``.`` and ``..`` (which HDF5 and
    file systems reserve). Unicode letters, spaces inside and punctuation are fine.

    >>> check_channel_name("T sensor (°C)")
    'T sensor (°C)'
    """
    if not isinstance(name, str):
        raise ChannelError(
            f"channel name must be a str; got {name!r} ({type(name).__name__}). "
            "Pass the name as text, e.g. 'ai0'."
        )
    if not name:
        raise ChannelError(
            "channel name is empty; every channel needs a non-empty name such as 'ai0'."
        )
    if "/" in name:
        raise ChannelError(
            f"channel name {name!r} contains '/', which HDF5 and NetCDF use as the group "
            "separator. Replace it, e.g. with '_' or '-'."
        )
    bad = [c for c in name if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn")]
    if bad:
        codes = ", ".join(f"U+{ord(c):04X}" for c in dict.fromkeys(bad))
        raise ChannelError(
            f"channel name {name!r} contains control or unassigned characters ({codes}), "
            "which files and terminals cannot show reliably. Remove them."
        )
    if name != name.strip():
        raise ChannelError(
            f"channel name {name!r} has leading or trailing whitespace, which CSV and "
            f"spreadsheets lose. Use {name.strip()!r}."
        )
    if name in _FORBIDDEN_NAMES:
        raise ChannelError(
            f"channel name {name!r} is reserved by HDF5 and file systems. Choose another."
        )
    return name


RangeLike: TypeAlias = tuple[float | None, float | None] | None


@dataclass(frozen=True)
class Channel:
    """One acquired channel: a name, a physical unit, a valid range, a calibration.

    Parameters
    ----------
    name
        Unique within a run; see :func:`check_channel_name` for what is allowed.
    unit
        Physical unit after calibration (``"V"``, ``"degC"``); ``""`` when unknown.
    range
        ``(min, max)`` of valid *physical* values; either end may be ``None`` or NaN
        for "unbounded". Values outside are flagged SUSPECT.
    calibration
        How raw values become physical ones.

    Examples
    --------
    >>> Channel("ai0", "V", range=(-10, 10))
    Channel(name='ai0', unit='V', range=(-10.0, 10.0), calibration=Calibration(slope=1.0, offset=0.0, reference_date=None))
    """  # noqa: E501

    name: str
    """Channel name."""
    unit: str = ""
    """Physical unit after calibration."""
    range: RangeLike = None
    """Valid physical range ``(min, max)``, NaN where unbounded."""
    calibration: Calibration = field(default_factory=Calibration)
    """Raw to physical conversion."""

    def __post_init__(self) -> None:
        check_channel_name(self.name)
        if not isinstance(self.unit, str):
            raise ChannelError(
                f"unit of channel {self.name!r} must be a str; got {self.unit!r}. "
                "Use '' for no unit."
            )
        if any(unicodedata.category(c) in ("Cc", "Cs") for c in self.unit):
            raise ChannelError(
                f"unit {self.unit!r} of channel {self.name!r} contains control characters or lone "
                "surrogates (text decoded from bytes that were not UTF-8). Remove them, or decode "
                "the unit's bytes with the right codec, e.g. unit_bytes.decode('latin-1')."
            )
        object.__setattr__(self, "range", self._normalise_range(self.range))
        if not isinstance(self.calibration, Calibration):
            raise ChannelError(
                f"calibration of channel {self.name!r} must be a daqlab.Calibration; "
                f"got {self.calibration!r}. Use Calibration(slope, offset)."
            )

    def _normalise_range(self, rng: Any) -> tuple[float, float]:
        if rng is None:
            return (math.nan, math.nan)
        try:
            lo, hi = rng
        except (TypeError, ValueError):
            raise ChannelError(
                f"range of channel {self.name!r} must be a (min, max) pair; got {rng!r}. "
                "Use e.g. range=(-10.0, 10.0), or None for no range."
            ) from None
        out: list[float] = []
        for v in (lo, hi):
            try:
                f = math.nan if v is None else as_float(v)
            except (TypeError, ValueError):
                raise ChannelError(
                    f"range of channel {self.name!r} must hold numbers or None; got {rng!r}. "
                    "Use e.g. range=(-10.0, 10.0), or None for an open end."
                ) from None
            # one NaN object for every open end, so that equal channels compare equal
            out.append(math.nan if math.isnan(f) else f)
        lo_f, hi_f = out
        if (math.isinf(lo_f) and lo_f > 0) or (math.isinf(hi_f) and hi_f < 0):
            raise ChannelError(
                f"range of channel {self.name!r} is {rng!r}: min cannot be +inf nor max -inf. "
                "Use None (or NaN) for an open end."
            )
        if not math.isnan(lo_f) and not math.isnan(hi_f) and lo_f >= hi_f:
            raise ChannelError(
                f"range of channel {self.name!r} has min >= max ({lo_f!r} >= {hi_f!r}). "
                "Give (min, max) with min < max, or None for an open end."
            )
        return (lo_f, hi_f)

    @property
    def range_min(self) -> float:
        """Lower end of the valid range (NaN when unbounded)."""
        assert self.range is not None
        return self.range[0]  # type: ignore[return-value]

    @property
    def range_max(self) -> float:
        """Upper end of the valid range (NaN when unbounded)."""
        assert self.range is not None
        return self.range[1]  # type: ignore[return-value]


ChannelLike: TypeAlias = Channel | str


def to_channels(
    channels: Iterable[ChannelLike] | ChannelLike | int | np.integer[Any], *, what: str = "channels"
) -> tuple[Channel, ...]:
    """Normalise channel names/objects (or a count) into unique :class:`Channel` objects.

    An ``int`` ``n`` gives channels ``ch0 .. ch{n-1}``.

    >>> [c.name for c in to_channels(["a", Channel("b", "V")])]
    ['a', 'b']
    """
    if isinstance(channels, bool):
        raise ChannelError(f"{what} must be channel names, Channel objects or a count; got a bool.")
    if isinstance(channels, (int, np.integer)):
        if channels < 1:
            raise ChannelError(
                f"{what}: a channel count must be >= 1; got {channels}. Pass e.g. 8."
            )
        return tuple(Channel(f"ch{i}") for i in range(int(channels)))
    if isinstance(channels, (str, Channel)):
        channels = [channels]
    out: list[Channel] = []
    for c in channels:
        if isinstance(c, Channel):
            out.append(c)
        elif isinstance(c, str):
            out.append(Channel(c))
        else:
            raise ChannelError(
                f"{what} must hold channel names (str) or daqlab.Channel objects; "
                f"got {shown(c)} ({type(c).__name__})."
                + (" Numbers here often mean values and channels were swapped: the call is "
                   "make_run(values, channels, sample_rate=...)." if is_real(c) or hasattr(c, "__len__")
                   else "")
            )
    if not out:
        raise ChannelError(f"{what} is empty; give at least one channel, e.g. ['ai0'].")
    names = [c.name for c in out]
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
        raise ChannelError(
            f"{what} has duplicate names {dups}; every channel name must be unique. "
            "Rename the duplicates, e.g. 'ai0' and 'ai0_2'."
        )
    return tuple(out)
