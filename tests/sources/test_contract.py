"""One contract for every source kind: Simulated, Replay (of a run and of a file), Push, and a
source written by a user against the documented :class:`daqlab.sources.Source` protocol alone.

Every test takes the ``kind`` fixture and runs once per kind. Nothing depends on the machine's
speed: sources run unpaced (or are fed by a driver), their wall clocks are injected, data is
seeded, and every wait is a condition with a timeout. Sources whose ``read`` must wait (for the
stop tests) wait for an hour or more, so a prompt return can only come from ``stop()``.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
from numpy.typing import NDArray

import daqlab as dl
from daqlab.events import AcquisitionFailed
from daqlab.sources import Push, Replay, Samples, Simulated, Source
from tests.helpers import read_to_end, wait_for

T0 = dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.UTC)
T0_NS = np.datetime64("2024-05-06T07:08:09", "ns")
RATE = 1000.0  # 1 ms a sample: every timestamp is a whole number of nanoseconds
STEP_NS = 1_000_000
N = 1000
CHANNELS = (
    dl.Channel("ai0", "V", range=(-10.0, 10.0)),
    dl.Channel("temp", "degC", calibration=dl.Calibration(2.0, 1.0, "2024-01-01")),
    dl.Channel("x"),
)
PATIENCE = 20.0
"""Seconds any condition may take before a test fails (the machine is small and busy)."""
PROMPT = 5.0
"""A read that would wait ``LONG`` seconds must return within this long of ``stop()``."""
LONG = 60.0


def wall_clock() -> dt.datetime:
    return T0


def expected_times(n: int = N) -> NDArray[np.datetime64]:
    out: NDArray[np.datetime64] = T0_NS + (np.arange(n) * STEP_NS).astype("timedelta64[ns]")
    return out


# --------------------------------------------------------------------------- a user's own source


class DeviceGone(RuntimeError):
    """What the user's driver raises when its device goes away."""


class UserSource:
    """A source as a user writes one: the documented ``Source`` protocol, no daqlab base class.

    ``n_samples`` seeded normal values in blocks of ``block``, sample ``k`` stamped
    ``t0 + k / sample_rate`` with ``t0`` from ``wall_clock`` at ``start()``; every 50th sample of
    the last channel flagged SUSPECT. The device takes ``latency`` seconds to answer a read
    (``stop()`` interrupts it), and with ``fail_after`` it goes away after that many blocks.
    """

    def __init__(self, channels: Sequence[dl.Channel], sample_rate: float, *, seed: int,
                 n_samples: int, block: int = 77, latency: float = 0.0,
                 fail_after: int | None = None,
                 wall_clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)) -> None:
        self._channels = tuple(channels)
        self._rate = float(sample_rate)
        self._seed = seed
        self._n = n_samples
        self._block = block
        self._latency = latency
        self._fail_after = fail_after
        self._wall_clock = wall_clock
        self._stopped = threading.Event()
        self._t0: np.datetime64 | None = None
        self._rng = np.random.default_rng(seed)
        self._k = 0
        self._blocks = 0

    @property
    def channels(self) -> tuple[dl.Channel, ...]:
        return self._channels

    @property
    def sample_rate(self) -> float:
        return self._rate

    @property
    def finished(self) -> bool:
        return self._k >= self._n

    def start(self) -> None:
        if self._t0 is not None:
            raise dl.SourceError("this UserSource was started already")
        now = self._wall_clock().astimezone(dt.UTC).replace(tzinfo=None)
        self._t0 = np.datetime64(now, "ns")

    def read(self, timeout: float) -> Samples | None:
        if self._t0 is None:
            raise dl.SourceError("read() before start(): call start() first")
        if self._stopped.wait(min(timeout, self._latency)) or self.finished:
            return None
        if self._fail_after is not None and self._blocks >= self._fail_after:
            raise DeviceGone("device unplugged")
        n = min(self._block, self._n - self._k)
        k = np.arange(self._k, self._k + n)
        values = self._rng.standard_normal((len(self._channels), n))
        times = self._t0 + np.rint(k * 1e9 / self._rate).astype("timedelta64[ns]")
        quality = np.zeros(values.shape, np.int8)
        quality[-1, k % 50 == 0] = dl.Quality.SUSPECT
        self._k += n
        self._blocks += 1
        return Samples(values, times, quality)

    def stop(self) -> None:
        self._stopped.set()

    def describe(self) -> dict[str, Any]:
        return {"type": "tests.UserSource", "seed": self._seed, "n_samples": self._n,
                "sample_rate": self._rate, "channels": [c.name for c in self._channels]}


