"""daqlab's samples as a Lab Streaming Layer stream, so that other LSL apps see them."""

from __future__ import annotations

import builtins
import threading
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from daqlab.buffer import RingBuffer
from daqlab.checks import shown
from daqlab.errors import ConfigurationError, SourceError
from daqlab.sources._lsl import _pylsl

__all__ = ["LSLOutlet", "publish_lsl"]


class LSLOutlet:
    """A ring buffer published as an LSL stream by a thread of its own; made by :func:`publish_lsl`.

    Every sample pushed into the buffer after :meth:`start` goes out as a ``double64`` sample
    of a stream with the buffer's channels (``desc/channels/channel`` label and unit) and
    nominal rate. Timestamps go out on this machine's LSL clock: each block's newest sample is
    stamped from its UTC time through the pair of clocks read at ``start()``, and liblsl derives
    the others from the nominal rate.
    """

    def __init__(self, buffer: RingBuffer, *, name: str, type: str = "daqlab",
                 source_id: str | None = None) -> None:
        for label, text in (("name", name), ("type", type)):
            if not isinstance(text, str) or not text.strip():
                raise ConfigurationError(f"{label} must be non-empty text; got {shown(text)}.")
        if source_id is not None and (not isinstance(source_id, str) or not source_id.strip()):
            raise ConfigurationError(f"source_id must be non-empty text or None; got {shown(source_id)}.")
        self.buffer = buffer
        self.name = name
        self.source_id = source_id or f"daqlab-{buffer.id}"
        """How other apps find this stream exactly (liblsl reconnects by it too)."""
        self._lsl = _pylsl()
        info = self._lsl.StreamInfo(name, type, len(buffer.channels), buffer.sample_rate, "double64",
                                    self.source_id)
        chans = info.desc().append_child("channels")
        for ch in buffer.channels:
            node = chans.append_child("channel")
            node.append_child_value("label", ch.name)
            node.append_child_value("unit", ch.unit)
        info.desc().append_child_value("manufacturer", "daqlab")
        self._outlet: Any = self._lsl.StreamOutlet(info)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._ref = (0, 0.0)
        """(UTC ns, LSL clock) read together at ``start()``."""
        self.published = 0
        """Samples pushed into the stream so far."""
        self.lost = 0
        """Samples the buffer overwrote before this outlet could send them."""

    def start(self) -> LSLOutlet:
        """Start sending what is pushed into the buffer from now on."""
        if self._thread is not None:
            raise SourceError("this LSL outlet was started already; make a new one.")
        reader = self.buffer.reader()
        self._ref = (time.time_ns(), float(self._lsl.local_clock()))
        self._thread = threading.Thread(target=self._run, args=(reader,), daemon=True,
                                        name=f"daqlab-lsl-outlet-{self.name}")
        self._thread.start()
        return self

    def _run(self, reader: Any) -> None:
        utc0, lc0 = self._ref
        try:
            while not self._stop.is_set():
                if not reader.wait(timeout=0.05):
                    if self.buffer.closed and reader.available <= 0:
                        return
                    continue
                block = reader.read()
                self.lost += block.lost
                if not len(block):
                    continue
                last = lc0 + (int(block.times[-1].astype(np.int64)) - utc0) / 1e9
                self._outlet.push_chunk(np.ascontiguousarray(block.values.T), last)
                self.published += len(block)
        except BaseException as exc:  # kept for stop() to raise: a thread's error must not vanish
            self._error = exc
        finally:
            reader.close()

    def wait_for_consumers(self, timeout: float) -> bool:
        """Whether an inlet subscribed within ``timeout`` seconds."""
        return self._outlet is not None and bool(self._outlet.wait_for_consumers(timeout))

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop sending and take the stream off the network; raises what the sending thread hit."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise SourceError(f"the LSL outlet {self.name!r} did not stop within {timeout} s.")
        self._thread = None
        self._outlet = None  # pylsl takes the stream off the network with the object
        if self._error is not None:
            error, self._error = self._error, None
            raise SourceError(f"publishing {self.name!r} over LSL failed: {type(error).__name__}: "
                              f"{error}") from error

    def __enter__(self) -> LSLOutlet:
        return self if self._thread is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def publish_lsl(manager_or_buffer: Any, name: str | None = None, *, source: str | None = None,
                type: str = "daqlab", source_id: str | None = None) -> LSLOutlet:
    """Publish a DataManager's source (or a RingBuffer) as an LSL stream; returns it started.

    Parameters
    ----------
    manager_or_buffer
        A :class:`~daqlab.DataManager` (``source`` names which of its sources when it has
        several) or a :class:`~daqlab.RingBuffer`.
    name, type, source_id
        The stream's name (default: the source's name, or ``"daqlab"``), type and source id
        (default: ``daqlab-<buffer id>``, unique).

    Examples
    --------
    >>> import daqlab as dl
    >>> dm = dl.DataManager(dl.sources.Simulated(2, 100.0), record=False, autosave_interval=None)
    >>> with dm, publish_lsl(dm, name="doc-" + dm.buffers["src"].id) as outlet:
    ...     src = dl.sources.LSL(source_id=outlet.source_id)
    ...     [c.name for c in src.channels], src.sample_rate
    (['ch0', 'ch1'], 100.0)
    >>> src.stop()
    """
    if isinstance(manager_or_buffer, RingBuffer):
        buffer, default = manager_or_buffer, "daqlab"
    elif isinstance(getattr(manager_or_buffer, "buffers", None), Mapping):
        buffers = manager_or_buffer.buffers
        if source is None and len(buffers) == 1:
            source = next(iter(buffers))
        if source not in buffers:
            raise ConfigurationError(
                f"source={source!r}: name one of the manager's sources {list(buffers)}.")
        buffer, default = buffers[source], str(source)
    else:
        got = builtins.type(manager_or_buffer).__name__
        raise ConfigurationError(f"publish_lsl takes a DataManager or a RingBuffer; got {got}.")
    return LSLOutlet(buffer, name=default if name is None else name, type=type,
                     source_id=source_id).start()

