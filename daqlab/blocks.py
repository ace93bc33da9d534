"""The checks and timestamps of a block of samples, shared by :meth:`RingBuffer.push
<daqlab.RingBuffer.push>` and :meth:`sources.Push.feed <daqlab.sources.Push.feed>`:
one contract for what a block may hold, and one way of stamping consecutive blocks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from daqlab.checks import is_real
from daqlab.errors import ShapeError
from daqlab.model import Quality
from daqlab.run import datetime64_ns, sample_times

__all__ = ["Stamper", "block_quality", "block_times", "block_values", "paced_times"]

_F8 = np.dtype(np.float64)
_NS = np.dtype("datetime64[ns]")
_I8 = np.dtype(np.int64)
_NAT = np.iinfo(np.int64).min
_I8_MAX = np.iinfo(np.int64).max

# Block checks shared by RingBuffer.push and sources.Push.feed: one contract for a block.
_VALUE_HINTS = {
    "b": "Bool is not a measurement; pass values.astype(float) if 0/1 is meant.",
    "c": "Samples are real numbers; pass values.real, values.imag or np.abs(values).",
    "U": "Parse the text into numbers first, e.g. np.asarray(values, dtype=float).",
    "S": "Decode and parse the bytes into numbers first.",
    "M": "Timestamps are not values; pass them as times=.",
    "m": "Durations are not values; pass e.g. values / np.timedelta64(1, 's').",
    "V": "Pass a plain numeric array, e.g. a field of the structured array.",
}
_TIME_HINTS = {
    "f": ("Float times are refused: daqlab does not guess whether they are seconds or "
          "nanoseconds. Convert seconds since the epoch with np.round(t * 1e9).astype('int64') "
          "or give datetime64 values."),
    "O": "Convert datetime objects with np.asarray(times, dtype='datetime64[ns]').",
    "U": "Parse ISO 8601 text with np.asarray(times, dtype='datetime64[ns]').",
    "S": "Decode and parse the bytes, e.g. np.asarray(times.astype(str), dtype='datetime64[ns]').",
    "m": "These are durations: add them to a start, e.g. np.datetime64('2024-01-01', 'ns') + times.",
}


def _as_array(x: ArrayLike, label: str, what: str) -> NDArray[Any]:
    if isinstance(x, np.ma.MaskedArray) and np.ma.is_masked(x):
        raise ShapeError(f"{what}: {label} must not be a masked array with masked entries; "
                         f"fill them first, e.g. {label}.filled(...).")
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as exc:  # ragged nested lists, odd objects
        raise ShapeError(
            f"{what}: {label} must be a rectangular array; numpy could not make one ({exc}). "
            "Give every row the same length (pad missing samples with NaN)."
        ) from None


def _is_real(x: object) -> bool:
    return x is None or is_real(x)


def block_values(
    values: ArrayLike, channels: int, *, what: str = "push", copy: bool = False
) -> NDArray[np.float64]:
    """``values`` as a float64 ``(channels, n)`` block, or a :class:`~daqlab.ShapeError`.

    Takes real numbers (any int or float dtype; ``None`` and masked entries become
    NaN) shaped ``(channels, n)``, or ``(channels,)`` for one sample. Refuses bool,
    complex, text, bytes, datetime values and ragged lists. A float64 array of the
    right shape is returned as is unless ``copy``; the result never shares memory
    with the input when ``copy`` is true.

    >>> block_values([1, 2], 2).tolist()
    [[1.0], [2.0]]
    """
    v: NDArray[Any]
    if isinstance(values, np.ma.MaskedArray) and values.dtype.kind in "iuf":
        v = np.ma.filled(values.astype(np.float64), np.nan)  # a masked sample is a missing one
    else:
        v = values if type(values) is np.ndarray else _as_array(values, "values", what)
    kind = v.dtype.kind
    if kind == "O":
        flat = v.ravel()
        ok = np.fromiter((_is_real(x) for x in flat), dtype=bool, count=flat.size)
        if not ok.all():
            i = int(np.argmin(ok))
            raise ShapeError(
                f"{what} takes numeric values (real numbers); got {type(flat[i]).__name__} {flat[i]!r} "
                f"at flat index {i}. Convert the values to numbers (None is taken as NaN)."
            )
        try:
            v = v.astype(np.float64)
        except OverflowError:  # an int beyond float64's range
            raise ShapeError(
                f"{what} takes values within float64's range (about +-1.8e308); got an int "
                "beyond it. Scale the values, or give them as floats (inf for out of range)."
            ) from None
    elif kind not in "iuf":
        raise ShapeError(
            f"{what} takes numeric values (an int or float dtype); got dtype {v.dtype}. "
            + _VALUE_HINTS.get(kind, "")
        )
    if v.ndim != 2 or v.shape[0] != channels:
        if v.ndim == 1 and v.shape[0] == channels:
            v = v[:, np.newaxis]
        else:
            raise ShapeError(
                f"{what} takes (channels,) for one sample or (channels, n) for a block, with "
                f"{channels} channel(s); got shape {v.shape}."
                + (" It looks transposed: pass values.T."
                   if v.ndim == 2 and v.shape[1] == channels else "")
            )
    out = v.astype(np.float64, copy=False)
    # a view of anything the caller holds (an ndarray, a memoryview, a DataArray...) is copied
    if copy and (out is values or not out.flags.owndata):
        out = out.copy()
    return out


def block_times(times: ArrayLike, n: int, *, what: str = "push", copy: bool = False) -> NDArray[np.int64]:
    """``times`` as int64 nanoseconds since the epoch, one per sample, non-decreasing, no NaT.

    Takes ``datetime64`` (any unit; dates outside ``datetime64[ns]``'s range are
    refused) or integer nanoseconds since the Unix epoch. Float times are
    refused rather than guessed: convert seconds with
    ``np.round(t * 1e9).astype('int64')``. Raises :class:`~daqlab.ShapeError`.

    >>> block_times(np.array(["2024-01-01"], "datetime64[s]"), 1).tolist()
    [1704067200000000000]
    """
    src = times if type(times) is np.ndarray else _as_array(times, "times", what)
    dtype = src.dtype
    t = src.view(np.int64) if dtype == _NS else src if dtype == _I8 else _times_as_int64(src, what)
    if t.shape != (n,):
        t = np.atleast_1d(t)
        if t.shape != (n,):
            raise ShapeError(f"{what}: times must have shape ({n},), one per sample; got {t.shape}.")
    if n > 1:
        back = t[1:] < t[:-1]  # compared, not subtracted: a difference can overflow int64
        if back.any():
            if (t == _NAT).any():
                raise ShapeError(f"{what}: times hold NaT; every sample needs a timestamp.")
            i = int(np.argmax(back))
            raise ShapeError(
                f"{what}: times must be non-decreasing within a block; sample {i + 1} "
                f"({t[i + 1:i + 2].view(_NS)[0]}) is before sample {i} ({t[i:i + 1].view(_NS)[0]}). "
                "Sort the block by time first."
            )
    # NaT is the smallest int64: in a non-decreasing block it can only hide at the front
    if n and t[0] == _NAT:
        raise ShapeError(f"{what}: times hold NaT; every sample needs a timestamp.")
    if copy and (t is times or not t.flags.owndata):
        t = t.copy()
    return t


def _times_as_int64(t: NDArray[Any], what: str) -> NDArray[np.int64]:
    kind = t.dtype.kind
    if kind == "M":
        return datetime64_ns(t, what="times").view(np.int64)
    if kind == "i":
        return t.astype(np.int64, copy=False)
    if kind == "u":
        if t.size and int(t.max()) > _I8_MAX:
            raise ShapeError(
                f"{what}: integer times are nanoseconds since the epoch and must fit int64; got "
                f"{int(t.max())}, past datetime64[ns]'s end (2262-04-11). Check the unit."
            )
        return t.astype(np.int64)
    raise ShapeError(
        f"{what}: times must be datetime64 or integer nanoseconds since the Unix epoch; "
        f"got dtype {t.dtype}. " + _TIME_HINTS.get(kind, "")
    )


def block_quality(
    quality: ArrayLike, shape: tuple[int, int], *, what: str = "push", copy: bool = False
) -> NDArray[np.int8]:
    """``quality`` as int8 flags 0..3 (:class:`~daqlab.Quality`) of the values' ``shape``.

    ``(channels,)`` is taken for a one-sample block. Raises :class:`~daqlab.ShapeError`.
    The result is a new array unless ``quality`` was an int8 array already and not ``copy``.
    """
    q = quality if type(quality) is np.ndarray else _as_array(quality, "quality", what)
    if q.ndim == 1 and shape[1] == 1 and q.shape[0] == shape[0]:
        q = q[:, np.newaxis]
    if q.shape != shape:
        raise ShapeError(f"{what}: quality must have the shape of values {shape}; got {q.shape}.")
    allowed = [int(x) for x in Quality]
    if q.dtype.kind not in "iu":
        raise ShapeError(
            f"{what}: quality must hold integers {allowed} (daqlab.Quality); got dtype {q.dtype}. "
            "Pass e.g. np.full(values.shape, daqlab.Quality.GOOD, dtype='int8')."
        )
    if q.size and (q.min() < 0 or q.max() > max(allowed)):
        bad = np.unique(q[(q < 0) | (q > max(allowed))])[:5].tolist()
        raise ShapeError(f"{what}: quality must hold integers {allowed} (daqlab.Quality); got {bad}.")
    out = q.astype(np.int8, copy=False)
    # a view of anything the caller holds is copied (as block_values does)
    if copy and (out is quality or not out.flags.owndata):
        out = out.copy()
    return out


def paced_times(start_ns: int, first_index: int, n: int, sample_rate: float,
                *, what: str = "push") -> NDArray[np.int64]:
    """int64 stamps ``start + k / rate`` for ``k = first_index ..``; ShapeError past the year 2262."""
    if n and start_ns + (first_index + n) * (1e9 / sample_rate) > _I8_MAX:
        raise ShapeError(
            f"{what}: stamping {n} sample(s) at {sample_rate} Hz after "
            f"{np.int64(start_ns).view(_NS)} would pass datetime64[ns]'s end (2262-04-11); "
            "give explicit times, or check the times given before."
        )
    return sample_times(start_ns, first_index, n, sample_rate).view(np.int64)


class Stamper:
    """Timestamps of the consecutive blocks of one stream (its owner calls it under its lock).

    Given times are checked not to go back across blocks; missing ones are
    ``origin + k / rate`` for the stream's sample index ``k``, on one grid (no
    rounding adds up from block to block). When given times ran ahead of that
    grid, the grid moves to continue right after the last of them. The origin is
    set by :meth:`set_origin`, or by the first untimed block from ``now_ns()``.
    """

    def __init__(self, sample_rate: float, *, what: str = "push",
                 now_ns: Callable[[], int] = time.time_ns) -> None:
        self.rate, self.what, self._now_ns = sample_rate, what, now_ns
        self.last: int | None = None
        """The last time stamped or given (int64 ns), None before any sample."""
        self.origin: int | None = None
        self._base = 0  # the sample index the origin stamps
        self._stop = 0  # the index whose stamp would pass int64 ns: one comparison per block

    def set_origin(self, origin_ns: int, index: int = 0) -> None:
        """Untimed samples count from ``origin_ns`` at sample ``index``."""
        self.origin, self._base = origin_ns, index
        self._stop = index + int((_I8_MAX - origin_ns) * self.rate / 1e9)

    def stamp(self, given: NDArray[np.int64] | None, index: int, n: int) -> NDArray[np.int64]:
        """The times of samples ``index .. index + n - 1``: ``given`` checked, or on the grid.

        Raises :class:`~daqlab.ShapeError` for given times that start before the last one,
        or for stamps past datetime64[ns]'s end. Call :meth:`commit` once the block is kept.
        """
        if given is not None:
            if n and self.last is not None and given[0] < self.last:
                raise ShapeError(
                    f"{self.what}: times must not go back (be non-decreasing), also across "
                    f"blocks; this block starts at {given[:1].view(_NS)[0]}, before the last sample "
                    f"({np.int64(self.last).view(_NS)})."
                )
            return given
        if self.origin is None:
            self.set_origin(self._now_ns(), index)
        assert self.origin is not None
        if index + n > self._stop:  # past 2262: paced_times raises, naming it
            paced_times(self.origin, index - self._base, n, self.rate, what=self.what)
        t = sample_times(self.origin, index - self._base, n, self.rate).view(np.int64)
        if n and self.last is not None and t[0] < self.last:
            # given times ran ahead of the grid: continue right after the last of them
            t = paced_times(self.last, 1, n, self.rate, what=self.what)
            self.set_origin(self.last, index - 1)
        return t

    def commit(self, times: NDArray[np.int64]) -> None:
        """Note the times of a block that was kept."""
        if times.size:
            self.last = int(times[-1])
