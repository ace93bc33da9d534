"""Tests of :mod:`daqlab.buffer`: RingBuffer, Reader and Block.

* a hypothesis state machine checks the ring against a ``deque(maxlen=capacity)``
  model through random pushes, reads, clears and reader moves;
* a two-thread stress test checks that a lossless reader racing a fast writer
  is told about every sample it lost, exactly, and sees the rest in order;
* unit tests pin down the documented behaviour one point at a time.
"""

from __future__ import annotations

import collections
import datetime
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import partial
from typing import Any

import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from numpy.typing import NDArray

from daqlab import (
    Block,
    Calibration,
    Channel,
    ConfigurationError,
    DataRangeError,
    Quality,
    Reader,
    RingBuffer,
    ShapeError,
    validate,
)
from tests.helpers import wait_for

T0 = 1_700_000_000_000_000_000
"""A start time in ns since the epoch (2023-11-14), far from 0 so offsets show."""

RANGE = (-15.0, 15.0)
"""Valid range of the state machine's channels; values are drawn partly outside it."""


# --------------------------------------------------------------------------- helpers


def _counter_buffer(capacity: int, channels: int = 2, **kwargs: Any) -> RingBuffer:
    return RingBuffer(channels, capacity, 1000.0, start=np.datetime64(T0, "ns"), **kwargs)


def _counter_block(start: int, n: int, channels: int = 2) -> NDArray[np.float64]:
    """Sample ``k`` of channel ``c`` holds ``1000 * c + k``: order and channel are checkable."""
    k = np.arange(start, start + n, dtype=np.float64)
    return np.stack([k + 1000.0 * c for c in range(channels)])


def _times_ns(run: xr.Dataset) -> NDArray[np.int64]:
    times: NDArray[np.int64] = run["time"].values.astype("datetime64[ns]").view(np.int64)
    return times


def _expected_flags(
    values: NDArray[np.float64], quality: NDArray[np.int8], rng: tuple[float, float]
) -> NDArray[np.int8]:
    """The documented flagging rule: NaN/inf BAD, out of range SUSPECT unless flagged worse."""
    q = quality.copy()
    q[~np.isfinite(values)] = Quality.BAD
    with np.errstate(invalid="ignore"):
        out = (values < rng[0]) | (values > rng[1])
    q[out & (q == Quality.GOOD)] = Quality.SUSPECT
    return q


# --------------------------------------------------------------------------- state machine


@dataclass(frozen=True)
class Sample:
    """One sample of the model: its write-counter index, values, quality and time."""

    index: int
    values: tuple[float, ...]
    quality: tuple[int, ...]
    time: int


@dataclass
class TrackedReader:
    """A reader and what the model says about it."""

    reader: Reader
    origin: int
    position: int
    received: int = 0
    lost: int = 0
    skipped: int = 0


