"""Triggered capture from a ring buffer: ``captures = manager.arm(trigger)``.

A :class:`Captures` follows a :class:`~daqlab.RingBuffer` with a lossless reader of its own,
from ``pre`` samples before the moment it is armed, finds triggers block by block
(:class:`daqlab.trigger.Detector`) and, once the ``post`` samples after a trigger have come,
makes a capture: a run of exactly the ring's samples from ``pre`` before the trigger sample
to ``post`` from it, with the trigger's attributes (``trigger_time``, ``trigger_index`` within
the capture, ``trigger_channel``, ``trigger_level``...). Iterate the captures, or ``get`` them.

- A trigger fires only at a sample the reader saw after arming, and only once ``pre`` samples
  before it are there: the first capture may wait for them (as a scope fills its pre-trigger
  memory).
- Samples lost to the writer (the reader was lapped) are a gap: a capture that would span it is
  not made (counted in :attr:`Captures.missed`), and the trigger must be armed again after it.
- The captures waiting to be taken are bounded (``keep``); beyond, the oldest is dropped and
  counted in :attr:`Captures.dropped`.
"""

from __future__ import annotations

import collections
import contextlib
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from daqlab.buffer import Block, Reader, RingBuffer
from daqlab.checks import real, whole
from daqlab.errors import CaptureTimeout, ChannelNotFoundError, ConfigurationError, DaqlabError
from daqlab.events import Event, RecordingFailed, Triggered
from daqlab.io import CAPTURES_SUFFIX, CaptureWriter, as_path
from daqlab.trigger import Detector, Trigger

__all__ = ["Captures"]

_WAIT = 0.05  # seconds a turn waits for data at most (auto mode's deadline may be sooner)


def _ns_text(t: np.datetime64) -> str:
    return f"{np.datetime_as_string(t.astype('datetime64[ns]'), unit='ns')}Z"


