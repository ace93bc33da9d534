"""A preallocated multi-channel ring buffer with independent reader cursors.

One writer pushes blocks of samples; any number of readers follow with their
own cursor. A reader that the writer laps is told exactly how many samples it
lost, and the block it reads next starts after a visible gap (its ``lost``
count and the jump in ``times``); nothing is stitched silently.
"""

from __future__ import annotations

import copy
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr
from numpy.typing import ArrayLike, NDArray

from daqlab.checks import as_float, is_real, whole
from daqlab.errors import ConfigurationError, DataRangeError, ShapeError
from daqlab.model import Channel, ChannelLike, Quality, to_channels, to_datetime64
from daqlab.run import (
    assemble_run,
    check_sample_rate,
    datetime64_ns,
    flag_quality,
    run_attrs,
    sample_times,
)

__all__ = ["Block", "Reader", "RingBuffer", "block_quality", "block_times", "block_values", "paced_times"]

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


@dataclass(frozen=True, eq=False)
class Block:
    """Samples copied out of a :class:`RingBuffer` (never views into it)."""

    values: NDArray[np.float64]
    """``(channels, n)`` raw values."""
    quality: NDArray[np.int8]
    """``(channels, n)`` quality flags as pushed (range/NaN flags are added by :meth:`to_run`)."""
    times: NDArray[np.datetime64]
    """``(n,)`` timestamps, ``datetime64[ns]`` UTC."""
    start: int
    """Write-counter index of the first sample."""
    lost: int = 0
    """Samples the reader lost to the writer just before this block (0 when none)."""

    def __len__(self) -> int:
        return int(self.times.shape[0])

    @property
    def stop(self) -> int:
        """Write-counter index one past the last sample."""
        return self.start + len(self)