# --------------------------------------------------------------------------- the kinds


def original_run() -> xr.Dataset:
    """What the replays play: NaN, inf, an out-of-range value and every quality flag."""
    values = np.random.default_rng(11).standard_normal((len(CHANNELS), N))
    values[0, 10] = np.nan
    values[1, 20] = np.inf
    values[0, 30] = 50.0  # outside ai0's range: SUSPECT
    quality = np.zeros(values.shape, np.int8)
    quality[2, 40:45] = dl.Quality.INTERPOLATED
    quality[1, 50] = dl.Quality.SUSPECT
    quality[2, 60] = dl.Quality.BAD
    return dl.make_run(values, CHANNELS, sample_rate=RATE, quality=quality, name="orig",
                       start="2023-06-01T00:00:00", id="6f1b8a52-1c55-4a5e-9e7f-3f0c2b1d4a11")


PUSH_BLOCKS = (1, 63, 200, 136, 300, 300)
"""Sizes of the blocks the driver feeds (N in all); the third one comes with quality flags."""


def push_data() -> tuple[NDArray[np.float64], NDArray[np.int8]]:
    values = 2.0 * np.random.default_rng(13).standard_normal((len(CHANNELS), N))
    quality = np.zeros(values.shape, np.int8)
    quality[:, 64:264:7] = np.array([[1], [2], [3]], np.int8)  # inside the third block
    return values, quality


class Driver:
    """Drives a source after ``start()``; nothing to do for sources that produce by themselves."""

    def consumed(self) -> None:
        """The reader took a block."""

    def finish(self) -> None:
        """Wait for the driver to be done and raise what it failed with."""


class PushDriver(Driver):
    """A driver thread feeding ``PUSH_BLOCKS`` to a Push source, then closing it.

    ``lockstep``: feed the next block only once the reader took one, so that every block is
    read on its own (the contract checks timestamps continue across block boundaries).
    """

    def __init__(self, src: Push, *, lockstep: bool) -> None:
        self._src = src
        self._lockstep = lockstep
        self._taken = threading.Semaphore(0)
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="test-push-driver", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            values, quality = push_data()
            lo = 0
            for i, n in enumerate(PUSH_BLOCKS):
                if self._lockstep and i and not self._taken.acquire(timeout=PATIENCE):
                    raise AssertionError(f"the reader never took block {i - 1}")
                q = quality[:, lo:lo + n] if i == 2 else None
                self._src.feed(values[:, lo:lo + n], quality=q)
                lo += n
            self._src.close()
        except BaseException as exc:
            self.error = exc

    def consumed(self) -> None:
        self._taken.release()

    def finish(self) -> None:
        self._thread.join(PATIENCE)
        assert not self._thread.is_alive(), "the push driver did not finish"
        if self.error is not None:
            raise self.error


@dataclass(frozen=True)
class Expected:
    values: NDArray[np.float64]
    quality: NDArray[np.int8]
    times: NDArray[np.datetime64]


@dataclass(frozen=True)
class Kind:
    """How to make, drive and check one kind of source. ``make`` gives a finite source of ``N``
    samples starting at ``T0``; ``waiting`` one whose ``read`` waits (an hour or forever)."""

    id: str
    make: Callable[[Path], Source]
    expected: Callable[[Path], Expected]
    waiting: Callable[[Path], Source]
    drive: Callable[[Source, bool], Driver] = lambda src, lockstep: Driver()


def _simulated(tmp: Path) -> Source:
    return Simulated(CHANNELS, RATE, seed=42, paced=False, block_size=128, duration=N / RATE,
                     wall_clock=wall_clock)


def _replayed(run: xr.Dataset) -> Expected:
    return Expected(run.value.values, run.quality.values, expected_times())


def _replay_file(tmp: Path) -> Path:
    path = tmp / "orig.nc"
    return path if path.exists() else dl.save(original_run(), path)


def _user(tmp: Path) -> Source:
    return UserSource(CHANNELS, RATE, seed=7, n_samples=N, wall_clock=wall_clock)


