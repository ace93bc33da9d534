"""Lab Streaming Layer: a stream on the lab network as a daqlab source.

pylsl (which bundles liblsl) is imported only when an :class:`LSL` source is made, so
``import daqlab`` stays light; without it that raises :class:`~daqlab.MissingExtraError`.

This module holds the source and its inlets; finding the streams and reading their info is
:mod:`daqlab.sources._lsl_resolve`.
"""

from __future__ import annotations

import copy
import datetime as _dt
import importlib
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from types import ModuleType
from typing import Any, NamedTuple

import numpy as np
import xarray as xr
from numpy.typing import NDArray

from daqlab.checks import real
from daqlab.errors import MissingExtraError, SourceError
from daqlab.model import ChannelLike, Quality
from daqlab.run import iso_utc
from daqlab.sources._base import SourceBase, check_flag
from daqlab.sources._lsl_resolve import (
    _clean,
    _criteria,
    _facts,
    _marker_criteria,
    _numeric_dtype,
    _resolve,
    _source_channels,
    _stream_rate,
    _summary,
)
from daqlab.sources._protocol import Samples
from daqlab.tree import make_events

__all__ = ["LSL", "ClockOffset"]

log = logging.getLogger(__name__)

_POLL = 0.005
"""Seconds between two looks at an empty inlet while ``read`` waits (``stop()`` ends a wait at once)."""
_MARKER_BUFLEN = 360
"""liblsl buffers 100 x this many markers of an irregular stream."""


def _pylsl() -> ModuleType:
    """The pylsl module, or a MissingExtraError naming the extra that installs it."""
    try:
        return importlib.import_module("pylsl")
    except (ImportError, OSError, RuntimeError) as exc:  # pylsl raises RuntimeError without liblsl
        raise MissingExtraError(
            f"LSL streams need the Python package 'pylsl' (with its liblsl), which could not be "
            f"imported ({exc}); install it with: pip install 'daqlab[lsl]'") from None


class ClockOffset(NamedTuple):
    """One measurement of the LSL clock offset of a stream's host (liblsl ``time_correction``)."""

    measured_at: float
    """This machine's LSL clock (``pylsl.local_clock()``, s) when it was measured."""
    offset: float
    """Seconds added to the stream's timestamps to bring them onto this machine's LSL clock."""
    first_sample: int
    """Index of the first sample (since ``start()``) stamped with this offset."""


class _Inlet:
    """One pylsl inlet and the clock offsets measured on it. Used only under the source's lock."""

    def __init__(self, lsl: ModuleType, info: Any, what: str, *, max_buflen: int, recover: bool,
                 flags: int, timeout: float) -> None:
        self.lsl = lsl
        self.what = what
        self.summary = _summary(info)
        try:
            self.inlet: Any = lsl.StreamInlet(info, max_buflen=max_buflen, recover=recover,
                                              processing_flags=flags)
            self.full = self.inlet.info(timeout)  # the resolved info has no <desc>: ask the outlet
        except RuntimeError as exc:
            raise SourceError(f"could not connect to the LSL {what} {self.summary}: {exc}. "
                              "Is its sending app still running?") from None
        self.offsets: list[ClockOffset] = []
        self.synced_at = -math.inf

    def open(self, timeout: float) -> None:
        try:
            self.sync(0, timeout)  # first: the first estimate takes a few exchanges (~0.5 s)
            self.inlet.open_stream(timeout)
        except RuntimeError as exc:
            raise SourceError(f"could not open the LSL {self.what} {self.summary}: {exc}. Is its "
                              f"sending app still running? (waited up to {timeout:g} s)") from None

    def sync(self, first_sample: int, timeout: float = 0.0) -> None:
        """Measure the clock offset (instant after the first: liblsl updates it in the background)."""
        now = float(self.lsl.local_clock())
        try:
            offset = float(self.inlet.time_correction(timeout))
        except self.lsl.util.TimeoutError:
            if not self.offsets:
                raise
            return  # keep the last estimate
        self.offsets.append(ClockOffset(now, offset, first_sample))
        self.synced_at = now

    def sync_if_due(self, first_sample: int, interval: float) -> None:
        """Measure the clock offset if ``interval`` s have passed since the last measurement."""
        if float(self.lsl.local_clock()) - self.synced_at >= interval:
            self.sync(first_sample)

    @property
    def offset(self) -> float:
        return self.offsets[-1].offset if self.offsets else 0.0

    def close(self) -> None:
        self.inlet.close_stream()
        self.inlet = None  # pylsl destroys the liblsl inlet (and its threads) with the object


