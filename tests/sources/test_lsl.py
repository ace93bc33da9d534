"""The LSL source against real pylsl outlets on loopback: exact values and times, loss, markers, clocks.

Every outlet pushes a known counter (sample ``k`` of channel ``c`` holds ``k * C + c``) with
explicit timestamps (``base + k / rate`` on the LSL clock), so a lost, doubled or reordered
sample and every timestamp can be checked exactly. Each test makes its own streams with unique
names and source ids (uuid), so tests running side by side never resolve each other's. Waits are
conditions with timeouts; the outlet threads pace themselves by the clock, as a device would.
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
import math
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
from numpy.typing import NDArray

import daqlab as dl
from daqlab.events import AcquisitionFailed
from daqlab.sources import LSL, Samples
from tests.helpers import wait_for

pylsl: Any = importlib.import_module("pylsl")  # a dev dependency: missing, these tests fail

PATIENCE = 30.0
"""Seconds any condition may take before a test fails (the machine is small and busy)."""
T0 = dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.UTC)
T0_NS = int(np.datetime64("2024-05-06T07:08:09", "ns").astype(np.int64))
MODULUS = {"float32": 1 << 24, "int8": 100, "int16": 30_000, "int32": 2**31 - 1}
"""Counters wrap here so every value stays exact in the stream's own type."""
DTYPES = {"float32": np.float32, "double64": np.float64, "int8": np.int8, "int16": np.int16,
          "int32": np.int32, "int64": np.int64}


def unique(prefix: str = "daqlab-test") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


