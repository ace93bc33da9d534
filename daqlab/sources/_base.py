"""Plumbing shared by daqlab's own sources: channels, rate, injectable time, start and stop."""

from __future__ import annotations

import datetime as _dt
import threading
import time
from collections.abc import Callable

import numpy as np

from daqlab.checks import flag
from daqlab.errors import ConfigurationError, SourceError
from daqlab.model import Channel, to_datetime64

__all__ = ["SourceBase", "check_flag"]


def check_flag(label: str, value: object) -> bool:
    """``value`` if it is a bool; a :class:`~daqlab.ConfigurationError` otherwise.

    ``bool("no")`` is True: a flag given as text or a number is refused, not guessed.
    """
    return flag(value, label)


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
        if not isinstance(name, str):
            raise ConfigurationError(f"name must be a str; got {name!r} ({type(name).__name__}).")
        for label, fn in (("clock", clock), ("sleep", sleep), ("wall_clock", wall_clock)):
            if fn is not None and not callable(fn):
                raise ConfigurationError(
                    f"{label} must be a callable (or left out for the default); got {fn!r}. "
                    "Pass e.g. clock=time.monotonic, sleep=time.sleep, "
                    "wall_clock=lambda: datetime.datetime.now(datetime.UTC)."
                )
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
        now = self._wall_clock()
        t0 = to_datetime64(now, what="wall_clock()")
        if np.isnat(t0):  # sample 0 would be stamped NaT, and no run may hold one
            raise ConfigurationError(f"wall_clock() must return the current UTC time; got {now!r}.")
        self._t0_ns = int(t0.astype(np.int64))
        self._t0_mono = self._clock()
        self._started = True

    def stop(self) -> None:
        self._stop_event.set()

    def _check_started(self) -> None:
        if not self._started:
            raise SourceError("read() before start(): call source.start() first.")