class RingBufferMachine(RuleBasedStateMachine):
    """RingBuffer against ``deque(maxlen=capacity)`` of samples, with readers alongside."""

    buf: RingBuffer
    model: collections.deque[Sample]

    def __init__(self) -> None:
        super().__init__()
        self.capacity = 1
        self.n_channels = 1
        self.written = 0
        self.last_time: int | None = None
        self.readers: list[TrackedReader] = []

    # ---------------------------------------------------------------- model helpers
    @property
    def lo(self) -> int:
        return self.model[0].index if self.model else self.written

    def _samples(self, start: int, n: int) -> list[Sample]:
        held = list(self.model)
        i = start - self.lo
        out = held[i : i + n]
        assert len(out) == n
        assert all(s.index == start + j for j, s in enumerate(out))
        return out

    def _arrays(
        self, samples: Sequence[Sample]
    ) -> tuple[NDArray[np.float64], NDArray[np.int8], NDArray[np.int64]]:
        c, n = self.n_channels, len(samples)
        v = np.array([s.values for s in samples], dtype=np.float64).reshape(n, c).T
        q = np.array([s.quality for s in samples], dtype=np.int8).reshape(n, c).T
        t = np.array([s.time for s in samples], dtype=np.int64)
        return v, q, t

    def _check_run(self, run: xr.Dataset, samples: Sequence[Sample]) -> None:
        v, q, t = self._arrays(samples)
        assert run["value"].dims == ("channel", "time")
        np.testing.assert_array_equal(run["value"].values, v)
        np.testing.assert_array_equal(run["quality"].values, _expected_flags(v, q, RANGE))
        np.testing.assert_array_equal(_times_ns(run), t)
        # The run is a copy: scribbling on it must not reach the buffer (later
        # checks would see it).
        run["value"].values[...] = -123.0
        run["quality"].values[...] = Quality.INTERPOLATED

    def _values(self, rng: np.random.Generator, n: int) -> NDArray[np.float64]:
        v = rng.normal(0.0, 10.0, size=(self.n_channels, n))
        v[rng.random(v.shape) < 0.1] = np.nan
        v[rng.random(v.shape) < 0.05] = np.inf
        return v

    def _record(self, values: NDArray[np.float64], q: NDArray[np.int8], times: NDArray[np.int64]) -> None:
        for j in range(values.shape[1]):
            self.model.append(
                Sample(
                    self.written + j,
                    tuple(values[:, j].tolist()),
                    tuple(int(x) for x in q[:, j]),
                    int(times[j]),
                )
            )
        self.written += values.shape[1]
        if values.shape[1]:
            self.last_time = int(times[-1])

    def _next_times(self, rng: np.random.Generator, n: int) -> NDArray[np.int64]:
        base = T0 if self.last_time is None else self.last_time
        steps = rng.integers(1, 1_000_000, size=n, dtype=np.int64)
        times: NDArray[np.int64] = base + np.cumsum(steps, dtype=np.int64)
        return times

    # ---------------------------------------------------------------- rules
    @initialize(capacity=st.integers(1, 20), n_channels=st.integers(1, 3))
    def setup(self, capacity: int, n_channels: int) -> None:
        self.capacity = capacity
        self.n_channels = n_channels
        channels = [Channel(f"ch{i}", "V", range=RANGE) for i in range(n_channels)]
        self.buf = RingBuffer(channels, capacity, 1000.0, name="machine")
        self.model = collections.deque(maxlen=capacity)
        # The lossless reader: it exists from the first sample on.
        r = self.buf.reader()
        self.readers.append(TrackedReader(r, 0, 0))

    @rule(
        data=st.data(),
        seed=st.integers(0, 2**16),
        as_datetime=st.booleans(),
        with_quality=st.booleans(),
    )
    def push_block(self, data: st.DataObject, seed: int, as_datetime: bool, with_quality: bool) -> None:
        n = data.draw(st.integers(0, 3 * self.capacity), label="n")
        rng = np.random.default_rng(seed)
        values = self._values(rng, n)
        times = self._next_times(rng, n)
        q = (
            rng.integers(0, 4, size=values.shape).astype(np.int8)
            if with_quality
            else np.zeros(values.shape, dtype=np.int8)
        )
        given_times = times.view("datetime64[ns]") if as_datetime else times
        first = self.buf.push(values, given_times, q if with_quality else None)
        assert first == self.written
        self._record(values.copy(), q.copy(), times.copy())
        # push copies: changing the caller's arrays afterwards changes nothing.
        values[...] = 777.0
        times[...] = 0
        q[...] = Quality.BAD

    @rule(seed=st.integers(0, 2**16), as_datetime=st.booleans(), with_quality=st.booleans())
    def push_one(self, seed: int, as_datetime: bool, with_quality: bool) -> None:
        rng = np.random.default_rng(seed)
        values = self._values(rng, 1)
        times = self._next_times(rng, 1)
        q = (
            rng.integers(0, 4, size=values.shape).astype(np.int8)
            if with_quality
            else np.zeros(values.shape, dtype=np.int8)
        )
        t: Any = np.datetime64(int(times[0]), "ns") if as_datetime else int(times[0])
        first = self.buf.push(values[:, 0], t, q[:, 0] if with_quality else None)
        assert first == self.written
        self._record(values, q, times)

    @precondition(lambda self: self.last_time is not None)
    @rule(n=st.integers(1, 5), back=st.integers(1, 10**6))
    def push_back_in_time(self, n: int, back: int) -> None:
        assert self.last_time is not None
        times = self.last_time - back + np.arange(n, dtype=np.int64)
        with pytest.raises(ShapeError, match="must not go back"):
            self.buf.push(np.zeros((self.n_channels, n)), times)

    @precondition(lambda self: self.last_time is not None)
    @rule(n=st.integers(2, 6), data=st.data())
    def push_unsorted(self, n: int, data: st.DataObject) -> None:
        assert self.last_time is not None
        times = self.last_time + 1 + np.arange(n, dtype=np.int64)
        i = data.draw(st.integers(1, n - 1), label="swap at")
        times[i - 1], times[i] = times[i], times[i - 1]
        with pytest.raises(ShapeError, match="non-decreasing"):
            self.buf.push(np.zeros((self.n_channels, n)), times)

    @rule(data=st.data())
    def latest(self, data: st.DataObject) -> None:
        n = data.draw(st.none() | st.integers(0, self.capacity + 3), label="latest n")
        run = self.buf.latest(n)
        k = len(self.model) if n is None else min(n, len(self.model))
        self._check_run(run, list(self.model)[len(self.model) - k :])

    @rule(data=st.data())
    def range_(self, data: st.DataObject) -> None:
        start = data.draw(st.integers(0, self.written + 3), label="start")
        n = data.draw(st.integers(0, self.capacity + 3), label="range n")
        if self.lo <= start and start + n <= self.written:
            self._check_run(self.buf.range(start, n), self._samples(start, n))
        else:
            with pytest.raises(DataRangeError, match="not held"):
                self.buf.range(start, n)

    @rule()
    def clear(self) -> None:
        before = [(t.reader.lost, t.reader.skipped) for t in self.readers]
        lo = self.lo
        self.buf.clear()
        for t, (lost0, skipped0) in zip(self.readers, before, strict=True):
            dropped = self.written - t.position
            d_lost, d_skipped = t.reader.lost - lost0, t.reader.skipped - skipped0
            # Every unread sample is accounted for once; those still held count as skipped.
            assert d_lost + d_skipped == dropped
            assert d_skipped >= self.written - max(t.position, lo)
            t.lost, t.skipped, t.position = t.reader.lost, t.reader.skipped, self.written
        self.model.clear()

    @precondition(lambda self: len(self.readers) < 4)
    @rule(from_oldest=st.booleans())
    def new_reader(self, from_oldest: bool) -> None:
        origin = self.lo if from_oldest else self.written
        self.readers.append(TrackedReader(self.buf.reader(from_oldest=from_oldest), origin, origin))

    @rule(data=st.data())
    def read(self, data: st.DataObject) -> None:
        t = self.readers[data.draw(st.integers(0, len(self.readers) - 1), label="reader")]
        max_samples = data.draw(st.none() | st.integers(0, self.capacity + 2), label="max")
        lo, hi = self.lo, self.written
        lost = max(0, lo - t.position)
        start = max(t.position, lo)
        n = hi - start if max_samples is None else min(hi - start, max_samples)
        block = t.reader.read(max_samples)
        assert isinstance(block, Block)
        assert (block.start, block.lost, len(block), block.stop) == (start, lost, n, start + n)
        v, q, times = self._arrays(self._samples(start, n))
        np.testing.assert_array_equal(block.values, v)
        np.testing.assert_array_equal(block.quality, q)  # as pushed, not flagged
        assert block.times.dtype == np.dtype("datetime64[ns]")
        np.testing.assert_array_equal(block.times.view(np.int64), times)
        block.values[...] = -1.0  # a copy: must not reach the buffer
        t.position, t.lost, t.received = start + n, t.lost + lost, t.received + n

    @rule(data=st.data())
    def skip_to_latest(self, data: st.DataObject) -> None:
        t = self.readers[data.draw(st.integers(0, len(self.readers) - 1), label="reader")]
        keep = data.draw(st.integers(0, self.capacity + 2), label="keep")
        lost0, skipped0 = t.reader.lost, t.reader.skipped
        new = max(t.position, self.written - keep)
        t.reader.skip_to_latest(keep)
        d_lost, d_skipped = t.reader.lost - lost0, t.reader.skipped - skipped0
        assert d_lost + d_skipped == new - t.position
        assert d_skipped >= new - max(t.position, min(new, self.lo))
        t.lost, t.skipped, t.position = t.reader.lost, t.reader.skipped, new

    # ---------------------------------------------------------------- invariants
    @invariant()
    def counters(self) -> None:
        assert len(self.buf) == len(self.model)
        assert self.buf.written == self.written
        assert self.buf.first_index == self.lo
        assert self.buf.overflow_count == sum(t.reader.lost for t in self.readers)

    @invariant()
    def readers_account_for_every_sample(self) -> None:
        for t in self.readers:
            r = t.reader
            assert (r.position, r.lost, r.skipped) == (t.position, t.lost, t.skipped)
            assert t.received + t.lost + t.skipped == t.position - t.origin
            assert r.available == self.written - t.position
        # The first reader was there from sample 0: it accounts for every written sample.
        first = self.readers[0]
        assert first.received + first.lost + first.skipped + first.reader.available == (
            self.written
        )