class Captures:
    """The captures of one armed :class:`~daqlab.Trigger` (made by ``DataManager.arm`` or
    :meth:`arm`). Iterate it (until it is closed, a single capture is made, or the buffer is
    closed and drained), or call :meth:`get`; :meth:`close` stops it (a context manager too).

    Attributes
    ----------
    count
        Captures made so far.
    missed
        Triggers whose capture was not made: samples around them were lost (the reader was
        lapped by the writer).
    dropped
        Captures made but dropped unread because ``keep`` were waiting already.
    latest
        The newest capture made (taken or not), or None.
    """

    def __init__(self, buffer: RingBuffer, trigger: Trigger, *, keep: int = 1000, source_name: str = "",
                 publish: Callable[[Event], None] | None = None,
                 clock: Callable[[], float] = time.monotonic, record: str | os.PathLike[str] | None = None,
                 flush_interval: float = 0.25) -> None:
        if not isinstance(trigger, Trigger):
            raise ConfigurationError(f"arm() takes a daqlab.Trigger, e.g. dl.Trigger('ai0', 0.5); got "
                                     f"{type(trigger).__name__} ({trigger!r:.60}).")
        names = [c.name for c in buffer.channels]
        if trigger.channel not in names:
            raise ChannelNotFoundError(f"trigger channel {trigger.channel!r} is not in this buffer; its "
                                       f"channels are {names}.")
        self.trigger = trigger
        self.buffer = buffer
        self.source_name = source_name
        self.keep = whole(keep, "keep", minimum=1)
        self._ci = names.index(trigger.channel)
        self._detector = Detector(trigger, buffer.channels[self._ci], buffer.sample_rate)
        self.pre, self.post = self._detector.pre, self._detector.post
        self._publish = publish or (lambda ev: None)
        self._clock = clock
        self._queue: collections.deque[xr.Dataset] = collections.deque()
        self._cond = threading.Condition()
        self._history: list[Block] = []
        self._pending: list[int] = []
        self.count = self.missed = self.dropped = 0
        self.latest: xr.Dataset | None = None
        self._closed = threading.Event()
        self._done = False
        self.error: BaseException | None = None
        self.record_error: BaseException | None = None
        """Why recording the captures stopped (a full disk...), or None."""
        self.flush_interval = real(flush_interval, "flush_interval", lower=0)
        self.folder: Path | None = None
        """The folder the captures are recorded into (``record=``), or None."""
        self._writer: CaptureWriter | None = None
        self._recorded = 0
        if record is not None:
            self.folder = as_path(record, "record")
            if self.folder.suffix != CAPTURES_SUFFIX:
                self.folder = self.folder.with_name(self.folder.name + CAPTURES_SUFFIX)
            self._writer = CaptureWriter(self.folder, buffer.channels, buffer.to_run(
                Block(np.empty((len(names), 0)), np.empty((len(names), 0), np.int8),
                      np.empty(0, "datetime64[ns]"), 0)).attrs, trigger.describe(), self.pre, self.post)
        self._last_flush = self._clock()
        self._reader: Reader = buffer.reader(back=self.pre)
        self.armed_at = self._reader.origin
        """The write counter when the trigger was armed: triggers fire at samples from it on."""
        self._detector.next_allowed = max(self.armed_at, self._reader.position + self.pre)
        self._last_capture = self._clock()
        label = f"{source_name or buffer.id[:8]}-{trigger.channel}"
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"daqlab-trigger-{label}")
        self._thread.start()

    # ------------------------------------------------------------------ the thread
    def _run(self) -> None:
        try:
            while not self._closed.is_set() and not self._done:
                wait = _WAIT
                if self.trigger.mode == "auto":
                    wait = max(0.0, min(wait, self._last_capture + self.trigger.auto_after - self._clock()))
                if self._reader.wait(timeout=wait):
                    self._take(self._reader.read())
                elif self.buffer.closed and self._reader.available <= 0:
                    break
                self._auto()
                self._flush(force=False)
        except BaseException as exc:  # reported to whoever waits on the captures
            self.error = exc
        finally:
            self._reader.close()
            self._close_writer()
            with self._cond:
                self._done = True
                self._cond.notify_all()

    def _take(self, block: Block) -> None:
        if len(block) == 0:
            return
        if block.lost or (self._history and block.start != self._history[-1].stop):
            self._gap(block.start)
        self._history.append(block)
        if self.trigger.mode == "single" and (self.count or self._pending):
            found: list[int] = []
        else:
            found = self._detector.find(block.values[self._ci], block.quality[self._ci], block.start)
            if self.trigger.mode == "single":
                found = found[:1]
        self._pending.extend(found)
        end = block.stop
        while self._pending and self._pending[0] + self.post <= end:
            self._capture(self._pending.pop(0), triggered=True)
        if self.trigger.mode == "single" and self.count:
            self._done = True
        self._trim()

    def _flush(self, *, force: bool) -> None:
        """Write the captures made since the last segment, every ``flush_interval`` seconds."""
        w = self._writer
        if w is None or not w.pending:
            return
        if not force and self._clock() - self._last_flush < self.flush_interval:
            return
        self._last_flush = self._clock()
        try:
            w.flush()
        except (OSError, ValueError, DaqlabError) as exc:  # a full disk: capturing goes on in memory
            self.record_error = exc
            self._writer, self._recorded = None, w.written
            self._publish(RecordingFailed(self.source_name, w.folder, exc))
            with contextlib.suppress(Exception):
                w.close()

    def _close_writer(self) -> None:
        self._flush(force=True)
        w = self._writer
        if w is not None:
            try:
                w.close()
            except (OSError, ValueError, DaqlabError) as exc:
                self.record_error = exc
                self._publish(RecordingFailed(self.source_name, w.folder, exc))
            self._writer, self._recorded = None, w.written

    @property
    def recorded(self) -> int:
        """Captures durable in :attr:`folder` so far."""
        return self._recorded if self._writer is None else self._writer.written

    def _gap(self, resumed_at: int) -> None:
        """Samples before ``resumed_at`` were lost: drop what needs them, arm anew after."""
        self.missed += len(self._pending)
        self._pending.clear()
        self._history.clear()
        self._detector.reset()
        self._detector.next_allowed = max(self._detector.next_allowed, resumed_at + self.pre)

    def _auto(self) -> None:
        """In auto mode, capture the latest samples when no trigger came for ``auto_after`` s."""
        if self.trigger.mode != "auto" or self._pending or not self._history:
            return
        if self._clock() - self._last_capture < self.trigger.auto_after:
            return
        end = self._history[-1].stop
        if end - self._history[0].start < self.pre + self.post:
            return
        self._capture(end - self.post, triggered=False)
        self._detector.next_allowed = max(self._detector.next_allowed, end)
        self._trim()

    def _trim(self) -> None:
        """Keep only the blocks a capture may still need."""
        if not self._history:
            return
        end = self._history[-1].stop
        keep_from = min([k - self.pre for k in self._pending] + [end - self.pre - self.post])
        while self._history and self._history[0].stop <= keep_from:
            self._history.pop(0)

    def _slice(self, start: int, stop: int) -> Block:
        parts = [(b, max(start, b.start) - b.start, min(stop, b.stop) - b.start)
                 for b in self._history if b.stop > start and b.start < stop]
        values = np.concatenate([b.values[:, i:j] for b, i, j in parts], axis=1)
        quality = np.concatenate([b.quality[:, i:j] for b, i, j in parts], axis=1)
        times = np.concatenate([b.times[i:j] for b, i, j in parts])
        return Block(values, quality, times, start)

    def _capture(self, k: int, *, triggered: bool) -> None:
        block = self._slice(k - self.pre, k + self.post)
        if len(block) != self.pre + self.post:  # cannot happen: the history covers it
            self.missed += 1
            return
        run = self.buffer.to_run(block)
        number = self.count
        t = block.times[self.pre] if self.post else block.times[-1]
        trig = self.trigger
        run.attrs.update({
            "id": str(uuid.uuid4()),
            "name": f"{run.attrs.get('name') or trig.channel} capture {number}",
            "trigger_time": _ns_text(t), "trigger_index": self.pre, "trigger_sample": int(k),
            "trigger_channel": trig.channel,
            "trigger_level": list(trig.band) if trig.band else float(trig.level),  # type: ignore[arg-type]
            "trigger_edge": trig.edge, "triggered": triggered, "capture": number,
        })
        run.attrs["metadata"] = {**run.attrs.get("metadata", {}), "trigger": trig.describe()}
        self.count += 1
        self._last_capture = self._clock()
        if self._writer is not None:
            self._writer.add(run)
        with self._cond:
            self.latest = run
            self._queue.append(run)
            if len(self._queue) > self.keep:
                self._queue.popleft()
                self.dropped += 1
            self._cond.notify_all()
        self._publish(Triggered(self.source_name, number, int(k), t, triggered))

    # ------------------------------------------------------------------ taking captures
    @property
    def done(self) -> bool:
        """True once no capture will come any more (closed, single made, buffer drained)."""
        return self._done

    def __len__(self) -> int:
        """Captures made and not taken yet."""
        return len(self._queue)

    def get(self, timeout: float | None = None) -> xr.Dataset:
        """The next capture not taken yet, waiting up to ``timeout`` seconds (None: for ever).

        Raises :class:`~daqlab.CaptureTimeout` if none came in time, or none will come (closed,
        the single capture taken, the buffer closed and drained); an error of the capture
        thread is raised again here.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._queue:
                if self.error is not None:
                    raise self.error
                if self._done:
                    raise CaptureTimeout(
                        f"no more captures from the trigger on {self.trigger.channel!r}: "
                        f"{self._why_done()} ({self.count} made, all taken).")
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise CaptureTimeout(
                        f"no capture within {timeout} s from the trigger on {self.trigger.channel!r} "
                        f"at level {self.trigger.level} ({self.trigger.edge}); {self.count} made so far. "
                        "Check the level against the signal (daqlab snapshot), or use mode='auto'.")
                self._cond.wait(left)
            return self._queue.popleft()

    def _why_done(self) -> str:
        if self._closed.is_set():
            return "they were closed"
        if self.trigger.mode == "single" and self.count:
            return "a single capture was asked for"
        return "the acquisition ended"

    def __iter__(self) -> Iterator[xr.Dataset]:
        """Each capture as it is made, until no more will come."""
        while True:
            try:
                yield self.get()
            except CaptureTimeout:
                return

    def close(self, timeout: float = 10.0) -> None:
        """Stop capturing (captures made and not taken can still be taken); idempotent."""
        self._closed.set()
        self._reader.close()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)
        with self._cond:
            self._cond.notify_all()

    def finish(self, timeout: float = 10.0) -> None:
        """Let the captures read what the (closed) buffer still holds, up to ``timeout`` s, then
        close them."""
        self._thread.join(timeout)
        self.close()

    def __enter__(self) -> Captures:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<Captures of {self.trigger.channel!r} at {self.trigger.level} ({self.trigger.edge}, "
                f"{self.trigger.mode}): {self.count} made, {len(self)} waiting>")

    def describe(self) -> dict[str, Any]:
        """Counts, as JSON values."""
        return {"count": self.count, "missed": self.missed, "dropped": self.dropped,
                "waiting": len(self), "done": self.done}


def arm(buffer: RingBuffer, trigger: Trigger, **kwargs: Any) -> Captures:
    """Arm ``trigger`` on ``buffer`` (see :class:`Captures`)."""
    return Captures(buffer, trigger, **kwargs)