def _second_instance(make: Callable[[Path], Source]) -> Callable[[Path], Expected]:
    """What a second instance made alike (same seed) gives, read to its end directly."""

    def expected(tmp: Path) -> Expected:
        src = make(tmp)
        src.start()
        blocks = read_to_end(src)
        quality = [b.quality if b.quality is not None else np.zeros(b.values.shape, np.int8)
                   for b in blocks]
        return Expected(np.concatenate([b.values for b in blocks], axis=1),
                        np.concatenate(quality, axis=1), np.concatenate([b.times for b in blocks]))

    return expected


def _push_driver(src: Source, lockstep: bool) -> Driver:
    assert isinstance(src, Push)
    return PushDriver(src, lockstep=lockstep)


def _pushed(tmp: Path) -> Expected:
    values, quality = push_data()
    return Expected(values, quality, expected_times())


KINDS = [
    Kind("simulated", _simulated, _second_instance(_simulated),
         # a block is due after an hour of real time
         waiting=lambda tmp: Simulated(CHANNELS, RATE, seed=42, paced=True, block_duration=3600.0,
                                       wall_clock=wall_clock)),
    Kind("replay-run",
         lambda tmp: Replay(original_run(), speed=None, block_size=128, wall_clock=wall_clock),
         lambda tmp: _replayed(original_run()),
         # ten samples take 10 ms of the run: 10^4 s at this speed
         waiting=lambda tmp: Replay(original_run(), speed=1e-6, wall_clock=wall_clock)),
    Kind("replay-file",
         lambda tmp: Replay(_replay_file(tmp), speed=None, block_size=128, wall_clock=wall_clock),
         lambda tmp: _replayed(original_run()),
         waiting=lambda tmp: Replay(_replay_file(tmp), speed=1e-6, wall_clock=wall_clock)),
    Kind("push", lambda tmp: Push(CHANNELS, RATE, wall_clock=wall_clock), _pushed,
         waiting=lambda tmp: Push(CHANNELS, RATE, wall_clock=wall_clock),  # nobody feeds it
         drive=_push_driver),
    Kind("user", _user, _second_instance(_user),
         waiting=lambda tmp: UserSource(CHANNELS, RATE, seed=7, n_samples=N, latency=3600.0,
                                        wall_clock=wall_clock)),
]


@pytest.fixture(params=KINDS, ids=[k.id for k in KINDS])
def kind(request: pytest.FixtureRequest) -> Kind:
    k: Kind = request.param
    return k


# --------------------------------------------------------------------------- helpers


def collect(kind: Kind, src: Source) -> list[Samples]:
    """Start ``src``, drive it, and read every block until it finishes (directly, no manager)."""
    src.start()
    driver = kind.drive(src, True)
    blocks: list[Samples] = []
    deadline = time.monotonic() + PATIENCE
    while not src.finished:
        assert time.monotonic() < deadline, f"{kind.id} did not finish in {PATIENCE} s"
        block = src.read(timeout=0.5)
        if block is not None:
            blocks.append(block)
            driver.consumed()
    driver.finish()
    assert src.read(timeout=0.0) is None, "a finished source delivered more"
    return blocks


def recorder(src: Source, tmp: Path) -> dl.DataManager:
    return dl.DataManager(src, record=True, output_dir=tmp / "out", autosave_interval=None,
                          handle_sigint=False)


def dask_main_pool() -> set[threading.Thread]:
    """The threads of dask's process-wide pool for the main thread: dask makes it once, grows it
    on demand and ends it at exit; no source owns it. (The per-thread pools dask makes for other
    threads, such as an acquisition thread, are not excluded: those outlive their thread.)"""
    threaded = sys.modules.get("dask.threaded")
    pool = getattr(threaded, "default_pool", None)
    return set(getattr(pool, "_threads", ()))


def new_threads(before: set[threading.Thread]) -> list[str]:
    ignore = before | dask_main_pool()
    return sorted(t.name for t in threading.enumerate() if t not in ignore and t.is_alive())


def assert_no_new_threads(before: set[threading.Thread]) -> None:
    """Every thread started since ``before`` ends (waiting up to ``PATIENCE`` for it)."""
    deadline = time.monotonic() + PATIENCE
    while left := new_threads(before):
        assert time.monotonic() < deadline, f"threads still alive after stop(): {left}"
        time.sleep(0.01)