# Passing takes a few seconds; the long timeout only leaves hypothesis time to
# shrink a failure to a short, readable sequence of steps (that can take minutes).
@pytest.mark.timeout(600)
def test_ring_buffer_state_machine_matches_deque_model() -> None:
    run_state_machine_as_test(
        RingBufferMachine,
        settings=settings(
            max_examples=120,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


# --------------------------------------------------------------------------- two threads


def _block_sizes(total: int, capacity: int, seed: int) -> list[int]:
    """Mostly small blocks, a few empty ones and a few larger than the ring."""
    rng = np.random.default_rng(seed)
    sizes: list[int] = []
    left = total
    while left > 0:
        u = rng.random()
        if u < 0.01:
            n = 0
        elif u < 0.03:
            n = int(rng.integers(capacity, 3 * capacity))
        else:
            n = int(rng.integers(1, capacity // 2))
        n = min(n, left)
        sizes.append(n)
        left -= n
    return sizes


def test_lossless_reader_racing_a_writer_accounts_for_every_sample() -> None:
    total, capacity = 2_000_000, 1000
    sizes = _block_sizes(total, capacity, seed=20240501)
    counter = np.arange(total, dtype=np.int64)
    values = np.stack([counter.astype(np.float64), -counter.astype(np.float64)])
    times = T0 + counter
    buf = RingBuffer(["count", "minus"], capacity, 1e6, name="stress")
    reader = buf.reader()
    errors: list[BaseException] = []
    stats = {"received": 0, "lost": 0, "blocks": 0, "next": 0}
    writer_done = threading.Event()

    def write() -> None:
        try:
            w = 0
            for n in sizes:
                assert buf.push(values[:, w : w + n], times[w : w + n]) == w
                w += n
        except BaseException as exc:
            errors.append(exc)
        finally:
            buf.close()
            writer_done.set()

    def check(block: Block) -> None:
        assert block.lost == block.start - stats["next"] >= 0, (block.start, stats, block.lost)
        idx = np.arange(block.start, block.stop, dtype=np.float64)
        assert np.array_equal(block.values[0], idx), f"samples out of order in {block.start}.."
        assert np.array_equal(block.values[1], -idx)
        assert np.array_equal(block.times.view(np.int64), T0 + idx.astype(np.int64))
        assert not block.quality.any()
        stats["next"] = block.stop
        stats["received"] += len(block)
        stats["lost"] += block.lost
        stats["blocks"] += 1

    def read() -> None:
        try:
            while True:
                if reader.wait(timeout=30.0):
                    block = reader.read()
                    assert len(block) > 0, "wait() said True but read() found nothing"
                    check(block)
                elif buf.closed:
                    check(reader.read())  # whatever came in just before close
                    return
                else:
                    raise AssertionError("reader.wait timed out with the writer still going")
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=read, name="daqlab-test-reader", daemon=True),
        threading.Thread(target=write, name="daqlab-test-writer", daemon=True),
    ]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=60.0)
    assert not any(th.is_alive() for th in threads), "stress threads did not finish"
    assert writer_done.is_set()
    if errors:
        raise errors[0]
    assert buf.written == total
    assert stats["next"] == total
    assert stats["received"] + reader.lost == buf.written
    assert stats["lost"] == reader.lost
    assert buf.overflow_count == reader.lost
    assert reader.skipped == 0
    assert reader.available == 0


# --------------------------------------------------------------------------- unit tests: storage


@pytest.mark.parametrize(
    "sizes",
    [[3, 4, 2], [5, 5, 5], [4, 1, 1, 1, 1, 1], [1] * 13, [2, 0, 7, 3], [6]],
    ids=["uneven", "exact-capacity", "ones-after-block", "single-samples", "with-empty", "one-over"],
)
def test_wrap_around_keeps_newest_in_order(sizes: list[int]) -> None:
    capacity = 5
    rb = _counter_buffer(capacity)
    w = 0
    for n in sizes:
        assert rb.push(_counter_block(w, n), T0 + np.arange(w, w + n)) == w
        w += n
    held = min(w, capacity)
    assert (len(rb), rb.written, rb.first_index) == (held, w, w - held)
    expected = _counter_block(w - held, held)
    np.testing.assert_array_equal(rb.latest().value.values, expected)
    np.testing.assert_array_equal(_times_ns(rb.latest()), T0 + np.arange(w - held, w))
    for start in range(w - held, w):
        for n in range(w - start + 1):
            np.testing.assert_array_equal(
                rb.range(start, n).value.values, _counter_block(start, n)
            )


@pytest.mark.parametrize(
    ("before", "n"),
    [(0, 13), (3, 13), (0, 10), (4, 11), (2, 100)],
    ids=["empty-ring", "offset", "exact-double", "offset-plus-one", "many-times-over"],
)
def test_block_bigger_than_capacity_keeps_newest(before: int, n: int) -> None:
    capacity = 5
    rb = _counter_buffer(capacity)
    rb.push(_counter_block(0, before), T0 + np.arange(before))
    assert rb.push(_counter_block(before, n), T0 + np.arange(before, before + n)) == before
    w = before + n
    assert (len(rb), rb.written, rb.first_index) == (capacity, w, w - capacity)
    run = rb.latest()
    np.testing.assert_array_equal(run.value.values, _counter_block(w - capacity, capacity))
    np.testing.assert_array_equal(_times_ns(run), T0 + np.arange(w - capacity, w))
    with pytest.raises(DataRangeError, match="not held"):
        rb.range(w - capacity - 1, 1)


@pytest.mark.parametrize("pushed", [0, 3, 5, 8], ids=["empty", "partial", "full", "wrapped"])
def test_runs_from_the_buffer_follow_the_run_schema(pushed: int) -> None:
    rb = RingBuffer([Channel("a", "V", range=(0, 1)), Channel("b")], 5, 1000.0, name="rb",
                    metadata={"rig": 1})
    r = rb.reader()
    values = _counter_block(0, pushed)
    values[0, ::2] = np.nan
    rb.push(values, T0 + np.arange(pushed), np.full(values.shape, Quality.INTERPOLATED))
    lo = rb.first_index
    for run in (rb.latest(), rb.latest(2), rb.range(lo, pushed - lo), rb.to_run(r.read())):
        validate(run)
        assert run.attrs["name"] == "rb"
        assert run.attrs["metadata"] == {"rig": 1}
        assert run.attrs["id"] == rb.id
        assert run["channel"].values.tolist() == ["a", "b"]


def test_push_returns_first_index_and_empty_block_is_a_no_op() -> None:
    rb = _counter_buffer(4)
    assert rb.push(np.zeros((2, 0))) == 0
    assert rb.push(np.zeros((2, 0)), times=np.zeros(0, dtype=np.int64)) == 0
    assert (rb.written, len(rb)) == (0, 0)
    assert rb.push([1.0, 2.0]) == 0  # one sample, 1-D
    assert rb.push([[1.0, 2.0], [3.0, 4.0]]) == 1
    assert rb.push(np.zeros((2, 0))) == 3
    assert (rb.written, len(rb)) == (3, 3)


@pytest.mark.parametrize(
    ("pushed", "read"),
    [
        (3, "latest"),
        (7, "latest"),
        (3, "range"),
        (7, "range"),
        (3, "reader"),
        (7, "reader"),
    ],
    ids=["latest-flat", "latest-wrapped", "range-flat", "range-wrapped", "block-flat",
         "block-wrapped"],
)
def test_reads_are_copies(pushed: int, read: str) -> None:
    rb = _counter_buffer(5)
    r = rb.reader(from_oldest=True)
    rb.push(_counter_block(0, pushed), T0 + np.arange(pushed))
    before = rb.latest()
    lo = rb.first_index
    if read == "latest":
        out = rb.latest()
        out["value"].values[...] = -1.0
        out["quality"].values[...] = Quality.BAD
    elif read == "range":
        out = rb.range(lo, pushed - lo)
        out["value"].values[...] = -1.0
        out["quality"].values[...] = Quality.BAD
    else:
        block = r.read()
        assert len(block) == min(pushed, 5)
        block.values[...] = -1.0
        block.quality[...] = Quality.BAD
        block.times[...] = np.datetime64(0, "ns")
    after = rb.latest()
    xr.testing.assert_identical(after, before)


def test_push_copies_the_input() -> None:
    rb = _counter_buffer(5)
    values = _counter_block(0, 3)
    times = T0 + np.arange(3)
    quality = np.ones((2, 3), dtype=np.int8)
    rb.push(values, times, quality)
    values[...] = 0.0
    times[...] = 0
    quality[...] = 0
    np.testing.assert_array_equal(rb.latest().value.values, _counter_block(0, 3))
    np.testing.assert_array_equal(_times_ns(rb.latest()), T0 + np.arange(3))
    assert (rb.latest().quality.values == Quality.SUSPECT).all()


# --------------------------------------------------------------------------- unit tests: times


def _nominal(start_ns: int, k: int, rate: float) -> int:
    """``start + k / rate`` rounded to the nanosecond (half to even), in exact arithmetic."""
    return start_ns + round(Fraction(k * 10**9) / Fraction(rate))


@pytest.mark.parametrize(
    "rate", [1000.0, 3.0, 7.0, 48_000.0, 0.5, 44_100.0], ids=lambda r: f"{r:g}Hz"
)
@pytest.mark.parametrize(
    "sizes", [[1] * 7, [4, 0, 10, 3], [50]], ids=["single", "blocks", "one-block"]
)
@pytest.mark.parametrize(
    "start",
    ["2024-01-01T00:00:00Z", np.datetime64(T0, "ns"), datetime.datetime(2024, 5, 1, 12,
                                                                       tzinfo=datetime.UTC)],
    ids=["iso-text", "datetime64", "aware-datetime"],
)
def test_default_times_are_start_plus_k_over_rate(
    rate: float, sizes: list[int], start: Any
) -> None:
    rb = RingBuffer(2, 100, rate, start=start)
    start_ns = int(
        np.datetime64(
            start.astimezone(datetime.UTC).replace(tzinfo=None)
            if isinstance(start, datetime.datetime)
            else str(start).rstrip("Z"),
            "ns",
        ).view(np.int64)
    )
    w = 0
    for n in sizes:
        rb.push(np.zeros((2, n)))
        w += n
    expected = [_nominal(start_ns, k, rate) for k in range(w)]
    assert _times_ns(rb.latest()).tolist() == expected


def test_default_times_without_start_follow_the_wall_clock_then_the_rate() -> None:
    rate = 3.0
    rb = RingBuffer(1, 100, rate)
    before = time.time_ns()
    rb.push(np.zeros((1, 4)))
    after = time.time_ns()
    rb.push(np.zeros((1, 5)))
    t = _times_ns(rb.latest())
    assert before <= t[0] <= after
    assert t.tolist() == [_nominal(int(t[0]), k, rate) for k in range(9)]


def test_default_times_continue_after_explicit_times_that_ran_ahead() -> None:
    rb = RingBuffer(1, 100, 10.0, start=np.datetime64(0, "ns"))
    rb.push(np.zeros((1, 2)))  # 0.0 s, 0.1 s
    rb.push(np.zeros((1, 1)), times=[5_000_000_000])  # explicit, ahead of the nominal 0.2 s
    rb.push(np.zeros((1, 3)))
    rb.push(np.zeros(1))
    assert _times_ns(rb.latest()).tolist() == [
        0, 100_000_000, 5_000_000_000, 5_100_000_000, 5_200_000_000, 5_300_000_000, 5_400_000_000
    ]


@pytest.mark.parametrize(
    ("first", "second", "match"),
    [
        ([10, 20], [15, 30], "must not go back"),
        ([10, 20], [19], "must not go back"),
        ([10], np.datetime64(9, "ns"), "must not go back"),
        ([], [5, 4], "non-decreasing"),
        ([10], [11, 13, 12], "non-decreasing"),
    ],
    ids=["across-blocks", "single-after-block", "scalar-datetime64", "within-first-block",
         "within-later-block"],
)
def test_times_going_back_raise_shape_error(first: Any, second: Any, match: str) -> None:
    rb = RingBuffer(1, 10, 1.0)
    rb.push(np.zeros((1, len(first))), times=np.asarray(first, dtype=np.int64))
    n = np.atleast_1d(np.asarray(second)).shape[0]
    values = np.zeros(1) if np.ndim(second) == 0 else np.zeros((1, n))
    with pytest.raises(ShapeError, match=match):
        rb.push(values, times=second)
    assert rb.written == len(first)  # nothing was stored
    np.testing.assert_array_equal(_times_ns(rb.latest()), np.asarray(first, dtype=np.int64))


def test_equal_times_are_allowed() -> None:
    rb = RingBuffer(1, 10, 1.0)
    rb.push(np.zeros((1, 2)), times=[7, 7])
    rb.push(np.zeros((1, 1)), times=[7])
    assert _times_ns(rb.latest()).tolist() == [7, 7, 7]


@pytest.mark.parametrize(
    "times",
    [
        np.array(["NaT", "2024-01-01"], dtype="datetime64[ns]"),
        np.array(["NaT", "NaT"], dtype="datetime64[ns]"),
        np.datetime64("NaT", "ns"),
    ],
    ids=["first-nat", "all-nat", "scalar-nat"],
)
def test_nat_times_raise_shape_error(times: Any) -> None:
    """Every sample needs a timestamp; NaT would make ``latest()`` return an invalid run.

    ``make_run`` refuses NaT with a ShapeError; the buffer must not accept what
    the run schema (``validate``) then rejects.
    """
    rb = RingBuffer(1, 10, 1.0)
    n = np.atleast_1d(times).shape[0]
    with pytest.raises(ShapeError, match="NaT"):
        rb.push(np.zeros(1) if np.ndim(times) == 0 else np.zeros((1, n)), times=times)
    assert rb.written == 0


# --------------------------------------------------------------------------- unit tests: errors


@pytest.mark.parametrize(
    ("values", "match"),
    [
        (np.zeros((2, 3, 4)), r"got shape \(2, 3, 4\)"),
        (np.zeros((3, 5)), r"got shape \(3, 5\)"),
        (np.zeros(5), r"got shape \(5,\)"),
        (np.float64(1.0), r"got shape \(\)"),
        (np.zeros((1, 4)), r"2 channel\(s\); got shape \(1, 4\)"),
    ],
    ids=["3-d", "too-many-channels", "1-d-wrong-length", "scalar", "too-few-channels"],
)
def test_wrong_value_shape_raises_shape_error_naming_the_shape(values: Any, match: str) -> None:
    rb = RingBuffer(["a", "b"], 10, 1.0)
    with pytest.raises(ShapeError, match=match):
        rb.push(values)
    assert rb.written == 0


@pytest.mark.parametrize("n", [1, 3, 7], ids=["one-sample", "three", "seven"])
def test_transposed_values_get_a_hint(n: int) -> None:
    rb = RingBuffer(["a", "b"], 10, 1.0)
    with pytest.raises(ShapeError, match=r"got shape \(\d+, 2\)\. It looks transposed: pass values\.T"):
        rb.push(np.zeros((n, 2)))


@pytest.mark.parametrize(
    "values",
    [[["a", "b"], ["c", "d"]], [{"x": 1}, {"y": 2}]],
    ids=["text", "dicts"],
)
def test_non_numeric_values_raise_shape_error(values: Any) -> None:
    """Like ``make_run``: a ShapeError saying the values must be numeric.

    (Not numpy's bare ValueError/TypeError; ``None`` is fine, it becomes NaN as in make_run.)
    """
    rb = RingBuffer(["a", "b"], 10, 1.0)
    with pytest.raises(ShapeError, match="numeric"):
        rb.push(values)
    assert rb.written == 0


@pytest.mark.parametrize(
    ("times", "match"),
    [
        (np.arange(3), r"times must have shape \(4,\), one per sample; got \(3,\)"),
        (np.zeros((2, 2), dtype=np.int64), r"times must have shape \(4,\).*got \(2, 2\)"),
        (np.arange(4) * 1.5, r"dtype float64"),
        (np.array(["a", "b", "c", "d"]), r"times must be datetime64 or integer"),
    ],
    ids=["too-few", "2-d", "float-seconds", "text"],
)
def test_bad_times_raise_shape_error(times: Any, match: str) -> None:
    rb = RingBuffer(1, 10, 1.0)
    with pytest.raises(ShapeError, match=match):
        rb.push(np.zeros((1, 4)), times=times)
    assert rb.written == 0


@pytest.mark.parametrize(
    ("quality", "match"),
    [
        (np.zeros((1, 3), dtype=np.int8), r"quality must have the shape of values \(2, 3\); got \(1, 3\)"),
        (np.zeros((3, 2), dtype=np.int8), r"got \(3, 2\)"),
        (np.full((2, 3), 4), r"quality must hold integers \[0, 1, 2, 3\]"),
        (np.full((2, 3), -1), r"quality must hold integers"),
        (np.zeros((2, 3)), r"quality must hold integers"),
    ],
    ids=["wrong-channels", "transposed", "unknown-flag", "negative-flag", "float-dtype"],
)
def test_bad_quality_raises_shape_error(quality: Any, match: str) -> None:
    rb = RingBuffer(["a", "b"], 10, 1.0)
    with pytest.raises(ShapeError, match=match):
        rb.push(np.zeros((2, 3)), quality=quality)
    assert rb.written == 0


@pytest.mark.parametrize(
    "capacity", [0, -1, 2.5, True, "10", None, 10.0], ids=["zero", "negative", "fraction", "bool",
                                                        "text", "none", "float"]
)
def test_bad_capacity_raises_configuration_error(capacity: Any) -> None:
    with pytest.raises(ConfigurationError, match="capacity must be a whole number"):
        RingBuffer(1, capacity, 1.0)


@pytest.mark.parametrize(
    "rate",
    [0.0, -5.0, float("nan"), float("inf"), "1000", True, None],
    ids=["zero", "negative", "nan", "inf", "text", "bool", "none"],
)
def test_bad_sample_rate_raises_configuration_error(rate: Any) -> None:
    with pytest.raises(ConfigurationError, match="sample_rate must be"):
        RingBuffer(1, 10, rate)


def test_numpy_integer_capacity_is_accepted() -> None:
    capacity: Any = np.int64(3)  # typed as int, accepted as any whole number
    assert RingBuffer(1, capacity, 1.0).capacity == 3


@pytest.mark.parametrize(
    "call",
    ["latest(-1)", "latest(1.5)", "latest(True)", "range(-1, 2)", "range(0, -1)",
     "range(0, 1.0)", "range(True, 1)"],
    ids=["latest-negative", "latest-float", "latest-bool", "range-negative-start",
         "range-negative-n", "range-float-n", "range-bool-start"],
)
def test_bad_read_arguments_raise_configuration_error(call: str) -> None:
    rb = _counter_buffer(5)
    rb.push(_counter_block(0, 3))
    with pytest.raises(ConfigurationError, match="whole number"):
        eval(f"rb.{call}", {"rb": rb})


def test_range_outside_what_is_held_raises_data_range_error() -> None:
    rb = _counter_buffer(5)
    rb.push(_counter_block(0, 8))  # holds 3..7
    rb.range(3, 5)
    rb.range(8, 0)
    for start, n in [(2, 1), (2, 0), (7, 2), (8, 1), (100, 0)]:
        with pytest.raises(DataRangeError, match=r"this buffer holds 3\.\.7 \(capacity 5, 8 written\)"):
            rb.range(start, n)


def test_push_after_close_raises() -> None:
    rb = _counter_buffer(5)
    rb.close()
    assert rb.closed
    with pytest.raises(ConfigurationError, match="closed"):
        rb.push(_counter_block(0, 1))


# --------------------------------------------------------------------------- unit tests: quality


@pytest.mark.parametrize(
    ("value", "flag"),
    [
        (np.nan, Quality.BAD),
        (np.inf, Quality.BAD),
        (-np.inf, Quality.BAD),
        (10.5, Quality.SUSPECT),
        (-0.5, Quality.SUSPECT),
        (10.0, Quality.GOOD),
        (0.0, Quality.GOOD),
    ],
    ids=["nan", "inf", "-inf", "above-range", "below-range", "at-max", "at-min"],
)
def test_latest_flags_bad_and_out_of_range_values(value: float, flag: Quality) -> None:
    rb = RingBuffer([Channel("a", range=(0, 10)), Channel("free")], 4, 1.0)
    r = rb.reader()
    rb.push([[1.0, value, 2.0], [value, value, value]])
    q = rb.latest().quality.values
    assert q[0].tolist() == [Quality.GOOD, flag, Quality.GOOD]
    # The unbounded channel flags only non-finite values.
    free = Quality.BAD if flag == Quality.BAD else Quality.GOOD
    assert q[1].tolist() == [free] * 3
    # Blocks carry the flags as pushed; to_run adds the rules.
    block = r.read()
    assert not block.quality.any()
    np.testing.assert_array_equal(rb.to_run(block).quality.values, q)


def test_range_is_checked_on_calibrated_values() -> None:
    ch = Channel("t", "degC", range=(0, 100), calibration=Calibration(slope=10.0, offset=-50.0))
    rb = RingBuffer([ch], 4, 1.0)
    rb.push([[4.0, 16.0, 3.0, 15.0]])  # physical -10, 110, -20, 100
    assert rb.latest().quality.values[0].tolist() == [1, 1, 1, 0]
    assert rb.latest().value.values[0].tolist() == [4.0, 16.0, 3.0, 15.0]  # raw values kept


@pytest.mark.parametrize(
    ("value", "given", "shown"),
    [
        (1.0, Quality.SUSPECT, Quality.SUSPECT),
        (1.0, Quality.BAD, Quality.BAD),
        (1.0, Quality.INTERPOLATED, Quality.INTERPOLATED),
        (np.nan, Quality.SUSPECT, Quality.BAD),
        (np.nan, Quality.INTERPOLATED, Quality.BAD),
        (99.0, Quality.INTERPOLATED, Quality.INTERPOLATED),
        (99.0, Quality.BAD, Quality.BAD),
        (99.0, Quality.GOOD, Quality.SUSPECT),
    ],
    ids=["suspect-kept", "bad-kept", "interpolated-kept", "nan-over-suspect",
         "nan-over-interpolated", "out-of-range-interpolated-kept", "out-of-range-bad-kept",
         "out-of-range-good-made-suspect"],
)
def test_quality_given_to_push_is_kept(value: float, given: Quality, shown: Quality) -> None:
    rb = RingBuffer([Channel("a", range=(0, 10))], 4, 1.0)
    r = rb.reader()
    rb.push([[value, 2.0]], quality=[[int(given), int(Quality.GOOD)]])
    rb.push([value], quality=[int(given)])  # one sample, 1-D
    assert rb.latest().quality.values[0].tolist() == [shown, Quality.GOOD, shown]
    assert r.read().quality[0].tolist() == [given, Quality.GOOD, given]


def test_default_quality_is_good_also_where_flags_were_before() -> None:
    rb = RingBuffer(1, 3, 1.0)
    rb.push([[1.0, 2.0, 3.0]], quality=[[2, 2, 2]])
    rb.push([[4.0, 5.0]])  # overwrites two slots without quality: they must read GOOD
    assert rb.latest().quality.values[0].tolist() == [2, 0, 0]


# --------------------------------------------------------------------------- unit tests: readers


def test_clear_counts_into_skipped_not_lost() -> None:
    rb = _counter_buffer(10)
    r = rb.reader()
    rb.push(_counter_block(0, 5))
    rb.clear()
    assert (r.skipped, r.lost, rb.overflow_count) == (5, 0, 0)
    assert (len(rb), rb.written, rb.first_index) == (0, 5, 5)
    assert len(r.read()) == 0
    assert rb.latest().sizes["time"] == 0
    with pytest.raises(DataRangeError):
        rb.range(4, 1)
    rb.push(_counter_block(5, 3))
    block = r.read()
    assert (block.start, block.lost, len(block)) == (5, 0, 3)
    np.testing.assert_array_equal(block.values, _counter_block(5, 3))
    assert (r.skipped, r.lost) == (5, 0)
    assert rb.reader(from_oldest=True).position == 5


def test_clear_after_an_overrun_still_reports_the_lost_samples() -> None:
    """The writer lapped the reader before the clear: those samples were lost, not skipped.

    The module promises "a reader that the writer laps is told exactly how many
    samples it lost"; a ``clear()`` between the overrun and the next read must
    not turn the overrun into a skip (``skipped`` is documented as "dropped
    unread by clear()", and these were gone before the clear).
    """
    rb = _counter_buffer(4)
    r = rb.reader()
    rb.push(_counter_block(0, 10))  # samples 0..5 overwritten unread, 6..9 held
    rb.clear()
    assert (r.lost, r.skipped) == (6, 4)
    assert rb.overflow_count == 6


def test_reader_iteration_ends_after_close_once_drained() -> None:
    rb = _counter_buffer(10)
    r = rb.reader()
    for w, n in [(0, 2), (2, 3), (5, 1)]:
        rb.push(_counter_block(w, n))
    rb.close()
    blocks = list(r)
    assert sum(len(b) for b in blocks) == 6
    np.testing.assert_array_equal(
        np.concatenate([b.values for b in blocks], axis=1), _counter_block(0, 6)
    )
    assert list(r) == []
    assert r.wait(timeout=None) is False  # closed and drained: returns at once


def _at(reader: Reader, position: int) -> bool:
    return reader.position == position


def test_reader_iteration_in_a_thread_follows_the_writer_until_close() -> None:
    rb = _counter_buffer(50)
    r = rb.reader()
    got: list[Block] = []
    errors: list[BaseException] = []
    started = threading.Event()

    def consume() -> None:
        try:
            started.set()
            got.extend(r)
        except BaseException as exc:
            errors.append(exc)

    th = threading.Thread(target=consume, name="daqlab-test-iterate", daemon=True)
    th.start()
    assert started.wait(10.0)
    w = 0
    for n in [3, 1, 4, 1, 5, 9, 2, 6]:
        rb.push(_counter_block(w, n))
        w += n
        wait_for(partial(_at, r, w), what=f"reader to catch up to {w}")
    rb.close()
    th.join(timeout=10.0)
    assert not th.is_alive()
    assert not errors
    np.testing.assert_array_equal(np.concatenate([b.values for b in got], axis=1),
                                  _counter_block(0, w))
    assert all(b.lost == 0 for b in got)


def test_reader_close_ends_iteration() -> None:
    rb = _counter_buffer(10)
    r = rb.reader()
    done = threading.Event()
    started = threading.Event()

    def consume() -> None:
        started.set()
        for _ in r:
            pass
        done.set()

    th = threading.Thread(target=consume, name="daqlab-test-reader-close", daemon=True)
    th.start()
    assert started.wait(10.0)
    r.close()
    assert done.wait(10.0)
    th.join(timeout=10.0)
    assert not th.is_alive()


def test_wait_returns_false_on_timeout_with_nothing_new() -> None:
    rb = _counter_buffer(10)
    r = rb.reader()
    assert r.wait(timeout=0.01) is False
    assert r.wait(timeout=0) is False
    rb.push(_counter_block(0, 2))
    assert r.wait(timeout=0) is True
    r.read()
    assert r.wait(timeout=0.01) is False


@pytest.mark.parametrize(
    ("wake", "expected"),
    [
        pytest.param(lambda rb: rb.push(_counter_block(0, 1)), True, id="writer-pushes"),
        pytest.param(lambda rb: rb.close(), False, id="buffer-closes"),
    ],
)
def test_wait_returns_when(wake: Callable[[RingBuffer], object], expected: bool) -> None:
    rb = _counter_buffer(10)
    r = rb.reader()
    result: list[bool] = []
    waiting = threading.Event()

    def waiter() -> None:
        waiting.set()
        result.append(r.wait(timeout=30.0))

    th = threading.Thread(target=waiter, name="daqlab-test-waiter", daemon=True)
    th.start()
    assert waiting.wait(10.0)
    wake(rb)
    th.join(timeout=10.0)
    assert not th.is_alive()
    assert result == [expected]


@pytest.mark.parametrize(
    ("keep", "start", "skipped"),
    [(0, 10, 10), (3, 7, 7), (10, 0, 0), (25, 0, 0)],
    ids=["keep-none", "keep-three", "keep-all", "keep-more-than-written"],
)
def test_skip_to_latest(keep: int, start: int, skipped: int) -> None:
    rb = _counter_buffer(20)
    r = rb.reader()
    rb.push(_counter_block(0, 10))
    r.skip_to_latest(keep)
    assert (r.skipped, r.lost, r.position) == (skipped, 0, start)
    block = r.read()
    assert (block.start, len(block), block.lost) == (start, 10 - start, 0)
    np.testing.assert_array_equal(block.values, _counter_block(start, 10 - start))
    r.skip_to_latest(0)  # nothing new: no change
    assert (r.skipped, r.position) == (skipped, 10)


@pytest.mark.parametrize("keep", [-1, -3, 1.5], ids=["minus-one", "minus-three", "float"])
def test_skip_to_latest_refuses_a_bad_keep(keep: Any) -> None:
    """Like ``latest(n)``: keep must be a whole number >= 0.

    A negative ``keep`` must not move the cursor past the write counter (that
    counts never-written samples as skipped, makes ``available`` negative, and
    the next ``read()`` moves the cursor back again); a fractional one must not
    make the cursor a float (every later ``read()`` then raises TypeError).
    """
    rb = _counter_buffer(10)
    r = rb.reader()
    rb.push(_counter_block(0, 2))
    with pytest.raises(ConfigurationError):
        r.skip_to_latest(keep)
    assert (r.position, r.skipped, r.available) == (0, 0, 2)


def test_skip_to_latest_never_moves_back() -> None:
    rb = _counter_buffer(20)
    r = rb.reader()
    rb.push(_counter_block(0, 10))
    r.read(max_samples=8)
    r.skip_to_latest(5)  # would be 5, but the reader is at 8 already
    assert (r.position, r.skipped) == (8, 0)


def test_multiple_readers_have_independent_cursors() -> None:
    rb = _counter_buffer(6)
    fast, slow = rb.reader(), rb.reader()
    rb.push(_counter_block(0, 5))
    b = fast.read()
    assert (b.start, len(b)) == (0, 5)
    b = slow.read(max_samples=2)
    assert (b.start, len(b)) == (0, 2)
    late, oldest = rb.reader(), rb.reader(from_oldest=True)
    assert (late.position, oldest.position) == (5, 0)
    rb.push(_counter_block(5, 3))  # holds 2..7
    b = fast.read()
    assert (b.start, len(b), b.lost) == (5, 3, 0)
    b = slow.read()
    assert (b.start, len(b), b.lost) == (2, 6, 0)
    b = late.read()
    assert (b.start, len(b), b.lost) == (5, 3, 0)
    rb.push(_counter_block(8, 4))  # holds 6..11: oldest (at 0) lost 6
    b = oldest.read()
    assert (b.start, len(b), b.lost) == (6, 6, 6)
    np.testing.assert_array_equal(b.values, _counter_block(6, 6))
    assert (fast.lost, slow.lost, late.lost, oldest.lost) == (0, 0, 0, 6)
    assert rb.overflow_count == 6
    for r in (fast, slow, late):
        b = r.read()
        assert (b.start, len(b), b.lost) == (8, 4, 0)
    fast.skip_to_latest(0)
    rb.clear()
    assert [r.skipped for r in (fast, slow, late, oldest)] == [0, 0, 0, 0]


def test_overrun_gap_is_visible_in_lost_and_times() -> None:
    rb = _counter_buffer(4, channels=1)
    r = rb.reader()
    rb.push(_counter_block(0, 2, channels=1), T0 + np.arange(2) * 10)
    assert len(r.read()) == 2
    rb.push(_counter_block(2, 9, channels=1), T0 + np.arange(2, 11) * 10)
    b = r.read()
    assert (b.start, b.lost, len(b), b.stop) == (7, 5, 4, 11)
    assert b.times.view(np.int64)[0] - (T0 + 10) == 60  # the gap shows in the times


@pytest.fixture
def many_readers() -> Iterator[list[Reader]]:
    rb = _counter_buffer(8)
    readers = [rb.reader() for _ in range(3)]
    yield readers
    rb.close()


def test_read_max_samples(many_readers: list[Reader]) -> None:
    a, b, c = many_readers
    a.buffer.push(_counter_block(0, 5))
    assert len(a.read(max_samples=0)) == 0
    with pytest.raises(ConfigurationError, match=r"max_samples must be a whole number >= 0"):
        b.read(max_samples=-3)
    assert [len(c.read(max_samples=2)) for _ in range(4)] == [2, 2, 1, 0]
    assert (a.position, b.position, c.position) == (0, 0, 5)


# ------------------------------------------------------------------- the shared block checks (issue 12)


@pytest.mark.parametrize(
    ("values", "match"),
    [
        (np.array([[1 + 2j, 3 + 0j]]), r"got dtype complex128\. Samples are real numbers; pass values\.real"),
        (np.array([[True, False]]), r"got dtype bool\. Bool is not a measurement"),
        ([["1.5", "2.5"]], r"got dtype <U3\. Parse the text into numbers first"),
        (np.array([[b"1", b"2"]]), r"got dtype \|S1\. Decode and parse the bytes"),
        (np.array([["2024-01-01", "2024-01-02"]], "datetime64[D]"), r"Timestamps are not values"),
        (np.array([[1.0, "x"]], dtype=object), r"got str 'x' at flat index 1"),
        (np.array([[1.0, True]], dtype=object), r"got bool True at flat index 1"),
        ([[1.0, 2.0], [3.0]], r"values must be a rectangular array.*Give every row the same length"),
    ],
    ids=["complex", "bool", "numeric-text", "bytes", "datetime64", "object-text", "object-bool",
         "ragged"],
)
def test_push_refuses_values_that_are_not_real_numbers(values: Any, match: str) -> None:
    """Complex values lost their imaginary part, bool and numeric text were taken as numbers."""
    rb = RingBuffer(1, 10, 1.0)  # the values are refused before their shape is looked at
    with pytest.raises(ShapeError, match=match):
        rb.push(values)
    assert rb.written == 0


def test_push_takes_any_real_dtype_none_and_masked_entries_as_nan() -> None:
    rb = RingBuffer(["a", "b"], 10, 1.0, start="2024-01-01")
    rb.push(np.array([[1, 2], [3, 4]], dtype=np.int16))
    rb.push(np.array([[0.5], [1.5]], dtype=np.float32))
    rb.push(np.array([[5.0, None]], dtype=object).reshape(2, 1))
    rb.push(np.ma.masked_array([[7.0], [8.0]], mask=[[False], [True]]))
    got = rb.latest().value.values
    np.testing.assert_array_equal(got, [[1.0, 2.0, 0.5, 5.0, 7.0], [3.0, 4.0, 1.5, np.nan, np.nan]])


@pytest.mark.parametrize(
    ("times", "match"),
    [
        (np.array([1.7e9, 1.7e9 + 1]), r"dtype float64\. Float times are refused.*np\.round\(t \* 1e9\)"),
        (np.array([True, True]), r"got dtype bool"),
        (np.array([1 + 0j, 2 + 0j]), r"got dtype complex128"),
        (np.array([datetime.datetime(2024, 1, 1)] * 2, dtype=object),
         r"dtype object\. Convert datetime objects with np\.asarray\(times, dtype='datetime64\[ns\]'\)"),
        (np.array(["2024-01-01", "2024-01-02"]), r"Parse ISO 8601 text"),
        (np.array([b"2024-01-01", b"2024-01-02"]), r"got dtype \|S10"),
        (np.array([1, 2], dtype="timedelta64[s]"), r"These are durations"),
        (np.array([1, 2**63], dtype=np.uint64), r"must fit int64; got 9223372036854775808"),
        (np.array(["2024-01-01", "3000-01-01"], dtype="datetime64[s]"),
         r"outside the range of datetime64\[ns\].*the first 3000-01-01T00:00:00 at index 1"),
        (np.array(["2024-01-01", "NaT"], dtype="datetime64[ns]"), r"times hold NaT"),
        ([[1, 2], [3]], r"times must be a rectangular array"),
    ],
    ids=["float-seconds", "bool", "complex", "datetime-objects", "text", "bytes", "timedelta",
         "uint64-past-int64", "year-3000-in-seconds", "nat-after-a-time", "ragged"],
)
def test_push_refuses_bad_times_naming_the_fix(times: Any, match: str) -> None:
    rb = RingBuffer(1, 10, 1.0)
    with pytest.raises(ShapeError, match=match):
        rb.push(np.zeros((1, 2)), times=times)
    assert rb.written == 0


def test_push_takes_datetime64_of_any_unit_and_integer_ns() -> None:
    rb = RingBuffer(1, 10, 1.0)
    rb.push(np.zeros((1, 2)), times=np.array(["2024-01-01", "2024-01-02"], dtype="datetime64[D]"))
    rb.push(np.zeros((1, 1)), times=np.array([1_704_240_000_000_000_000], dtype=np.uint64))
    assert rb.latest().time.values.astype(str).tolist() == [
        "2024-01-01T00:00:00.000000000", "2024-01-02T00:00:00.000000000",
        "2024-01-03T00:00:00.000000000"]


def test_stamps_that_would_pass_2262_are_refused_not_wrapped() -> None:
    """Untimed samples after a time near datetime64[ns]'s end wrapped around to 1677."""
    rb = RingBuffer(1, 10, 1000.0)
    rb.push(np.zeros((1, 1)), times=[np.iinfo(np.int64).max - 10])
    with pytest.raises(ShapeError, match=r"would pass datetime64\[ns\]'s end \(2262-04-11\)"):
        rb.push(np.zeros((1, 3)))
    assert rb.written == 1
    assert validate(rb.latest()) is not None


@pytest.mark.parametrize(
    ("quality", "match"),
    [
        ([[300, 0], [0, 0]], r"quality must hold integers \[0, 1, 2, 3\] \(daqlab\.Quality\); got \[300\]"),
        (np.array([[True, True], [False, False]]), r"got dtype bool"),
        ([[0, 1], [0]], r"quality must be a rectangular array"),
        (np.zeros(2, np.int8), r"quality must have the shape of values \(2, 2\); got \(2,\)"),
    ],
    ids=["300", "bool", "ragged", "flat"],
)
def test_push_refuses_bad_quality(quality: Any, match: str) -> None:
    rb = RingBuffer(["a", "b"], 10, 1.0)
    with pytest.raises(ShapeError, match=match):
        rb.push(np.zeros((2, 2)), quality=quality)
    assert rb.written == 0


@pytest.mark.parametrize("capacity", [2**62, 10**14], ids=["too-big-for-numpy", "too-big-for-memory"])
def test_a_capacity_beyond_memory_is_a_configuration_error(capacity: int) -> None:
    with pytest.raises(ConfigurationError, match=rf"capacity={capacity} samples x 2 channel\(s\) needs"):
        RingBuffer(["a", "b"], capacity, 1.0)


@pytest.mark.parametrize(
    "start",
    [np.datetime64("3000-01-01", "s"), datetime.datetime(3000, 1, 1), "3000-01-01",
     datetime.date(1000, 1, 1)],
    ids=["datetime64-s", "datetime", "text", "date"],
)
def test_a_start_outside_the_ns_range_is_refused_not_wrapped(start: Any) -> None:
    """``start`` in year 3000 silently became 1830-11-23."""
    with pytest.raises(ConfigurationError, match=r"outside the range of datetime64\[ns\]"):
        RingBuffer(1, 10, 1.0, start=start)


@pytest.mark.parametrize("start", ["NaT", np.datetime64("NaT", "ns")], ids=["text", "datetime64"])
def test_a_nat_start_is_refused(start: Any) -> None:
    """Sample 0 was stamped NaT, making ``latest()`` an invalid run."""
    with pytest.raises(ConfigurationError, match=r"start must be a date, not NaT"):
        RingBuffer(1, 10, 1.0, start=start)


def test_metadata_is_what_the_runs_carry_and_read_only() -> None:
    meta = {"rig": {"id": 1, "tags": ["a"]}}
    rb = RingBuffer(1, 10, 1.0, metadata=meta)
    meta["rig"]["id"] = 2  # the buffer keeps its own copy
    assert rb.metadata == {"rig": {"id": 1, "tags": ["a"]}}
    rb.push([1.0])
    assert rb.latest().attrs["metadata"] == rb.metadata
    rb.metadata["rig"]["tags"].append("b")  # changing what it returns changes nothing here
    assert rb.metadata == {"rig": {"id": 1, "tags": ["a"]}}
    with pytest.raises(AttributeError):
        rb.metadata = {}  # type: ignore[misc]
    assert RingBuffer(1, 10, 1.0).metadata == {}