class Outlet:
    """A real LSL outlet whose sample ``k`` holds ``k * C + c`` and is stamped ``base + k / rate``.

    ``push(n)`` pushes the next ``n`` samples now; ``run(total)`` pushes up to ``total`` from a
    thread, paced by the clock in blocks of ``block_s`` seconds, once an inlet is subscribed.
    """

    def __init__(self, channels: int = 4, rate: float = 1000.0, *, fmt: str = "double64",
                 type: str = "EEG", name: str | None = None, source_id: str | None = None,
                 labels: Sequence[str] | None = None, units: Sequence[str] | None = None,
                 max_buffered: int = 30) -> None:
        self.channels, self.rate, self.fmt = channels, rate, fmt
        self.name = name if name is not None else unique()
        self.source_id = source_id if source_id is not None else unique("sid")
        self.type = type
        info = pylsl.StreamInfo(self.name, type, channels, rate, fmt, self.source_id)
        if labels is not None or units is not None:
            chans = info.desc().append_child("channels")
            for i in range(channels):
                ch = chans.append_child("channel")
                if labels is not None:
                    ch.append_child_value("label", labels[i])
                if units is not None:
                    ch.append_child_value("unit", units[i])
        self.outlet: Any = pylsl.StreamOutlet(info, 0, max_buffered)
        self.base = float(pylsl.local_clock())
        self.pushed = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def values(self, k0: int, n: int) -> NDArray[np.float64]:
        """``(channels, n)`` values of samples ``k0 ..``, as the source delivers them."""
        k = np.arange(k0, k0 + n, dtype=np.int64)[np.newaxis, :] * self.channels
        v = k + np.arange(self.channels, dtype=np.int64)[:, np.newaxis]
        if self.fmt in MODULUS:
            v %= MODULUS[self.fmt]
        return v.astype(np.float64)

    def lsl_times(self, k0: int, n: int) -> NDArray[np.float64]:
        return self.base + np.arange(k0, k0 + n, dtype=np.float64) / self.rate

    def push(self, n: int) -> None:
        block = np.ascontiguousarray(self.values(self.pushed, n).T.astype(DTYPES[self.fmt]))
        self.outlet.push_chunk(block, timestamp=self.lsl_times(self.pushed, n).tolist())
        self.pushed += n

    def wait_for_consumer(self) -> None:
        assert self.outlet.wait_for_consumers(PATIENCE), f"no inlet subscribed to {self.name}"

    def run(self, total: int, *, block_s: float = 0.01) -> None:
        """Push samples ``pushed .. total - 1`` from a thread, paced by the clock."""

        def pace() -> None:
            try:
                self.wait_for_consumer()
                t0, k0 = time.monotonic(), self.pushed
                self.base = float(pylsl.local_clock()) - k0 / self.rate
                block = max(1, round(self.rate * block_s))
                while self.pushed < total and not self._stop.is_set():
                    due = min(total, k0 + math.floor((time.monotonic() - t0) * self.rate))
                    if due - self.pushed >= min(block, total - self.pushed):
                        self.push(due - self.pushed)
                    else:
                        self._stop.wait(block_s / 4)
            except BaseException as exc:
                self.error = exc

        self._thread = threading.Thread(target=pace, name=f"test-outlet-{self.name}", daemon=True)
        self._thread.start()

    def finish(self, timeout: float = PATIENCE) -> None:
        """Wait for the pushing thread to end; raise what it failed with."""
        if self._thread is not None:
            self._thread.join(timeout)
            assert not self._thread.is_alive(), f"outlet {self.name} still pushing after {timeout} s"
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        """Stop pushing and destroy the outlet: it vanishes from the network."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(PATIENCE)
        self.outlet = None  # pylsl destroys the liblsl outlet with its last reference


@pytest.fixture
def outlets() -> Iterator[list[Outlet]]:
    """Outlets a test makes; all closed after it."""
    made: list[Outlet] = []
    yield made
    for o in made:
        o.close()


def make(outlets: list[Outlet], *args: Any, **kw: Any) -> Outlet:
    o = Outlet(*args, **kw)
    outlets.append(o)
    return o


def read_n(src: LSL, n: int, timeout: float = PATIENCE) -> list[Samples]:
    """Read blocks until ``n`` samples came (no more may come in the meantime: the outlet pushed n)."""
    blocks: list[Samples] = []
    got = 0
    deadline = time.monotonic() + timeout
    while got < n:
        assert time.monotonic() < deadline, f"only {got} of {n} samples came in {timeout} s"
        b = src.read(timeout=0.5)
        if b is not None:
            blocks.append(b)
            got += len(b)
    assert got == n, f"{got} samples came, {n} were pushed"
    return blocks


def joined(blocks: Sequence[Samples]) -> tuple[NDArray[np.float64], NDArray[np.datetime64]]:
    return (np.concatenate([b.values for b in blocks], axis=1),
            np.concatenate([b.times for b in blocks]))


def expected_ns(src: LSL, lsl_times: NDArray[np.float64], first: int = 0) -> NDArray[np.int64]:
    """The UTC ns the source must give samples ``first ..`` stamped ``lsl_times`` by their outlet:
    ``utc_at_start + (t + offset - lsl_clock_at_start)``, the offset of each sample the last one
    measured before it was read, then made non-decreasing."""
    ref = src.clock_reference
    assert ref is not None
    utc0, lc0 = int(ref[0].astype(np.int64)), ref[1]
    offsets = src.clock_offsets
    assert offsets, "no clock offset was measured"
    starts = np.array([o.first_sample for o in offsets])
    values = np.array([o.offset for o in offsets])
    which = np.searchsorted(starts, np.arange(first, first + lsl_times.size), side="right") - 1
    assert (which >= 0).all()
    ns = np.rint((lsl_times - lc0 + values[which]) * 1e9).astype(np.int64) + utc0
    out: NDArray[np.int64] = np.maximum.accumulate(ns)
    return out


def check_times(src: LSL, times: NDArray[np.datetime64], lsl_times: NDArray[np.float64]) -> None:
    """Exactly the formula, and within 1 ms of no offset at all (one machine: the true one is 0)."""
    got = times.astype(np.int64)
    np.testing.assert_array_equal(got, expected_ns(src, lsl_times))
    ref = src.clock_reference
    assert ref is not None
    plain = int(ref[0].astype(np.int64)) + (lsl_times - ref[1]) * 1e9
    assert np.abs(got - plain).max() < 1e6
    assert (np.diff(got) >= 0).all()


# --------------------------------------------------------------------------- resolving


@pytest.mark.parametrize("by", ["name", "type", "source_id", "query"])
def test_resolves_a_stream_and_takes_its_channels_rate_and_identity(
        by: str, outlets: list[Outlet]) -> None:
    labels = ["Fp1", "Fp2", "Cz", "T sensor (°C)"]
    units = ["uV", "uV", "uV", "degC"]
    out = make(outlets, 4, 512.0, fmt="float32", type=unique("T"), labels=labels, units=units)
    ask: dict[str, Any] = {
        "name": {"name": out.name}, "type": {"type": out.type}, "source_id": {"source_id": out.source_id},
        "query": {"query": f"starts-with(name, '{out.name[:-4]}') and channel_count=4"},
    }[by]
    src = LSL(**ask, timeout=PATIENCE)
    assert src.channels == tuple(dl.Channel(n, u) for n, u in zip(labels, units, strict=True))
    assert src.sample_rate == 512.0
    assert isinstance(src.sample_rate, float)
    assert src.name == out.name  # a DataManager names the source after the stream
    assert src.finished is False
    desc = src.describe()
    assert json.loads(json.dumps(desc, allow_nan=False)) == desc
    assert desc["type"] == "daqlab.sources.LSL"
    assert desc["query"] == ask
    stream = desc["stream"]
    assert (stream["name"], stream["type"], stream["source_id"]) == (out.name, out.type, out.source_id)
    assert (stream["channel_count"], stream["channel_format"], stream["nominal_srate"]) == (4, "float32",
                                                                                           512.0)
    assert desc["channels"] == labels
    assert desc["renamed_channels"] == {}
    src.stop()
    assert src.describe() == desc


def test_name_and_type_together_must_both_hold(outlets: list[Outlet]) -> None:
    name = unique()
    eeg = make(outlets, 2, 100.0, name=name, type="EEG")
    make(outlets, 3, 100.0, name=name, type="EMG")
    src = LSL(name=name, type="EEG", timeout=PATIENCE)
    assert src.describe()["stream"]["source_id"] == eeg.source_id
    assert len(src.channels) == 2
    src.stop()


def test_quotes_in_a_name_are_matched_literally(outlets: list[Outlet]) -> None:
    out = make(outlets, 1, 10.0, name=f"it's a \"quoted\" {uuid.uuid4().hex[:8]}")
    src = LSL(name=out.name, timeout=PATIENCE)
    assert src.describe()["stream"]["source_id"] == out.source_id
    src.stop()


def test_asking_for_nothing_takes_the_only_stream_and_refuses_to_pick_among_several(
        outlets: list[Outlet]) -> None:
    a = make(outlets, 2, 100.0)
    b = make(outlets, 2, 100.0)
    with pytest.raises(dl.SourceError, match=r"^\d+ LSL streams match any stream: ") as info:
        LSL(timeout=PATIENCE)
    # other streams may be on the network too (tests side by side), and the resolver stops
    # looking at the second match: only when these two are alone are they the ones listed
    listed = re.findall(r"source_id '([^']+)'", str(info.value))
    assert len(listed) >= 2
    alone = {i.source_id() for i in pylsl.resolve_streams(1.0)} == {a.source_id, b.source_id}
    assert not alone or set(listed) == {a.source_id, b.source_id}


def test_no_match_names_what_was_asked_and_lists_the_visible_streams(outlets: list[Outlet]) -> None:
    there = make(outlets, 2, 100.0)
    missing = unique("missing")
    began = time.monotonic()
    with pytest.raises(dl.SourceError, match=r"no LSL stream found for name='missing-[0-9a-f]+'") as info:
        LSL(name=missing, timeout=0.5)
    assert time.monotonic() - began < PATIENCE  # bounded: never a hang
    text = str(info.value)
    assert "within timeout=0.5 s" in text
    assert "the streams visible now are:" in text
    assert there.name in text
    assert there.source_id in text


def test_a_query_liblsl_cannot_parse_is_said_to_be_one(outlets: list[Outlet]) -> None:
    with pytest.raises(dl.SourceError, match=r"not a valid XPath 1\.0 predicate"):
        LSL(query="name=='unterminated", timeout=5.0)


def test_two_matching_streams_are_refused_naming_both(outlets: list[Outlet]) -> None:
    name = unique()
    a = make(outlets, 2, 100.0, name=name)
    b = make(outlets, 2, 100.0, name=name)
    with pytest.raises(dl.SourceError, match=r"2 LSL streams match name=") as info:
        LSL(name=name, timeout=PATIENCE)
    assert a.source_id in str(info.value)
    assert b.source_id in str(info.value)
    assert "source_id=" in str(info.value)  # how to pick one


def test_a_text_stream_is_refused_as_the_main_stream_with_the_markers_hint(outlets: list[Outlet]) -> None:
    name = unique()
    info = pylsl.StreamInfo(name, "Markers", 1, 0.0, "string", unique("sid"))
    outlet = pylsl.StreamOutlet(info)
    with pytest.raises(dl.SourceError, match=r"is not numeric \(format string\).*markers="):
        LSL(name=name, timeout=PATIENCE)
    del outlet


@pytest.mark.parametrize(("kw", "pattern"), [
    ({"timeout": 0}, r"timeout must be finite and > 0"),
    ({"name": ""}, r"name must be non-empty text or None"),
    ({"type": 3}, r"type must be non-empty text or None; got 3"),
    ({"markers": 5}, r"markers must be a stream name or a mapping"),
    ({"markers": {"kind": "x"}}, r"markers must be a stream name or a mapping of name/type"),
    ({"markers": {"name": ""}}, r"markers name must be non-empty text"),
    ({"max_buffered": -1}, r"max_buffered must be finite and > 0"),
    ({"clock_sync_interval": math.nan}, r"clock_sync_interval must be finite and > 0"),
    ({"recover": "yes"}, r"recover"),
], ids=["timeout", "name", "type", "markers-int", "markers-key", "markers-empty", "max_buffered",
        "sync", "recover"])
def test_bad_settings_are_refused_before_looking_for_a_stream(kw: dict[str, Any], pattern: str) -> None:
    began = time.monotonic()
    with pytest.raises(dl.ConfigurationError, match=pattern):
        LSL(**{"name": unique(), **kw})
    assert time.monotonic() - began < 1.0  # no resolving was tried


# --------------------------------------------------------------------------- channels and formats


def test_labels_that_cannot_name_channels_are_cleaned_made_unique_and_said(outlets: list[Outlet]) -> None:
    labels = ["Fp1", "Fp1", "", "a/b", " pad ", "ok\x07bell", "."]
    out = make(outlets, len(labels), 100.0, labels=labels, units=["uV"] * 6 + ["V\x00"])
    src = LSL(source_id=out.source_id, timeout=PATIENCE)
    assert [c.name for c in src.channels] == ["Fp1", "Fp1_2", "ch2", "a_b", "pad", "ok_bell", "ch6"]
    assert [c.unit for c in src.channels] == ["uV"] * 6 + ["V"]
    assert src.describe()["renamed_channels"] == {"Fp1_2": "Fp1", "a_b": "a/b", "pad": " pad ",
                                                  "ok_bell": "ok\x07bell", "ch6": "."}
    src.stop()


def test_a_stream_without_channel_labels_gets_ch0_to_chn(outlets: list[Outlet]) -> None:
    out = make(outlets, 3, 100.0)
    src = LSL(source_id=out.source_id, timeout=PATIENCE)
    assert src.channels == (dl.Channel("ch0"), dl.Channel("ch1"), dl.Channel("ch2"))
    src.stop()


def test_channels_given_override_the_streams_and_must_match_its_count(outlets: list[Outlet]) -> None:
    out = make(outlets, 2, 100.0, labels=["a", "b"])
    mine = (dl.Channel("x", "V", range=(-5.0, 5.0), calibration=dl.Calibration(2.0, 1.0, "2024-01-01")),
            dl.Channel("y", "mV"))
    src = LSL(source_id=out.source_id, channels=mine, timeout=PATIENCE)
    assert src.channels == mine
    src.stop()
    with pytest.raises(dl.ConfigurationError,
                       match=r"channels has 3 channel\(s\) but the LSL stream .* has 2"):
        LSL(source_id=out.source_id, channels=["p", "q", "r"], timeout=PATIENCE)


@pytest.mark.parametrize("fmt", ["float32", "double64", "int8", "int16", "int32", "int64"])
def test_every_numeric_format_arrives_as_exact_float64(fmt: str, outlets: list[Outlet]) -> None:
    out = make(outlets, 3, 1000.0, fmt=fmt)
    src = LSL(source_id=out.source_id, timeout=PATIENCE, wall_clock=lambda: T0)
    src.start()
    out.wait_for_consumer()
    out.push(700)
    out.push(301)
    values, times = joined(read_n(src, 1001))
    assert values.dtype == np.float64
    np.testing.assert_array_equal(values, out.values(0, 1001))
    check_times(src, times, out.lsl_times(0, 1001))
    ref = src.clock_reference
    assert ref is not None
    assert ref[0] == np.datetime64(T0_NS, "ns")
    src.stop()


def test_an_irregular_stream_needs_a_sample_rate_and_keeps_its_own_times(outlets: list[Outlet]) -> None:
    out = make(outlets, 2, 0.0)
    with pytest.raises(dl.ConfigurationError, match=r"irregular rate \(nominal_srate 0\); pass sample_rate="):
        LSL(source_id=out.source_id, timeout=PATIENCE)
    src = LSL(source_id=out.source_id, sample_rate=50.0, timeout=PATIENCE)
    assert src.sample_rate == 50.0
    assert src.describe()["irregular"] is True
    src.start()
    out.wait_for_consumer()
    stamps = out.base + np.array([0.0, 0.013, 0.5, 0.5, 2.25, 2.2500001])
    values = out.values(0, 6)
    out.outlet.push_chunk(np.ascontiguousarray(values.T), timestamp=stamps.tolist())
    got, times = joined(read_n(src, 6))
    np.testing.assert_array_equal(got, values)
    check_times(src, times, stamps)
    src.stop()
    with pytest.raises(dl.ConfigurationError, match=r"differs from the stream's nominal rate 100 Hz"):
        LSL(source_id=make(outlets, 1, 100.0).source_id, sample_rate=50.0, timeout=PATIENCE)


# --------------------------------------------------------------------------- reading, stopping


def test_read_before_start_and_start_twice_are_errors(outlets: list[Outlet]) -> None:
    out = make(outlets, 1, 100.0)
    src = LSL(source_id=out.source_id, timeout=PATIENCE)
    with pytest.raises(dl.SourceError, match=r"read\(\) before start\(\)"):
        src.read(timeout=0.0)
    src.start()
    with pytest.raises(dl.SourceError, match=r"started already"):
        src.start()
    src.stop()
    src.stop()  # harmless
    assert src.read(timeout=5.0) is None
    assert src.finished


def test_stop_from_another_thread_wakes_a_read_at_once(outlets: list[Outlet]) -> None:
    out = make(outlets, 2, 100.0)
    src = LSL(source_id=out.source_id, timeout=PATIENCE)
    src.start()
    returned: list[Samples | None] = []
    entered = threading.Event()

    def reader() -> None:
        entered.set()
        returned.append(src.read(timeout=3600.0))  # nothing is pushed: only stop() can end it

    t = threading.Thread(target=reader, name="test-lsl-reader", daemon=True)
    t.start()
    assert entered.wait(PATIENCE)
    assert t.is_alive()
    assert not returned
    stopping = time.monotonic()
    src.stop()
    t.join(PATIENCE)
    assert not t.is_alive()
    assert time.monotonic() - stopping < 5.0
    assert returned == [None]


def test_what_is_queued_at_stop_is_still_read_then_nothing(outlets: list[Outlet]) -> None:
    out = make(outlets, 3, 1000.0)
    src = LSL(source_id=out.source_id, timeout=PATIENCE)
    src.start()
    out.wait_for_consumer()
    out.push(300)
    wait_for(lambda: src.pending == 300, PATIENCE, "300 samples to reach the inlet")
    src.stop()
    out.push(50)  # after stop(): not asked for any more
    values, _ = joined(read_n(src, 300))
    np.testing.assert_array_equal(values, out.values(0, 300))
    assert src.read(timeout=1.0) is None
    assert src.finished
    assert src.pending == 0  # the stream is closed


def test_a_reader_that_falls_behind_loses_the_oldest_and_it_is_flagged(outlets: list[Outlet]) -> None:
    out = make(outlets, 2, 1000.0)
    src = LSL(source_id=out.source_id, timeout=PATIENCE, max_buffered=1.0)  # liblsl keeps 1000 samples
    src.start()
    out.wait_for_consumer()
    out.push(2500)
    wait_for(lambda: src.pending == 1000, PATIENCE, "liblsl's buffer to fill")
    blocks: list[Samples] = []
    while not blocks or blocks[-1].values[0, -1] != out.values(2499, 1)[0, 0]:
        b = src.read(timeout=PATIENCE)
        assert b is not None, "the last sample never came"
        blocks.append(b)
    values, _ = joined(blocks)
    k = (values[0] / 2).astype(np.int64)  # channel 0 holds 2k: which samples came
    assert k[-1] == 2499
    assert (np.diff(k) > 0).all(), "samples were doubled or reordered"
    np.testing.assert_array_equal(values, out.values(0, 2500)[:, k])  # each one that came, exactly
    # the buffer was full when the source first pulled: what liblsl dropped is said, not hidden
    # (how many it dropped depends on how fast the rest arrived while the source read)
    assert src.overruns >= 1
    assert blocks[0].quality is not None
    assert (blocks[0].quality[:, 0] == dl.Quality.SUSPECT).all()
    assert (blocks[0].quality[:, 1:] == dl.Quality.GOOD).all()
    assert src.run_metadata()["overruns"] == src.overruns
    src.stop()


def test_a_lost_stream_fails_read_with_a_source_error_naming_it(outlets: list[Outlet]) -> None:
    out = make(outlets, 2, 1000.0)
    src = LSL(source_id=out.source_id, timeout=PATIENCE)
    src.start()
    out.wait_for_consumer()
    out.push(100)
    values, _ = joined(read_n(src, 100))
    np.testing.assert_array_equal(values, out.values(0, 100))
    out.close()

    def read_until_it_fails() -> None:
        deadline = time.monotonic() + PATIENCE
        while time.monotonic() < deadline:
            assert src.read(timeout=0.5) is None

    with pytest.raises(dl.SourceError, match=r"the LSL stream '.*' .* was lost after 100 samples") as info:
        read_until_it_fails()
    assert out.name in str(info.value)
    assert "recover=True" in str(info.value)
    with pytest.raises(dl.SourceError, match=r"was lost"):  # and again: it does not come back
        src.read(timeout=0.0)
    assert not src.finished
    src.stop()


def test_with_recover_a_stream_that_comes_back_goes_on(outlets: list[Outlet]) -> None:
    sid = unique("sid")
    first = make(outlets, 2, 1000.0, source_id=sid)
    src = LSL(source_id=sid, timeout=PATIENCE, recover=True)
    src.start()
    first.wait_for_consumer()
    first.push(100)
    a, _ = joined(read_n(src, 100))
    first.close()
    assert src.read(timeout=0.5) is None  # no error: liblsl waits for the stream to come back
    again = make(outlets, 2, 1000.0, source_id=sid, name=first.name)
    again.pushed = 100  # the counter goes on
    again.wait_for_consumer()  # liblsl found it again (by its source_id) and subscribed
    again.push(100)
    b, _ = joined(read_n(src, 100))
    np.testing.assert_array_equal(np.concatenate([a, b], axis=1), first.values(0, 200))
    src.stop()


# --------------------------------------------------------------------------- clocks and markers


def test_clock_offsets_are_measured_kept_and_used(outlets: list[Outlet]) -> None:
    out = make(outlets, 2, 1000.0)
    src = LSL(source_id=out.source_id, timeout=PATIENCE, clock_sync_interval=0.2)
    before = (src.clock_reference, src.clock_offsets)
    assert before == (None, ())
    src.start()
    out.run(1_000_000)
    blocks: list[Samples] = []
    deadline = time.monotonic() + PATIENCE
    while len(src.clock_offsets) < 4:
        assert time.monotonic() < deadline, "offsets were not remeasured"
        if (b := src.read(timeout=0.5)) is not None:
            blocks.append(b)
    src.stop()
    blocks += [b for b in iter(lambda: src.read(timeout=0.0), None)]
    out.close()
    values, times = joined(blocks)
    n = values.shape[1]
    np.testing.assert_array_equal(values, out.values(0, n))
    check_times(src, times, out.lsl_times(0, n))  # each block with the offset current when it was read
    offsets = src.clock_offsets
    assert all(abs(o.offset) < 1e-3 for o in offsets)  # one machine: liblsl measures ~0
    assert list(np.diff([o.measured_at for o in offsets]) >= 0.2 - 1e-6) == [True] * (len(offsets) - 1)
    assert offsets[0].first_sample == 0
    assert all(np.diff([o.first_sample for o in offsets]) >= 0)
    assert offsets[-1].first_sample > 0
    meta = src.run_metadata()
    assert json.loads(json.dumps(meta, allow_nan=False)) == meta
    assert meta["clock_offsets"] == {"measured_at": [o.measured_at for o in offsets],
                                     "offset": [o.offset for o in offsets],
                                     "first_sample": [o.first_sample for o in offsets]}
    ref = src.clock_reference
    assert ref is not None
    assert meta["clock_reference"]["lsl_clock"] == ref[1]
    assert np.datetime64(meta["clock_reference"]["utc"].rstrip("Z"), "ns") == ref[0]
    assert meta["samples"] == n
    assert meta["overruns"] == 0


def test_markers_from_a_second_stream_are_kept_as_events(outlets: list[Outlet]) -> None:
    data = make(outlets, 2, 1000.0)
    mname = unique("markers")
    minfo = pylsl.StreamInfo(mname, unique("Markers"), 1, 0.0, "string", unique("sid"))
    moutlet = pylsl.StreamOutlet(minfo)
    try:
        src = LSL(source_id=data.source_id, markers={"name": mname}, timeout=PATIENCE,
                  clock_sync_interval=3600.0)  # one offset measured: each marker's is known
        assert src.describe()["markers"]["stream"]["name"] == mname
        src.start()
        assert moutlet.wait_for_consumers(PATIENCE)
        data.wait_for_consumer()
        labels = ["start", "trial 1 ✓", "a, b; \"c\"", ""]
        stamps = [data.base + 0.25, data.base + 0.5, data.base + 0.5, data.base + 1.0]
        for label, stamp in zip(labels, stamps, strict=True):
            moutlet.push_sample([label], stamp)
        data.push(10)
        read_n(src, 10)
        deadline = time.monotonic() + PATIENCE
        while src.markers.sizes["event"] < 4:  # markers are pulled by read(), alongside the data
            assert time.monotonic() < deadline, f"{src.markers.sizes['event']} of 4 markers came"
            assert src.read(timeout=0.05) is None
        ev = src.markers
        assert dl.tree.is_events(ev)
        assert ev.attrs["name"] == mname
        assert ev.label.values.tolist() == labels
        ref = src.clock_reference
        assert ref is not None
        (off,) = {o.offset for o in src.marker_clock_offsets}
        want = np.rint((np.array(stamps) - ref[1] + off) * 1e9).astype(np.int64) + ref[0].astype(np.int64)
        np.testing.assert_array_equal(ev.time.values.astype(np.int64), want)
        assert ev.attrs["metadata"]["stream"]["name"] == mname
        moutlet.push_sample(["after stop?"], data.base + 2.0)
        src.stop()
        assert src.run_metadata()["markers"] >= 4
    finally:
        del moutlet


def test_without_markers_the_events_node_is_empty(outlets: list[Outlet]) -> None:
    out = make(outlets, 1, 100.0)
    src = LSL(source_id=out.source_id, timeout=PATIENCE)
    ev = src.markers
    assert ev.sizes["event"] == 0
    assert ev.attrs["name"] == "markers"
    assert src.marker_clock_offsets == ()
    src.stop()


# --------------------------------------------------------------------------- through a DataManager


def acquire(tmp_path: Path, outlets: list[Outlet], channels: int, rate: float, seconds: float,
            *, check_live: bool = False) -> tuple[dl.DataManager, LSL, Outlet, int]:
    """A paced outlet of ``seconds`` worth into a recording DataManager; returns after stop().

    ``check_live``: a Reader of the ring buffer checks every sample as it comes (for runs longer
    than the ring holds); otherwise the ring holds the whole run."""
    out = make(outlets, channels, rate)
    total = round(seconds * rate)
    src = LSL(source_id=out.source_id, timeout=PATIENCE)
    dm = dl.DataManager(src, record=True, output_dir=tmp_path / "out", autosave_interval=None,
                        handle_sigint=False, buffer_seconds=10.0 if check_live else seconds + 5.0)
    buf = dm.buffers[src.name]
    reader = buf.reader()
    checked = 0
    with dm:
        out.run(total)
        deadline = time.monotonic() + seconds + PATIENCE
        while checked < total:
            assert time.monotonic() < deadline, f"{buf.written} of {total} samples came"
            assert not dm.errors, dm.errors
            if check_live:
                if reader.wait(timeout=1.0):
                    block = reader.read()
                    assert block.lost == 0
                    np.testing.assert_array_equal(block.values, out.values(block.start, len(block)))
                    checked = block.stop
            else:
                wait_for(lambda: buf.written >= total or bool(dm.errors), seconds + PATIENCE,
                         "every sample")
                checked = buf.written
        out.finish()
    assert dm.errors == {}
    assert buf.written == total  # nothing more, nothing less
    assert dm.status()[src.name]["lost"] == 0
    assert reader.lost == 0
    return dm, src, out, total


@pytest.mark.parametrize(("channels", "rate"), [(64, 1000.0), (8, 100_000.0)], ids=["64x1k", "8x100k"])
def test_a_datamanager_records_an_lsl_stream_exactly(
        channels: int, rate: float, tmp_path: Path, outlets: list[Outlet]) -> None:
    dm, src, out, total = acquire(tmp_path, outlets, channels, rate, 3.0)
    snap = dm.snapshot()
    assert snap.sizes["time"] == total
    np.testing.assert_array_equal(snap.value.values, out.values(0, total))
    assert (snap.quality.values == 0).all()
    check_times(src, snap.time.values, out.lsl_times(0, total))
    assert snap.attrs["sample_rate"] == rate
    assert snap.attrs["metadata"]["source"] == src.describe()
    recordings = [p for p in dm.saved if p.suffix == ".nc"]
    assert len(recordings) == 1, dm.saved
    xr.testing.assert_identical(dl.open_run(recordings[0]).load(), snap)


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize(("channels", "rate"), [(64, 1000.0), (8, 100_000.0)], ids=["64x1k", "8x100k"])
def test_a_minute_of_lsl_is_recorded_without_losing_a_sample(
        channels: int, rate: float, tmp_path: Path, outlets: list[Outlet]) -> None:
    seconds = 60.0
    dm, src, out, total = acquire(tmp_path, outlets, channels, rate, seconds, check_live=True)
    assert len(src.clock_offsets) >= 10  # remeasured every 5 s
    (path,) = [p for p in dm.saved if p.suffix == ".nc"]
    run = dl.open_run(path, chunks={})
    assert run.sizes["time"] == total
    step = 1_000_000 // channels
    lsl_times = out.lsl_times(0, total)
    want_ns = expected_ns(src, lsl_times)
    for lo in range(0, total, step):
        part = run.isel(time=slice(lo, lo + step)).load()
        n = part.sizes["time"]
        np.testing.assert_array_equal(part.value.values, out.values(lo, n))
        np.testing.assert_array_equal(part.time.values.astype(np.int64), want_ns[lo:lo + n])


def test_a_stream_that_vanishes_fails_the_acquisition_and_keeps_what_came(
        tmp_path: Path, outlets: list[Outlet]) -> None:
    out = make(outlets, 3, 1000.0)
    src = LSL(source_id=out.source_id, timeout=PATIENCE)
    dm = dl.DataManager(src, record=True, output_dir=tmp_path / "out", autosave_interval=None,
                        handle_sigint=False)
    failures = dm.subscribe(kinds=AcquisitionFailed)
    dm.start()
    try:
        out.wait_for_consumer()
        out.push(500)
        wait_for(lambda: dm.buffers[src.name].written == 500, PATIENCE, "500 samples")
        out.close()
        event = failures.get(timeout=PATIENCE)
        assert isinstance(event, AcquisitionFailed), event
        assert event.source == src.name
        assert isinstance(event.error, dl.SourceError)
        assert "was lost after 500 samples" in str(event.error)
        assert dm.wait(timeout=PATIENCE), "a lost stream must end its acquisition"
    finally:
        with pytest.raises(dl.AcquisitionError, match=r"failed during acquisition: SourceError: the LSL "
                                                       r"stream .* was lost"):
            dm.stop()
    snap = dm.snapshot()
    np.testing.assert_array_equal(snap.value.values, out.values(0, 500))
    (path,) = [p for p in dm.saved if p.suffix == ".nc"]
    np.testing.assert_array_equal(dl.open_run(path).value.values, out.values(0, 500))


def test_stopping_a_datamanager_on_a_silent_stream_is_prompt(tmp_path: Path, outlets: list[Outlet]) -> None:
    out = make(outlets, 2, 1000.0)
    src = LSL(source_id=out.source_id, timeout=PATIENCE)
    dm = dl.DataManager(src, record=False, autosave_interval=None, handle_sigint=False)
    dm.start()
    assert any(t.name.startswith("daqlab-acq") for t in threading.enumerate())
    stopping = time.monotonic()
    dm.stop()
    assert time.monotonic() - stopping < 5.0
    assert dm.errors == {}
    assert dm.snapshot().sizes["time"] == 0
    assert src.finished


# --------------------------------------------------------------------------- publishing


def test_publish_lsl_sends_what_a_manager_acquires_to_other_lsl_apps() -> None:
    channels = [dl.Channel("ai0", "V"), dl.Channel("T sensor", "degC")]
    push = dl.sources.Push(channels, 1000.0)
    dm = dl.DataManager(push, record=False, autosave_interval=None, handle_sigint=False)
    values = np.arange(2 * 700, dtype=np.float64).reshape(2, 700) * 0.5
    with dm, dl.sources.publish_lsl(dm, name=unique("published")) as outlet:
        assert any(t.name.startswith("daqlab-lsl-outlet-") for t in threading.enumerate())
        src = LSL(source_id=outlet.source_id, timeout=PATIENCE)
        assert src.channels == tuple(channels)  # labels and units went out in the stream's desc
        assert src.sample_rate == 1000.0
        src.start()
        assert outlet.wait_for_consumers(PATIENCE)
        for lo, hi in ((0, 1), (1, 300), (300, 700)):
            push.feed(values[:, lo:hi])
        got, times = joined(read_n(src, 700))
        np.testing.assert_array_equal(got, values)
        sent = dm.snapshot().time.values.astype(np.int64)
        assert np.abs(times.astype(np.int64) - sent).max() < 1_000_000  # within 1 ms, via two clocks
        assert outlet.published == 700
        assert outlet.lost == 0
        src.stop()
    assert not outlet.running


def test_publish_lsl_refuses_what_it_cannot_publish() -> None:
    with pytest.raises(dl.ConfigurationError, match=r"takes a DataManager or a RingBuffer; got int"):
        dl.sources.publish_lsl(42)
    dm = dl.DataManager({"a": dl.sources.Push(["x"], 10.0), "b": dl.sources.Push(["y"], 10.0)}, record=False,
                        autosave_interval=None, handle_sigint=False)
    with pytest.raises(dl.ConfigurationError, match=r"name one of the manager's sources \['a', 'b'\]"):
        dl.sources.publish_lsl(dm)
    with pytest.raises(dl.ConfigurationError, match=r"name must be non-empty text"):
        dl.sources.publish_lsl(dm, "", source="a")


# --------------------------------------------------------------------------- import and extras


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          check=False)


def test_import_daqlab_does_not_load_pylsl() -> None:
    done = run_python("import sys, daqlab, daqlab.sources; print('pylsl' in sys.modules, "
                      "daqlab.sources.LSL.__name__)")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "LSL"]


def test_without_pylsl_an_lsl_source_is_a_missing_extra_error() -> None:
    done = run_python(
        "import sys; sys.modules['pylsl'] = None\n"
        "import daqlab as dl\n"
        "try:\n    dl.sources.LSL(name='x')\n"
        "except dl.MissingExtraError as e:\n    print(type(e).__name__, isinstance(e, ImportError), e)\n")
    assert done.returncode == 0, done.stderr
    assert re.match(r"MissingExtraError True LSL streams need the Python package 'pylsl'.*"
                    r"pip install 'daqlab\[lsl\]'", done.stdout), done.stdout
