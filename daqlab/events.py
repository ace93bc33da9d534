"""Events and the bounded, never-blocking bus that delivers them.

Publishing never blocks the publisher (the acquisition thread): each
subscription has a bounded queue; when it is full the oldest event is dropped
and counted in :attr:`Subscription.missed`. Callbacks run on a thread of
their own per subscription, so a slow or failing callback cannot stall
acquisition either.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from daqlab.checks import whole
from daqlab.errors import ConfigurationError

__all__ = [
    "AcquisitionFailed",
    "BufferOverflow",
    "DatasetCreated",
    "DatasetSaved",
    "Event",
    "EventBus",
    "NewData",
    "Recorded",
    "RecordingFailed",
    "Subscription",
    "Triggered",
]


@dataclass(frozen=True)
class Event:
    """Base of every event; ``source`` names the source it concerns ('' for none)."""

    source: str


@dataclass(frozen=True)
class NewData(Event):
    """A block of ``n`` samples landed in ``source``'s buffer at write index ``start``."""

    start: int
    n: int
    first_time: np.datetime64
    last_time: np.datetime64


@dataclass(frozen=True)
class DatasetCreated(Event):
    dataset_id: str
    name: str
    channels: tuple[str, ...]


@dataclass(frozen=True)
class DatasetSaved(Event):
    """Published only after the file is complete and durable under its final name."""

    dataset_id: str
    path: Path
    n_samples: int


@dataclass(frozen=True)
class BufferOverflow(Event):
    """Reader ``reader`` was lapped: samples ``first_lost .. first_lost + lost - 1`` are gone."""

    reader: str
    lost: int
    first_lost: int
    span: tuple[np.datetime64, np.datetime64]
    """Time of the last sample before and the first sample after the gap."""


@dataclass(frozen=True)
class AcquisitionFailed(Event):
    """The source's thread stopped on ``error``; ``DataManager.stop()`` re-raises it."""

    error: BaseException


@dataclass(frozen=True)
class Recorded(Event):
    """Every sample of ``source`` before write index ``upto`` is durable in ``path``."""

    path: Path
    upto: int


@dataclass(frozen=True)
class RecordingFailed(Event):
    """The recorder could not write (disk full, folder gone); acquisition goes on."""

    path: Path
    error: BaseException


@dataclass(frozen=True)
class Triggered(Event):
    """An armed trigger made capture number ``capture`` around write index ``index`` (the
    trigger sample, at ``time``); ``triggered`` is False for auto mode's untriggered captures."""

    capture: int
    index: int
    time: np.datetime64
    triggered: bool


@dataclass(eq=False)
class Subscription:
    """A bounded queue of events from an :class:`EventBus`; iterate it or call :meth:`get`."""

    maxsize: int
    kinds: tuple[type[Event], ...] | None = None
    missed: int = 0
    """Events dropped because the queue was full."""
    callback_errors: int = 0
    """Exceptions raised by this subscription's callback (each one is skipped)."""
    _queue: collections.deque[Event] = field(default_factory=collections.deque, repr=False)
    _cond: threading.Condition = field(default_factory=threading.Condition, repr=False)
    _closed: bool = False
    _thread: threading.Thread | None = field(default=None, repr=False)
    _bus: EventBus | None = field(default=None, repr=False)

    def _put(self, event: Event) -> None:
        if self.kinds is not None and not isinstance(event, self.kinds):
            return
        with self._cond:
            if self._closed:
                return
            if len(self._queue) >= self.maxsize:
                self._queue.popleft()
                self.missed += 1
            self._queue.append(event)
            self._cond.notify()

    def get(self, timeout: float | None = None) -> Event | None:
        """The next event, waiting up to ``timeout`` s; ``None`` on timeout or when closed."""
        with self._cond:
            self._cond.wait_for(lambda: self._queue or self._closed, timeout)
            return self._queue.popleft() if self._queue else None

    def drain(self) -> list[Event]:
        """Every event queued now, without waiting."""
        with self._cond:
            out = list(self._queue)
            self._queue.clear()
            return out

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Stop receiving; a waiting :meth:`get` returns, iteration ends, a callback thread exits."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._bus is not None:
            self._bus._remove(self)
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout=5.0)

    def __iter__(self) -> Iterator[Event]:
        while True:
            ev = self.get(timeout=None)
            if ev is None:
                return
            yield ev

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventBus:
    """Fan-out of events to subscriptions; ``publish`` never blocks."""

    def __init__(self, name: str = "bus") -> None:
        self.name = name
        self._subs: list[Subscription] = []
        self._lock = threading.Lock()

    def subscribe(
        self,
        callback: Callable[[Event], Any] | None = None,
        *,
        kinds: Iterable[type[Event]] | type[Event] | None = None,
        maxsize: int = 1000,
    ) -> Subscription:
        """A new subscription; with ``callback`` it is called for each event on a thread of its own."""
        maxsize = whole(maxsize, "maxsize", minimum=1)
        if isinstance(kinds, type):
            kinds = (kinds,)
        kind_tuple = None if kinds is None else tuple(kinds)
        for k in kind_tuple or ():
            if not (isinstance(k, type) and issubclass(k, Event)):
                raise ConfigurationError(f"kinds must be Event classes (e.g. NewData); got {k!r}.")
        if callback is not None and not callable(callback):
            raise ConfigurationError(f"callback must be callable; got {callback!r}.")
        sub = Subscription(maxsize=maxsize, kinds=kind_tuple, _bus=self)
        if callback is not None:
            sub._thread = threading.Thread(
                target=self._dispatch, args=(sub, callback), daemon=True,
                name=f"daqlab-events-{self.name}-{id(sub) & 0xFFFF:04x}",
            )
            sub._thread.start()
        with self._lock:
            self._subs.append(sub)
        return sub

    @staticmethod
    def _dispatch(sub: Subscription, callback: Callable[[Event], Any]) -> None:
        for ev in sub:
            try:
                callback(ev)
            except Exception:  # a failing subscriber never breaks acquisition: count, go on
                sub.callback_errors += 1

    def _remove(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)

    def publish(self, event: Event) -> None:
        with self._lock:
            subs = list(self._subs)
        for s in subs:
            s._put(event)

    def close(self, timeout: float = 5.0) -> None:
        """Close every subscription; callback threads finish the events already queued."""
        with self._lock:
            subs = list(self._subs)
        deadline = time.monotonic() + timeout
        for s in subs:
            with s._cond:
                s._closed = True
                s._cond.notify_all()
        for s in subs:
            if s._thread is not None and s._thread is not threading.current_thread():
                s._thread.join(timeout=max(0.0, deadline - time.monotonic()))
            self._remove(s)
