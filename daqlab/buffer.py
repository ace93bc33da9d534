"""A preallocated multi-channel ring buffer with independent reader cursors.

One writer pushes blocks of samples; any number of readers follow with their
own cursor. A reader that the writer laps is told exactly how many samples it
lost, and the block it reads next starts after a visible gap (its ``lost``
count and the jump in ``times``); nothing is stitched silently.
"""

from __future__ import annotations

import threading
import time
import uuid
import weakref
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr
from numpy.typing import ArrayLike, NDArray

from daqlab.errors import ConfigurationError, DataRangeError, ShapeError
from daqlab.model import Channel, ChannelLike, Quality, to_channels, to_datetime64
from daqlab.run import (
    assemble_run,
    check_sample_rate,
    flag_quality,
    run_attrs,
    sample_times,
)

__all__ = ["Block", "Reader", "RingBuffer"]

_F8 = np.dtype(np.float64)
_NS = np.dtype("datetime64[ns]")
_NAT = np.iinfo(np.int64).min


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
        if isinstance(capacity, bool) or not isinstance(capacity, (int, np.integer)) or capacity < 1:
            raise ConfigurationError(
                f"capacity must be a whole number of samples >= 1; got {capacity!r}. "
                "For 10 s at 1 kHz pass capacity=10_000."
            )
        self.capacity = int(capacity)
        self.sample_rate = check_sample_rate(sample_rate)
        c = self._c = len(self.channels)
        self._values = np.zeros((c, self.capacity), dtype=np.float64)
        self._quality = np.zeros((c, self.capacity), dtype=np.int8)
        self._times = np.zeros(self.capacity, dtype=np.int64)
        self._cond = threading.Condition(threading.Lock())
        self._written = 0
        self._first = 0  # oldest index not cleared
        self._last_time: int | None = None
        self._start_ns: int | None = (
            None if start is None else int(to_datetime64(start, what="start").astype(np.int64))
        )
        self._auto_base = 0  # index that auto-stamps count from
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

        Returns the write-counter index of the first sample pushed. ``times``
        (``datetime64`` or integer ns since the epoch, non-decreasing) default to
        ``start + k / sample_rate``. Blocks larger than the capacity keep their
        newest ``capacity`` samples.
        """
        v = values if type(values) is np.ndarray and values.dtype == _F8 else self._as_values(values)
        if v.ndim != 2 or v.shape[0] != self._c:
            v = self._reshape_values(v)
        n = v.shape[1]
        t = None if times is None else self._check_times(times, n)
        q = None if quality is None else self._check_quality(quality, v.shape)
        if self._closed:
            raise ConfigurationError("this RingBuffer is closed; create a new one to push again.")
        with self._cond:
            w = self._written
            if t is None:
                t = self._auto_times(w, n)
            elif n and self._last_time is not None and t[0] < self._last_time:
                raise ShapeError(
                    f"times must not go back: this block starts at {t[0].view('datetime64[ns]')}, "
                    f"before the last sample pushed ({np.int64(self._last_time).view('datetime64[ns]')})."
                )
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
            self._last_time = int(t[-1])
            self._written = w + n
            self._cond.notify_all()
            return w

    def _as_values(self, values: ArrayLike) -> NDArray[np.float64]:
        try:
            return np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ShapeError(f"push takes numeric values; could not convert them to float64: {exc}") from None

    def _reshape_values(self, v: NDArray[np.float64]) -> NDArray[np.float64]:
        c = self._c
        if v.ndim == 1 and v.shape[0] == c:
            return v[:, np.newaxis]
        raise ShapeError(
            f"push takes (channels,) for one sample or (channels, n) for a block, with "
            f"{c} channel(s); got shape {v.shape}."
            + (" It looks transposed: pass values.T." if v.ndim == 2 and v.shape[1] == c else "")
        )

    def _auto_times(self, w: int, n: int) -> NDArray[np.int64]:
        """``start + k / rate`` for samples ``w .. w + n - 1`` (call with the lock held)."""
        if self._start_ns is None:
            self._start_ns = time.time_ns()
            self._auto_base = w
        t = sample_times(self._start_ns, w - self._auto_base, n, self.sample_rate).view(np.int64)
        if self._last_time is not None and n and t[0] < self._last_time:
            # explicit times ran ahead of the nominal clock: continue from the last one
            self._start_ns, self._auto_base = self._last_time, w - 1
            t = sample_times(self._start_ns, 1, n, self.sample_rate).view(np.int64)
        return t

    def _check_times(self, times: ArrayLike, n: int) -> NDArray[np.int64]:
        t = times if type(times) is np.ndarray else np.asarray(times)
        if t.dtype == _NS:
            t = t.view(np.int64)
        elif t.dtype.kind == "M":
            t = t.astype("datetime64[ns]").view(np.int64)
        elif t.dtype.kind in "iu":
            t = t.astype(np.int64, copy=False)
        else:
            raise ShapeError(
                f"times must be datetime64 or integer nanoseconds since the Unix epoch; got "
                f"dtype {t.dtype}. Convert seconds with (t * 1e9).astype('int64')."
            )
        if t.shape != (n,):
            t = np.atleast_1d(t)
            if t.shape != (n,):
                raise ShapeError(f"times must have shape ({n},), one per sample; got {t.shape}.")
        if n > 1 and (t[1:] < t[:-1]).any():
            raise ShapeError("times must be non-decreasing within a block; sort the block first.")
        # NaT is the smallest int64: in a non-decreasing block it can only hide at the front
        if n and t[0] == _NAT:
            raise ShapeError("times hold NaT; every sample needs a timestamp.")
        return t

    def _check_quality(self, quality: ArrayLike, shape: tuple[int, ...]) -> NDArray[np.int8]:
        q = np.asarray(quality)
        if q.ndim == 1 and shape[1] == 1:
            q = q[:, np.newaxis]
        if q.shape != shape:
            raise ShapeError(f"quality must have the shape of values {shape}; got {q.shape}.")
        if q.dtype.kind not in "iu" or (q.size and (q.min() < 0 or q.max() > max(Quality))):
            raise ShapeError(
                f"quality must hold integers {[int(x) for x in Quality]} (daqlab.Quality)."
            )
        return q.astype(np.int8, copy=False)

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
        if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0):
            raise ConfigurationError(f"latest(n) takes a whole number >= 0; got {n!r}.")
        with self._cond:
            lo, hi = self._held_span()
            k = hi - lo if n is None else min(int(n), hi - lo)
            block = self._copy_out(hi - k, k)
        return self.to_run(block)

    def range(self, start: int, n: int) -> xr.Dataset:
        """Samples ``start .. start + n - 1`` (write-counter indices), as a run."""
        for label, x in (("start", start), ("n", n)):
            if isinstance(x, bool) or not isinstance(x, (int, np.integer)) or x < 0:
                raise ConfigurationError(f"range() takes whole numbers >= 0; got {label}={x!r}.")
        with self._cond:
            lo, hi = self._held_span()
            if start < lo or start + n > hi:
                raise DataRangeError(
                    f"samples {start}..{start + n - 1} are not held: this buffer holds "
                    f"{lo}..{hi - 1} (capacity {self.capacity}, {self._written} written). "
                    "Older samples were overwritten; record them with a Recorder to keep them."
                )
            block = self._copy_out(int(start), int(n))
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
        if max_samples is not None and (
            isinstance(max_samples, bool) or not isinstance(max_samples, (int, np.integer))
            or max_samples < 0
        ):
            raise ConfigurationError(f"max_samples must be a whole number >= 0 or None; got {max_samples!r}.")
        buf = self.buffer
        with buf._cond:
            lost = self._account_overrun()
            hi = buf._written
            n = hi - self.position
            if max_samples is not None:
                n = min(n, int(max_samples))
            block = buf._copy_out(self.position, n, lost)
            self.position += n
            return block

    def skip_to_latest(self, keep: int = 0) -> None:
        """Jump so that the next read returns at most the newest ``keep`` samples (lossy views)."""
        if isinstance(keep, bool) or not isinstance(keep, (int, np.integer)) or keep < 0:
            raise ConfigurationError(f"skip_to_latest(keep) takes a whole number >= 0; got {keep!r}.")
        with self.buffer._cond:
            self._skip_to(max(self.position, self.buffer._written - int(keep)))

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
