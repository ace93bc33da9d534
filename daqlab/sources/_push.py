"""A source fed by a driver's callback: ``feed(values, times=None)`` from any thread."""

from __future__ import annotations

import collections
import datetime as _dt
import threading
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from daqlab.blocks import Stamper, block_quality, block_times, block_values
from daqlab.checks import whole
from daqlab.errors import SourceError
from daqlab.model import ChannelLike, to_channels
from daqlab.run import check_sample_rate
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

    ``feed`` checks each block as :meth:`daqlab.RingBuffer.push` does, before it
    is queued: a block it accepts never fails the acquisition later, and one it
    refuses raises a :class:`~daqlab.DaqlabError` and leaves the stream as it was.

    Parameters
    ----------
    channels
        Names, :class:`~daqlab.Channel` objects, or a count.
    sample_rate
        Nominal rate in Hz (> 0); stamps blocks fed without ``times``.
    max_pending
        Samples the queue holds at most, a whole number >= 1 (default: 10 s worth).
    name, wall_clock
        The source's name and the UTC clock that stamps ``t0`` at ``start()``.

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
        self.max_pending = max(1, round(10 * self._rate)) if max_pending is None else whole(
            max_pending, "max_pending", minimum=1, unit="samples", note="or None for 10 s worth",
            hint="Pass e.g. max_pending=10_000.")
        self._cond = threading.Condition()
        self._queue: collections.deque[Samples] = collections.deque()
        self._pending = 0
        self._fed = 0
        self._stamper = Stamper(self._rate, what="feed")
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
            self._stamper.set_origin(self._t0_ns, self._fed)

    def feed(
        self, values: ArrayLike, times: ArrayLike | None = None, quality: ArrayLike | None = None
    ) -> None:
        """Queue ``(channels, n)`` values (or ``(channels,)`` for one sample).

        Parameters
        ----------
        values
            Real numbers (any int or float dtype; ``None`` is NaN). Copied: the
            driver may reuse its buffer. Bool, complex, text and ragged lists
            are refused.
        times
            One timestamp per sample, non-decreasing within the block and after
            the last one fed, without NaT: ``datetime64`` (any unit, within
            ``datetime64[ns]``'s range, 1677..2262) or integer nanoseconds since
            the Unix epoch. Float times are refused rather than guessed; convert
            seconds since the epoch with ``np.round(t * 1e9).astype('int64')``.
            Default: ``t0 + k / sample_rate``, continuing after the last time fed.
        quality
            :class:`~daqlab.Quality` flags (integers 0..3) in the shape of ``values``.

        Raises
        ------
        ShapeError
            The block breaks one of the rules above; nothing of it is queued.
        SourceError
            Before ``start()``, after ``close()``/``stop()``, or when the queue
            is full (the block is counted in :attr:`refused`).
        """
        c = len(self._channels)
        v = block_values(values, c, what="feed", copy=True)
        n = v.shape[1]
        given = None if times is None else block_times(times, n, what="feed", copy=True)
        q = None if quality is None else block_quality(quality, (c, n), what="feed", copy=True)
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
            t = self._stamper.stamp(given, self._fed, n)
            self._stamper.commit(t)
            self._queue.append(Samples(v, t.view("datetime64[ns]"), q))
            self._pending += n
            self._fed += n
            self._cond.notify_all()

    def read(self, timeout: float) -> Samples | None:
        with self._cond:
            self._check_started()  # as every daqlab source: not a silent None before start()
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
