"""A source fed by a driver's callback: ``feed(values, times=None)`` from any thread."""

from __future__ import annotations

import collections
import datetime as _dt
import threading
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from daqlab.errors import ConfigurationError, ShapeError, SourceError
from daqlab.model import ChannelLike, Quality, to_channels
from daqlab.run import check_sample_rate, sample_times
from daqlab.sources._base import SourceBase
from daqlab.sources._protocol import Samples

__all__ = ["Push"]


class Push(SourceBase):
    """A source whose samples are pushed in by a driver through :meth:`feed`.

    ``feed`` is thread-safe and never blocks: blocks wait in a queue bounded to
    ``max_pending`` samples (default 10 s worth) until the acquisition thread
    reads them; a feed that would overflow it raises :class:`~daqlab.SourceError`
    and keeps nothing of that block, so the driver knows exactly what was refused.
    Samples fed without ``times`` are stamped ``t0 + k / sample_rate`` from
    ``start()``. :meth:`close` ends the stream once the queue is drained.

    Examples
    --------
    >>> src = Push(["x", "y"], 100.0)
    >>> src.start()
    >>> src.feed([[1.0, 2.0], [3.0, 4.0]])
    >>> src.read(timeout=0.1).values.tolist()
    [[1.0, 2.0], [3.0, 4.0]]
    """

    def __init__(
        self,
        channels: Iterable[ChannelLike] | int,
        sample_rate: float,
        *,
        max_pending: int | None = None,
        name: str = "",
        wall_clock: Callable[[], _dt.datetime] | None = None,
    ) -> None:
        super().__init__(to_channels(channels), check_sample_rate(sample_rate), name=name,
                         wall_clock=wall_clock)
        self.max_pending = int(max_pending) if max_pending is not None else max(1, round(10 * self._rate))
        if self.max_pending < 1:
            raise ConfigurationError(f"max_pending must be >= 1 sample; got {max_pending!r}.")
        self._cond = threading.Condition()
        self._queue: collections.deque[Samples] = collections.deque()
        self._pending = 0
        self._fed = 0
        self._last_time: int | None = None
        self._closed = False
        self._stopped = False
        self.refused = 0
        """Samples refused by :meth:`feed` because the queue was full."""

    @property
    def finished(self) -> bool:
        with self._cond:
            return (self._closed or self._stopped) and not self._queue

    def start(self) -> None:
        with self._cond:
            super().start()

    def feed(
        self, values: ArrayLike, times: ArrayLike | None = None, quality: ArrayLike | None = None
    ) -> None:
        """Queue ``(channels, n)`` values (or ``(channels,)`` for one sample)."""
        v = np.array(values, dtype=np.float64)  # a copy: the driver may reuse its buffer
        c = len(self._channels)
        if v.ndim == 1 and v.shape[0] == c:
            v = v[:, np.newaxis]
        if v.ndim != 2 or v.shape[0] != c:
            raise ShapeError(f"feed takes (channels, n) with {c} channel(s); got shape {v.shape}.")
        n = v.shape[1]
        q = None
        if quality is not None:
            q = np.array(quality, dtype=np.int8).reshape(v.shape)
            if q.size and (q.min() < 0 or q.max() > max(Quality)):
                raise ShapeError("quality must hold daqlab.Quality values 0..3.")
        with self._cond:
            if not self._started:
                raise SourceError("feed() before start(): start the DataManager (or source) first.")
            if self._closed or self._stopped:
                raise SourceError("this Push source is closed; it takes no more samples.")
            if self._pending + n > self.max_pending:
                self.refused += n
                raise SourceError(
                    f"queue full: {self._pending} samples wait and this block has {n}, more than "
                    f"max_pending={self.max_pending}. Acquisition is not running or not keeping up."
                )
            if times is None:
                t = sample_times(self._t0_ns, self._fed, n, self._rate).view(np.int64)
                if n and self._last_time is not None and t[0] < self._last_time:
                    # timed feeds ran ahead of the nominal clock: continue after the last one
                    t = sample_times(self._last_time, 1, n, self._rate).view(np.int64)
            else:
                t = np.asarray(times)
                t = (t.astype("datetime64[ns]").view(np.int64) if t.dtype.kind == "M"
                     else t.astype(np.int64))
                if t.shape != (n,):
                    raise ShapeError(f"times must have shape ({n},); got {t.shape}.")
                if (n > 1 and (t[1:] < t[:-1]).any()) or (  # compared: a difference can overflow
                    n and self._last_time is not None and t[0] < self._last_time
                ):
                    raise ShapeError("times must be non-decreasing, also across feeds.")
            if n:
                self._last_time = int(t[-1])
            self._queue.append(Samples(v, t.view("datetime64[ns]"), q))
            self._pending += n
            self._fed += n
            self._cond.notify_all()

    def read(self, timeout: float) -> Samples | None:
        with self._cond:
            self._cond.wait_for(lambda: self._queue or self._closed or self._stopped, timeout)
            if not self._queue:
                return None
            blocks = list(self._queue)
            self._queue.clear()
            self._pending = 0
        if len(blocks) == 1:
            return blocks[0]
        c = len(self._channels)
        qual = [b.quality if b.quality is not None else np.zeros((c, len(b)), np.int8) for b in blocks]
        return Samples(
            np.concatenate([b.values for b in blocks], axis=1),
            np.concatenate([b.times for b in blocks]),
            None if all(b.quality is None for b in blocks) else np.concatenate(qual, axis=1),
        )

    def close(self) -> None:
        """No more samples will come: the source finishes once the queue is read."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def stop(self) -> None:
        super().stop()
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def describe(self) -> dict[str, Any]:
        return {"type": "daqlab.sources.Push", "sample_rate": self._rate,
                "channels": [c.name for c in self._channels], "max_pending": self.max_pending}