def _offsets_json(offsets: Iterable[ClockOffset]) -> dict[str, list[Any]]:
    rows = list(offsets)
    return {"measured_at": [o.measured_at for o in rows], "offset": [o.offset for o in rows],
            "first_sample": [o.first_sample for o in rows]}


class LSL(SourceBase):
    """A Lab Streaming Layer stream as a source: numbers in, stamped with LSL's clock sync.

    The stream is resolved when the source is made (a DataManager needs its channels and rate
    before it starts): ``name``, ``type``, ``source_id`` and ``query`` (an XPath 1.0 predicate on
    the stream's ``<info>``, as liblsl takes) must all hold, and exactly one stream must match
    within ``timeout`` seconds, else a :class:`~daqlab.SourceError` lists the streams that are
    visible. (After the first match the resolver looks 0.5 s longer, to refuse an ambiguous one.)

    Channels are the stream's ``desc/channels/channel`` labels and units (``ch0``, ``ch1``...
    where there are none; labels that cannot name a channel are cleaned and made unique, see
    ``describe()["renamed_channels"]``), or ``channels`` when given (e.g. to add calibrations).
    ``sample_rate`` is the stream's nominal rate; an irregular stream (nominal rate 0) needs
    ``sample_rate=``, the rate to expect, which sizes daqlab's buffers; its samples keep their
    own times.

    ``start()`` subscribes: samples pushed from then on are delivered, pulled in chunks straight
    into numpy buffers. Each sample keeps the timestamp its outlet gave it, moved onto this
    machine's LSL clock with the offset liblsl measures (``time_correction``, remeasured every
    ``clock_sync_interval`` s and kept in :attr:`clock_offsets`), and from there to UTC through
    the pair of clocks read at ``start()`` (:attr:`clock_reference`)::

        utc = utc_at_start + (timestamp + offset - lsl_clock_at_start)

    Times are made non-decreasing (a timestamp earlier than the one before it is raised to it and
    counted in :attr:`adjusted_timestamps`); ``dejitter=True`` lets liblsl smooth them first.

    A stream that goes away (its outlet closed, its app or host gone) ends the source: ``read``
    raises a SourceError naming it, which a DataManager reports as ``AcquisitionFailed`` after
    keeping everything read before. liblsl drops the samples still in flight at that moment.
    With ``recover=True`` liblsl instead waits for an outlet with the same ``source_id`` to come
    back and goes on (the outage shows only in the times), and ``read`` never fails on a loss.

    Text (or any) markers from a second stream are read alongside with ``markers=`` (a stream
    name, or a mapping of the keywords above) and kept as an events node in :attr:`markers`.
    A text stream cannot be the main stream: daqlab's buffers hold numbers.

    The source's own :attr:`name` is the stream's name (``/`` and control characters made
    ``_``): a DataManager names the source after it.

    Parameters
    ----------
    name, type, query, source_id
        What to resolve (all that are given must hold); none given: the only stream visible.
    timeout
        Seconds to wait for the stream when resolving, connecting and opening it.
    channels
        Overrides the stream's channels (as many as it has): names, or Channel objects.
    sample_rate
        Only for irregular streams: the rate to expect, in Hz.
    markers
        A marker stream to read too: its name, or e.g. ``{"type": "Markers"}``.
    recover
        Let liblsl reconnect a lost stream instead of failing (default False).
    dejitter
        Let liblsl smooth the timestamps (``proc_dejitter | proc_monotonize``).
    max_buffered
        Seconds of samples liblsl may hold for a reader that falls behind (default 10); when
        that fills, the oldest are dropped: the next block's first sample is flagged SUSPECT
        and :attr:`overruns` counts it.
    clock_sync_interval
        Seconds between clock-offset measurements (default 5, as LabRecorder).
    wall_clock
        The UTC clock read at ``start()`` (injectable for tests).

    Examples
    --------
    An outlet (here in the same process; usually another app) and the source that reads it:

    >>> import pylsl, uuid
    >>> sid = uuid.uuid4().hex  # unique: no other stream on the network matches
    >>> outlet = pylsl.StreamOutlet(pylsl.StreamInfo("doc-eeg", "EEG", 2, 100.0, "float32", sid))
    >>> src = LSL(source_id=sid)
    >>> [c.name for c in src.channels], src.sample_rate, src.name
    (['ch0', 'ch1'], 100.0, 'doc-eeg')
    >>> src.start()
    >>> outlet.wait_for_consumers(5.0)
    True
    >>> outlet.push_chunk([[1.0, 2.0], [3.0, 4.0]])  # two samples of two channels
    >>> import time
    >>> deadline = time.monotonic() + 10.0
    >>> while src.pending < 2 and time.monotonic() < deadline:  # both reached this machine
    ...     time.sleep(0.01)
    >>> src.read(timeout=0.0).values.tolist()  # (channels, samples)
    [[1.0, 3.0], [2.0, 4.0]]
    >>> src.stop()
    """

    def __init__(
        self,
        name: str | None = None,
        type: str | None = None,
        query: str | None = None,
        timeout: float = 5.0,
        *,
        source_id: str | None = None,
        channels: Iterable[ChannelLike] | None = None,
        sample_rate: float | None = None,
        markers: str | Mapping[str, str] | None = None,
        recover: bool = False,
        dejitter: bool = False,
        max_buffered: float = 10.0,
        clock_sync_interval: float = 5.0,
        wall_clock: Callable[[], _dt.datetime] | None = None,
    ) -> None:
        self._timeout = real(timeout, "timeout", lower=0, lower_open=True, hint="Pass e.g. timeout=5.0.")
        criteria = _criteria(name, type, source_id, query, "")
        self.recover = check_flag("recover", recover)
        self.dejitter = check_flag("dejitter", dejitter)
        self.max_buffered = real(max_buffered, "max_buffered", lower=0, lower_open=True,
                                 hint="Pass e.g. max_buffered=10.0 (seconds).")
        self._sync_interval = real(clock_sync_interval, "clock_sync_interval", lower=0, lower_open=True,
                                   hint="Pass e.g. clock_sync_interval=5.0 (seconds).")
        marker_criteria = _marker_criteria(markers)
        lsl = _pylsl()
        self._lsl = lsl
        info = _resolve(lsl, criteria, self._timeout, "stream")
        dtype = _numeric_dtype(info)
        nominal = float(info.nominal_srate())
        rate = _stream_rate(info, sample_rate)
        if nominal > 0:
            buflen = max(1, math.ceil(self.max_buffered))
            self._capacity = int(buflen * nominal)
        else:  # liblsl counts an irregular stream's buffer in hundreds of samples
            buflen = max(1, math.ceil(self.max_buffered * rate / 100))
            self._capacity = buflen * 100
        flags = (lsl.proc_dejitter | lsl.proc_monotonize) if self.dejitter else 0
        self._data = _Inlet(lsl, info, "stream", max_buflen=buflen, recover=self.recover, flags=flags,
                            timeout=self._timeout)
        self._markers: _Inlet | None = None
        if marker_criteria is not None:
            minfo = _resolve(lsl, marker_criteria, self._timeout, "marker stream")
            self._markers = _Inlet(lsl, minfo, "marker stream", max_buflen=_MARKER_BUFLEN,
                                   recover=self.recover, flags=0, timeout=self._timeout)
        chans, renamed = _source_channels(info, self._data.full, channels)
        stream_name = _clean(str(info.name())) or "lsl"
        super().__init__(chans, rate, name=stream_name, wall_clock=wall_clock)
        self._dtype = dtype
        self._chunk = min(self._capacity, max(256, math.ceil(0.1 * rate)))
        self._dest = np.empty((self._chunk, len(chans)), dtype=self._dtype)
        self._lock = threading.Lock()
        self._describe = {
            "type": "daqlab.sources.LSL", "query": dict(criteria), "stream": _facts(info),
            "sample_rate": rate, "irregular": nominal == 0, "channels": [c.name for c in chans],
            "renamed_channels": renamed, "recover": self.recover, "dejitter": self.dejitter,
            "max_buffered": self.max_buffered, "clock_sync_interval": self._sync_interval,
            "markers": None if self._markers is None else {
                "query": dict(marker_criteria or {}), "stream": _facts(self._markers.full)},
        }
        self._lc0 = math.nan
        self._delivered = 0
        self._last_ns = np.iinfo(np.int64).min
        self._stopping = False
        self._drain_left = 0
        self._error: SourceError | None = None
        self._marker_ns: list[NDArray[np.int64]] = []
        self._marker_labels: list[str] = []
        self.adjusted_timestamps = 0
        """Timestamps raised to the one before them so that times never go back."""
        self.overruns = 0
        """Times liblsl's buffer (``max_buffered`` s) was full at a pull: older samples were dropped."""

    # ------------------------------------------------------------------ protocol
    @property
    def finished(self) -> bool:
        """True once stopped and every sample queued at ``stop()`` was read (a live stream never ends)."""
        return self._stopping and self._data.inlet is None and self._error is None

    def start(self) -> None:
        with self._lock:
            if self._started:
                raise SourceError("this LSL source was started already; make a new one.")
            if self._stopping:
                raise SourceError("this LSL source was stopped before it started; make a new one.")
            self._data.open(self._timeout)
            if self._markers is not None:
                self._markers.open(self._timeout)
            before = float(self._lsl.local_clock())
            super().start()  # reads wall_clock: the UTC end of the clock pair
            self._lc0 = (before + float(self._lsl.local_clock())) / 2

    def read(self, timeout: float) -> Samples | None:
        self._check_started()
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if self._error is not None:
                    raise self._error
                block = None
                try:
                    block = self._pull()
                    self._pull_markers()
                except SourceError as exc:
                    self._error = exc
                    self._close()
                    if block is None:
                        raise
                    return block  # what was pulled before the loss; the error comes with the next read
            if block is not None or self._stopping:
                return block
            left = deadline - time.monotonic()
            if left <= 0 or self._stop_event.wait(min(left, _POLL)):
                return None

    def stop(self) -> None:
        """Stop subscribing: what is queued now can still be read, then the stream is closed.

        Calling it again (a DataManager does, once it has drained the source) closes at once.
        """
        super().stop()
        with self._lock:
            if self._stopping or not self._started:
                self._stopping = True
                self._close()
                return
            self._stopping = True
            if self._data.inlet is not None:
                self._drain_left = int(self._data.inlet.samples_available())
            try:
                self._pull_markers()  # the markers that came until now; they are few
            except SourceError as exc:
                self._error = exc
            if self._drain_left <= 0:
                self._close()

    def describe(self) -> dict[str, Any]:
        return copy.deepcopy(self._describe)

    # ------------------------------------------------------------------ what it measured
    @property
    def clock_offsets(self) -> tuple[ClockOffset, ...]:
        """The data stream's clock offsets measured so far, oldest first."""
        with self._lock:
            return tuple(self._data.offsets)

    @property
    def marker_clock_offsets(self) -> tuple[ClockOffset, ...]:
        """The marker stream's clock offsets (empty without ``markers=``)."""
        with self._lock:
            return () if self._markers is None else tuple(self._markers.offsets)

    @property
    def clock_reference(self) -> tuple[np.datetime64, float] | None:
        """``(UTC, LSL clock)`` read together at ``start()``; ``None`` before it."""
        if not self._started:
            return None
        return np.datetime64(self._t0_ns, "ns"), self._lc0

    @property
    def pending(self) -> int:
        """Samples waiting in liblsl's buffer now (0 once closed)."""
        with self._lock:
            inlet = self._data.inlet
            return 0 if inlet is None else int(inlet.samples_available())

    @property
    def markers(self) -> xr.Dataset:
        """The markers read so far as an events node (``daqlab.tree.make_events``)."""
        with self._lock:
            times = np.concatenate(self._marker_ns) if self._marker_ns else np.empty(0, np.int64)
            labels = list(self._marker_labels)
            m = self._markers
            stream = None if m is None else _facts(m.full)
            offsets = _offsets_json(() if m is None else m.offsets)
        return make_events(times, labels, name="markers" if stream is None else stream["name"],
                           metadata={"stream": stream, "clock_offsets": offsets})

    def run_metadata(self) -> dict[str, Any]:
        """What this source measured while running, as JSON values: the clock pair, the clock
        offsets (data and markers), adjusted timestamps and overruns; to keep with a recording."""
        ref = self.clock_reference
        with self._lock:
            out: dict[str, Any] = {
                "clock_reference": None if ref is None else {
                    "utc": iso_utc(ref[0]), "lsl_clock": ref[1]},
                "clock_offsets": _offsets_json(self._data.offsets),
                "adjusted_timestamps": self.adjusted_timestamps, "overruns": self.overruns,
                "samples": self._delivered,
            }
            if self._markers is not None:
                out["marker_clock_offsets"] = _offsets_json(self._markers.offsets)
                out["markers"] = len(self._marker_labels)
        return out

    # ------------------------------------------------------------------ internals (under the lock)
    def _to_ns(self, ts: NDArray[np.float64], offset: float) -> NDArray[np.int64]:
        ns: NDArray[np.int64] = np.rint((ts - self._lc0 + offset) * 1e9).astype(np.int64)
        ns += self._t0_ns
        return ns

    def _lost(self, inlet: _Inlet, exc: Exception) -> SourceError:
        kind = type(exc).__name__
        if kind == "LostError":
            how = ("recover=True cannot bring it back: liblsl reconnects only to a stream with a "
                   "source_id" if self.recover else "or use recover=True to let liblsl reconnect by itself")
            return SourceError(
                f"the LSL {inlet.what} {inlet.summary} was lost after {self._delivered} samples: its "
                "outlet closed or its app or host went away (liblsl drops the samples still in flight "
                f"then). Make a new LSL source once it is back; {how}.")
        return SourceError(f"reading the LSL {inlet.what} {inlet.summary} failed: {kind}: {exc}.")

    def _pull(self) -> Samples | None:
        d = self._data
        if d.inlet is None:
            return None
        most = self._chunk
        if self._stopping:
            most = min(most, self._drain_left)
            if most <= 0:
                self._close()
                return None
        try:
            d.sync_if_due(self._delivered, self._sync_interval)
            full = int(d.inlet.samples_available()) >= self._capacity
            view, ts = d.inlet.pull_chunk(0.0, most, dest_obj=self._dest, as_numpy=True)
        except RuntimeError as exc:
            raise self._lost(d, exc) from None
        n = len(ts)
        if n == 0:
            return None
        if self._stopping:
            self._drain_left -= n
        values = np.empty((len(self._channels), n), np.float64)
        values[...] = view.T  # one copy: transposed, and converted from the stream's dtype
        raw = self._to_ns(ts, d.offset)
        fixed = np.maximum.accumulate(np.maximum(raw, self._last_ns))
        self.adjusted_timestamps += int(np.count_nonzero(fixed != raw))
        self._last_ns = int(fixed[-1])
        quality = None
        if full:
            self.overruns += 1
            quality = np.zeros(values.shape, np.int8)
            quality[:, 0] = Quality.SUSPECT
            log.warning("LSL stream %s: liblsl's buffer of %g s was full; older samples were dropped "
                        "before sample %d", d.summary, self.max_buffered, self._delivered)
        self._delivered += n
        return Samples(values, fixed.view("datetime64[ns]"), quality)

    def _pull_markers(self) -> None:
        m = self._markers
        if m is None or m.inlet is None:
            return
        try:
            m.sync_if_due(len(self._marker_labels), self._sync_interval)
            while True:
                values, ts = m.inlet.pull_chunk(0.0, 1024, as_numpy=True)
                if len(ts) == 0:
                    return
                self._marker_ns.append(self._to_ns(np.asarray(ts, np.float64), m.offset))
                self._marker_labels.extend(_labels(values))
        except RuntimeError as exc:
            raise self._lost(m, exc) from None

    def _close(self) -> None:
        for inlet in (self._data, self._markers):
            if inlet is not None and inlet.inlet is not None:
                try:
                    inlet.close()
                except RuntimeError:  # closing a lost stream: nothing is left to release
                    inlet.inlet = None


def _labels(values: Any) -> list[str]:
    """One label per marker: the text of a one-channel stream, else the channels as a JSON list."""
    rows = values.tolist()

    def text(v: Any) -> Any:
        return v.decode("utf-8", "replace") if isinstance(v, bytes) else v

    if values.shape[1] == 1:
        return [str(text(r[0])) for r in rows]
    return [json.dumps([text(v) for v in r], ensure_ascii=False) for r in rows]