def waiting_in_threading(thread: threading.Thread) -> bool:
    """Whether ``thread`` is blocked in a ``threading`` wait (Event, Condition)."""
    assert thread.ident is not None
    frame = sys._current_frames().get(thread.ident)
    while frame is not None:
        if frame.f_code.co_filename == threading.__file__ and frame.f_code.co_name == "wait":
            return True
        frame = frame.f_back
    return False


def assert_same_data(got: xr.Dataset, want: Expected) -> None:
    np.testing.assert_array_equal(got.value.values, want.values)  # NaN and inf in place
    np.testing.assert_array_equal(got.quality.values, want.quality)
    np.testing.assert_array_equal(got.time.values, want.times)


@pytest.fixture
def baseline() -> set[threading.Thread]:
    """The threads alive before the test (the test may check none are added)."""
    return set(threading.enumerate())


# --------------------------------------------------------------------------- the contract


def test_channels_and_sample_rate_are_what_was_asked(kind: Kind, tmp_path: Path) -> None:
    src = kind.make(tmp_path)
    assert isinstance(src, Source)
    assert isinstance(src.channels, tuple)
    assert all(isinstance(c, dl.Channel) for c in src.channels)
    assert src.channels == CHANNELS  # names, units, ranges and calibrations
    assert isinstance(src.sample_rate, float)
    assert src.sample_rate == RATE
    assert src.finished is False


def test_read_before_start_is_a_daqlab_error(kind: Kind, tmp_path: Path) -> None:
    src = kind.make(tmp_path)
    with pytest.raises(dl.DaqlabError, match=r"read\(\) before start\(\)"):
        src.read(timeout=0.0)
    # the source is not spoiled by it
    blocks = collect(kind, src)
    assert sum(len(b) for b in blocks) == N


def test_stop_twice_is_harmless(kind: Kind, tmp_path: Path) -> None:
    src = kind.make(tmp_path)
    src.start()
    driver = kind.drive(src, False)
    driver.finish()  # a Push source holds its N samples now
    first = src.read(timeout=1.0)
    assert first is not None
    src.stop()
    src.stop()
    # after stop() reads return at once; what a source still holds (a Push queue) may come out,
    # then nothing
    started = time.monotonic()
    for _ in range(N):
        if src.read(timeout=LONG) is None:
            break
    else:
        pytest.fail(f"{kind.id} kept delivering after stop()")
    assert time.monotonic() - started < PROMPT
    src.stop()


def test_stop_from_another_thread_wakes_a_pending_read(kind: Kind, tmp_path: Path) -> None:
    src = kind.waiting(tmp_path)
    src.start()
    returned: list[Samples | None] = []
    reader = threading.Thread(target=lambda: returned.append(src.read(timeout=LONG)),
                              name="test-contract-reader", daemon=True)
    reader.start()
    wait_for(lambda: waiting_in_threading(reader) or not reader.is_alive(), PATIENCE,
             "the reader to wait in read()")
    assert reader.is_alive(), f"read() returned {returned} before stop(); it should have waited"
    stopping = time.monotonic()
    src.stop()
    stop_took = time.monotonic() - stopping
    reader.join(PROMPT)
    assert not reader.is_alive(), f"read() still waits {PROMPT} s after stop()"
    assert stop_took < PROMPT
    assert returned == [None]


def test_blocks_are_well_formed_and_continue_from_block_to_block(kind: Kind, tmp_path: Path) -> None:
    src = kind.make(tmp_path)
    channels = len(CHANNELS)
    blocks = collect(kind, src)
    assert len(blocks) > 1, "the contract wants several blocks to check their joins"
    last: np.int64 | None = None
    for i, b in enumerate(blocks):
        assert isinstance(b, Samples)
        n = len(b)
        assert n > 0, f"block {i} is empty (return None when there is nothing)"
        assert isinstance(b.values, np.ndarray)
        assert b.values.dtype == np.float64
        assert b.values.shape == (channels, n)
        assert isinstance(b.times, np.ndarray)
        assert b.times.dtype == np.dtype("datetime64[ns]")
        assert b.times.shape == (n,)
        t = b.times.view(np.int64)
        assert not np.isnat(b.times).any()
        assert (np.diff(t) >= 0).all(), f"block {i}: times go back"
        if last is not None:
            # continues: the first sample is one period after the previous block's last
            assert t[0] - last == STEP_NS, f"block {i} starts {t[0] - last} ns after block {i - 1}"
        last = t[-1]
        if b.quality is not None:
            assert isinstance(b.quality, np.ndarray)
            assert b.quality.dtype == np.int8
            assert b.quality.shape == (channels, n)
            assert ((b.quality >= 0) & (b.quality <= 3)).all()
    times = np.concatenate([b.times for b in blocks])
    np.testing.assert_array_equal(times, expected_times())
    want = kind.expected(tmp_path)
    np.testing.assert_array_equal(np.concatenate([b.values for b in blocks], axis=1), want.values)


