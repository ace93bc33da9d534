"""Plumbing shared by daqlab's own sources: channels, rate, injectable time, start and stop."""

from __future__ import annotations

import datetime as _dt
import threading
import time
from collections.abc import Callable

import numpy as np

from daqlab.errors import SourceError
from daqlab.model import Channel, to_datetime64

__all__ = ["SourceBase"]


class SourceBase:
    """Base of the built-in sources (a user's own source only needs the ``Source`` protocol).

    Holds the channels and rate, the injectable clocks (a monotonic ``clock`` in
    seconds, a ``sleep`` that ``stop()`` interrupts, the UTC ``wall_clock`` that
    stamps ``t0``) and the start/stop state. Subclasses add ``read``,
    ``finished`` and ``describe``.
    """

    def __init__(
        self,
        channels: tuple[Channel, ...],
        sample_rate: float,
        *,
        name: str = "",
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] | None = None,
        wall_clock: Callable[[], _dt.datetime] | None = None,
    ) -> None:
        self._channels = channels
        self._rate = sample_rate
        self.name = name
        self._clock = clock
        self._stop_event = threading.Event()
        self._sleep = sleep if sleep is not None else self._stop_event.wait
        self._wall_clock = wall_clock or (lambda: _dt.datetime.now(_dt.UTC))
        self._started = False
        self._t0_ns = 0
        """UTC time of ``start()`` in ns since the epoch: sample 0's timestamp."""
        self._t0_mono = 0.0
        """``clock()`` at ``start()``: pacing counts from here."""

    @property
    def channels(self) -> tuple[Channel, ...]:
        return self._channels

    @property
    def sample_rate(self) -> float:
        return self._rate

    def start(self) -> None:
        if self._started:
            raise SourceError(f"this {type(self).__name__} source was started already; make a new one.")
        self._t0_ns = int(to_datetime64(self._wall_clock(), what="wall_clock()").astype(np.int64))
        self._t0_mono = self._clock()
        self._started = True

    def stop(self) -> None:
        self._stop_event.set()

    def _check_started(self) -> None:
        if not self._started:
            raise SourceError("read() before start(): call source.start() first.")