class RingBuffer:
    """Fixed-capacity storage for the latest samples of a set of channels.

    Parameters
    ----------
    channels
        Channel names, :class:`~daqlab.Channel` objects, or a count.
    capacity
        Samples held per channel (>= 1).
    sample_rate
        Nominal rate in Hz; used to stamp samples pushed without times.
    start
        Timestamp of sample 0 for pushes without times (default: the wall
        clock at the first such push).
    name, metadata
        Carried into the runs this buffer returns.

    Examples
    --------
    >>> rb = RingBuffer(["a", "b"], capacity=4, sample_rate=10.0, start="2024-01-01")
    >>> rb.push(np.arange(12.0).reshape(2, 6))
    0
    >>> len(rb), rb.written
    (4, 6)
    >>> rb.latest(2).value.values.tolist()
    [[4.0, 5.0], [10.0, 11.0]]
    """

    def __init__(
        self,
        channels: Iterable[ChannelLike] | int,
        capacity: int,
        sample_rate: float,
        *,
        start: Any = None,
        name: str = "",
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        self.channels: tuple[Channel, ...] = to_channels(channels)
        self.capacity = whole(capacity, "capacity", minimum=1, unit="samples",
                              hint="For 10 s at 1 kHz pass capacity=10_000.")
        self.sample_rate = check_sample_rate(sample_rate)
        c = self._c = len(self.channels)
        try:
            self._values = np.zeros((c, self.capacity), dtype=np.float64)
            self._quality = np.zeros((c, self.capacity), dtype=np.int8)
            self._times = np.zeros(self.capacity, dtype=np.int64)
        except (MemoryError, ValueError):  # ValueError: numpy's "array is too big"
            raise ConfigurationError(
                f"capacity={self.capacity} samples x {c} channel(s) needs "
                f"{as_float((9 * c + 8) * self.capacity) / 1e9:.3g} GB, more than this machine can give. "
                "Lower capacity (a few seconds' worth is enough) and record to keep the rest."
            ) from None
        self._cond = threading.Condition(threading.Lock())
        self._written = 0
        self._first = 0  # oldest index not cleared
        self._stamper = Stamper(self.sample_rate)
        if start is not None:
            t0 = to_datetime64(start, what="start")
            if np.isnat(t0):
                raise ConfigurationError(
                    f"start must be a date, not NaT; got {start!r}. Leave it out (None) to "
                    "start at the wall-clock time of the first push."
                )
            self._stamper.set_origin(int(t0.astype(np.int64)), 0)
        self._closed = False
        self._overflow = 0
        self._readers: weakref.WeakSet[Reader] = weakref.WeakSet()
        self._attrs = run_attrs(
            id=None, name=name, description="", created_at=None,
            sample_rate=self.sample_rate, metadata=metadata, calibrated=False,
        )
        self.id: str = self._attrs["id"]

    # ------------------------------------------------------------------ state
    def __len__(self) -> int:
        with self._cond:
            return self._held_span()[1] - self._held_span()[0]

    def __repr__(self) -> str:
        names = [c.name for c in self.channels]
        return (f"RingBuffer(channels={names}, capacity={self.capacity}, "
                f"sample_rate={self.sample_rate}, written={self._written})")

    @property
    def written(self) -> int:
        """Samples pushed since creation: the monotonic write counter."""
        return self._written

    @property
    def first_index(self) -> int:
        """Write-counter index of the oldest sample still held."""
        with self._cond:
            return self._held_span()[0]

    @property
    def overflow_count(self) -> int:
        """Samples lost by all readers together because the writer lapped them."""
        return self._overflow

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called: readers drain what is left, then stop."""
        return self._closed

    @property
    def metadata(self) -> dict[str, Any]:
        """The metadata this buffer's runs carry (a copy: changing it changes nothing here).

        >>> RingBuffer(1, 4, 10.0, metadata={"operator": "Ada"}).metadata
        {'operator': 'Ada'}
        """
        return copy.deepcopy(self._attrs["metadata"])

    def _held_span(self) -> tuple[int, int]:
        return max(self._first, self._written - self.capacity), self._written

    # ------------------------------------------------------------------ writing
    def push(
        self,
        values: ArrayLike,
        times: ArrayLike | None = None,
        quality: ArrayLike | None = None,
    ) -> int:
        """Append one sample ``(channels,)`` or a block ``(channels, n)``.

        Returns the write-counter index of the first sample pushed. ``values`` are
        real numbers (int or float; bool, complex and text are refused).
        ``times`` are ``datetime64`` (any unit within ``datetime64[ns]``'s range)
        or integer ns since the epoch, non-decreasing, without NaT; float times
        are refused (seconds: ``np.round(t * 1e9).astype('int64')``). They
        default to ``start + k / sample_rate``. ``quality`` holds
        :class:`~daqlab.Quality` flags 0..3 in the shape of ``values``. A block
        that fails a check raises :class:`~daqlab.ShapeError` and leaves the
        buffer as it was. Blocks larger than the capacity keep their newest
        ``capacity`` samples.
        """
        if (type(values) is np.ndarray and values.dtype == _F8 and values.ndim == 2
                and values.shape[0] == self._c):
            v = values  # the fast path: no conversion, no copy
        else:
            v = block_values(values, self._c)
        n = v.shape[1]
        t = None if times is None else block_times(times, n)
        q = None if quality is None else block_quality(quality, (self._c, n))
        if self._closed:
            raise ConfigurationError("this RingBuffer is closed; create a new one to push again.")
        with self._cond:
            w = self._written
            t = self._stamper.stamp(t, w, n)
            if n == 0:
                return w
            cap = self.capacity
            if n > cap:  # only the newest samples fit
                v, t = v[:, n - cap :], t[n - cap :]
                q = None if q is None else q[:, n - cap :]
            k = v.shape[1]
            pos = (w + n - k) % cap
            end = pos + k
            if end <= cap:  # the common case: one slice per array, no wrap
                self._values[:, pos:end] = v
                self._times[pos:end] = t
                self._quality[:, pos:end] = 0 if q is None else q
            else:
                first = cap - pos
                self._values[:, pos:] = v[:, :first]
                self._values[:, : k - first] = v[:, first:]
                self._times[pos:] = t[:first]
                self._times[: k - first] = t[first:]
                self._quality[:, pos:] = 0 if q is None else q[:, :first]
                self._quality[:, : k - first] = 0 if q is None else q[:, first:]
            self._stamper.commit(t)
            self._written = w + n
            self._cond.notify_all()
            return w

    def clear(self) -> None:
        """Drop every sample held. The write counter goes on; readers skip the dropped span.

        A reader the writer had lapped before the clear is still told what it lost.
        """
        with self._cond:
            for r in list(self._readers):
                r._account_overrun()
                r._skip_to(self._written)
            self._first = self._written

    def close(self) -> None:
        """Mark the stream finished: readers drain what is held, then stop waiting."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # ------------------------------------------------------------------ reading
    def _copy_out(self, start: int, n: int, lost: int = 0) -> Block:
        pos = start % self.capacity
        first = min(n, self.capacity - pos)

        def take(a: NDArray[Any]) -> NDArray[Any]:
            if first == n:
                return a[..., pos : pos + n].copy()
            return np.concatenate([a[..., pos:], a[..., : n - first]], axis=-1)

        return Block(
            take(self._values), take(self._quality), take(self._times).view("datetime64[ns]"),
            start, lost,
        )

    def to_run(self, block: Block) -> xr.Dataset:
        """A run of ``block``'s samples, flagged (NaN/inf BAD, out of range SUSPECT)."""
        q = flag_quality(block.values, self.channels, calibrated=False, quality=block.quality)
        return assemble_run(block.values, q, block.times, self.channels, dict(self._attrs))

    def latest(self, n: int | None = None) -> xr.Dataset:
        """The newest ``n`` samples held (all held when ``None`` or more than held), as a run."""
        wanted = None if n is None else whole(n, "latest(n)", note="or None")
        with self._cond:
            lo, hi = self._held_span()
            k = hi - lo if wanted is None else min(wanted, hi - lo)
            block = self._copy_out(hi - k, k)
        return self.to_run(block)

    def range(self, start: int, n: int) -> xr.Dataset:
        """Samples ``start .. start + n - 1`` (write-counter indices), as a run."""
        start, n = whole(start, "range() start"), whole(n, "range() n")
        with self._cond:
            lo, hi = self._held_span()
            if start < lo or start + n > hi:
                raise DataRangeError(
                    f"samples {start}..{start + n - 1} are not held: this buffer holds "
                    f"{lo}..{hi - 1} (capacity {self.capacity}, {self._written} written). "
                    "Older samples were overwritten; record them with a Recorder to keep them."
                )
            block = self._copy_out(start, n)
        return self.to_run(block)

    def reader(self, *, from_oldest: bool = False) -> Reader:
        """A new reader whose cursor starts at the next sample (or the oldest held)."""
        with self._cond:
            r = Reader(self, self._held_span()[0] if from_oldest else self._written)
            self._readers.add(r)
            return r

    def subscribe(self) -> Reader:
        """A reader that wakes on new data: iterate it, or call ``wait()`` then ``read()``."""
        return self.reader()


class Reader:
    """A cursor over a :class:`RingBuffer`; made by :meth:`RingBuffer.reader`.

    ``read()`` returns the samples since the last read; if the writer lapped the
    cursor, the block's ``lost`` says how many samples were overwritten unread,
    and :attr:`lost` adds them up.
    """

    def __init__(self, buffer: RingBuffer, position: int) -> None:
        self.buffer = buffer
        self.position = position
        self.lost = 0
        """Samples lost to overruns so far."""
        self.skipped = 0
        """Samples dropped unread by ``clear()`` or :meth:`skip_to_latest`."""
        self.id = uuid.uuid4().hex[:8]
        self._closed = False

    def __repr__(self) -> str:
        return f"Reader(id={self.id!r}, position={self.position}, lost={self.lost})"

    def _skip_to(self, index: int) -> None:
        if index > self.position:
            self.skipped += index - self.position
            self.position = index

    @property
    def available(self) -> int:
        """Samples written since the cursor (some may be overwritten already)."""
        return self.buffer.written - self.position

    def _account_overrun(self) -> int:
        """Move a lapped cursor to the oldest sample held and count what it lost.

        Call with the buffer's lock held.
        """
        lo = self.buffer._held_span()[0]
        if self.position >= lo:
            return 0
        lapped_to = self.buffer._written - self.buffer.capacity
        lost = max(0, lapped_to - self.position)  # overwritten unread (not cleared)
        self.lost += lost
        self.buffer._overflow += lost
        self.position += lost
        self._skip_to(lo)  # the rest of the way was dropped by clear()
        return lost

    def read(self, max_samples: int | None = None) -> Block:
        """Copy out the samples since the last read (at most ``max_samples``); never blocks."""
        most = None if max_samples is None else whole(max_samples, "max_samples", note="or None")
        buf = self.buffer
        with buf._cond:
            lost = self._account_overrun()
            hi = buf._written
            n = hi - self.position
            if most is not None:
                n = min(n, most)
            block = buf._copy_out(self.position, n, lost)
            self.position += n
            return block

    def skip_to_latest(self, keep: int = 0) -> None:
        """Jump so that the next read returns at most the newest ``keep`` samples (lossy views)."""
        keep = whole(keep, "skip_to_latest(keep)")
        with self.buffer._cond:
            self._skip_to(max(self.position, self.buffer._written - keep))

    def wait(self, timeout: float | None = None) -> bool:
        """Block until unread samples exist (True) or timeout/closed with nothing left (False)."""
        buf = self.buffer
        with buf._cond:
            return buf._cond.wait_for(
                lambda: buf._written > self.position or buf._closed or self._closed, timeout
            ) and buf._written > self.position

    def close(self) -> None:
        """Stop this reader: a pending ``wait`` returns and iteration ends."""
        with self.buffer._cond:
            self._closed = True
            self.buffer._cond.notify_all()

    def __iter__(self) -> Iterator[Block]:
        """Blocks as they arrive, until the reader or the buffer is closed and drained."""
        while True:
            if self.wait(timeout=0.5):
                yield self.read()
            elif self._closed or (self.buffer.closed and self.available <= 0):
                return