def test_describe_is_json(kind: Kind, tmp_path: Path) -> None:
    src = kind.make(tmp_path)
    desc = src.describe()
    assert isinstance(desc, dict)
    text = json.dumps(desc, allow_nan=False)
    assert json.loads(text) == desc
    src.start()
    assert json.loads(json.dumps(src.describe(), allow_nan=False)) == desc


def test_a_recorded_acquisition_holds_exactly_what_the_source_produced(
        kind: Kind, tmp_path: Path, baseline: set[threading.Thread]) -> None:
    want = kind.expected(tmp_path)
    src = kind.make(tmp_path)
    dm = recorder(src, tmp_path)
    with dm:
        driver = kind.drive(src, False)
        driver.finish()
        assert dm.wait(timeout=PATIENCE), f"{kind.id}: the acquisition did not finish"
    assert dm.errors == {}
    assert_no_new_threads(baseline)
    snap = dm.snapshot()
    assert snap.daq.channels == CHANNELS
    assert snap.attrs["sample_rate"] == RATE
    assert_same_data(snap, want)
    recordings = [p for p in dm.saved if p.suffix == ".nc"]
    assert len(recordings) == 1, dm.saved
    reopened = dl.open_run(recordings[0]).load()
    xr.testing.assert_identical(reopened, snap)
    assert_same_data(reopened, want)
    assert reopened.attrs["metadata"]["source"] == json.loads(json.dumps(src.describe()))


def test_stopping_a_running_acquisition_leaves_no_thread(
        kind: Kind, tmp_path: Path, baseline: set[threading.Thread]) -> None:
    src = kind.waiting(tmp_path)
    dm = recorder(src, tmp_path)
    seen: list[object] = []
    dm.subscribe(seen.append)  # a callback: a thread of its own
    with dm:
        assert dm.running
        assert any(name.startswith("daqlab-acq") for name in new_threads(baseline))
    assert dm.errors == {}
    assert_no_new_threads(baseline)
    assert dm.snapshot().sizes["time"] == 0  # the waiting source never delivered


def test_a_source_failing_in_read_ends_the_acquisition_with_its_error(
        tmp_path: Path, baseline: set[threading.Thread]) -> None:
    """(The user's source only: it is the one with a failure switch.)"""
    block = 77
    src = UserSource(CHANNELS, RATE, seed=7, n_samples=N, block=block, fail_after=3,
                     wall_clock=wall_clock)
    dm = recorder(src, tmp_path)
    failures = dm.subscribe(kinds=AcquisitionFailed)
    dm.start()
    try:
        event = failures.get(timeout=PATIENCE)
        assert isinstance(event, AcquisitionFailed), event
        assert event.source == "src"
        assert isinstance(event.error, DeviceGone)
        assert dm.wait(timeout=PATIENCE), "a failed source must end its acquisition"
        assert dm.errors == {"src": event.error}
    finally:
        with pytest.raises(dl.AcquisitionError, match=r"source 'src' failed.*DeviceGone: device "
                                                      r"unplugged") as info:
            dm.stop()
    assert info.value.__cause__ is event.error
    assert_no_new_threads(baseline)
    # everything before the failure was kept, and recorded
    want = _second_instance(_user)(tmp_path)
    got = 3 * block
    kept = Expected(want.values[:, :got], want.quality[:, :got], want.times[:got])
    assert_same_data(dm.snapshot(), kept)
    recordings = [p for p in dm.saved if p.suffix == ".nc"]
    assert len(recordings) == 1, dm.saved
    assert_same_data(dl.open_run(recordings[0]).load(), kept)
