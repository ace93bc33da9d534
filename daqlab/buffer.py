"""A preallocated multi-channel ring buffer with independent reader cursors.

One writer pushes blocks of samples; any number of readers follow with their
own cursor. A reader that the writer laps is told exactly how many samples it
lost, and the block it reads next starts after a visible gap (its ``lost``
count and the jump in ``times``); nothing is stitched silently.
"""

from __future__ import annotations

import copy
import threading
import uuid
import weakref
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr
from numpy.typing import ArrayLike, NDArray

from daqlab.blocks import Stamper, block_quality, block_times, block_values
from daqlab.checks import as_float, whole
from daqlab.errors import ConfigurationError, DataRangeError
from daqlab.model import Channel, ChannelLike, to_channels, to_datetime64
from daqlab.run import (
    assemble_run,
    check_metadata,
    check_sample_rate,
    flag_quality,
    run_attrs,
)

__all__ = ["Block", "Reader", "RingBuffer"]

_F8 = np.dtype(np.float64)
_NS = np.dtype("datetime64[ns]")
_I8 = np.dtype(np.int64)
_NAT = np.iinfo(np.int64).min
_I8_MAX = np.iinfo(np.int64).max

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

    def add_metadata(self, extra: Mapping[str, Any]) -> None:
        """Merge ``extra`` (JSON values) into the metadata of the runs this buffer gives from
        now on (what a source measured while running, e.g. LSL's clock offsets).

        >>> buf = RingBuffer(1, 4, 10.0, metadata={"operator": "Ada"})
        >>> buf.add_metadata({"offsets": [0.5]})
        >>> buf.metadata
        {'operator': 'Ada', 'offsets': [0.5]}
        """
        merged = check_metadata({**self._attrs["metadata"], **dict(extra)})
        self._attrs = {**self._attrs, "metadata": merged}  # one assignment: readers see either

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

    def reader(self, *, from_oldest: bool = False, back: int = 0) -> Reader:
        """A new reader whose cursor starts at the next sample (or the oldest held), or ``back``
        samples before the next one (as many of them as are held). Its :attr:`Reader.origin` is
        the write counter when it was made."""
        back = whole(back, "reader(back=...)")
        with self._cond:
            lo, hi = self._held_span()
            r = Reader(self, lo if from_oldest else max(lo, hi - back))
            r.origin = hi
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
        self.origin = position
        """The write counter when the reader was made (samples from it on are new to it)."""
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
