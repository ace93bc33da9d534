"""Replay and Push sources: exact values, re-stamping, pacing with a fake clock, feeding from threads."""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
from numpy.typing import NDArray

import daqlab as dl
from daqlab.sources import Push, Replay, Samples
from tests.helpers import FakeClock, daqlab_threads, read_to_end, wait_for

T0 = dt.datetime(2024, 3, 1, 8, 0, tzinfo=dt.UTC)
T0_NS = np.datetime64("2024-03-01T08:00:00", "ns")
ORIGINAL_START = "2023-06-01T00:00:00"


def wall_clock() -> dt.datetime:
    return T0




def original_run(n: int = 1000, rate: float = 1000.0, *, irregular: bool = False,
                 calibrated_channels: bool = False) -> xr.Dataset:
    """Three channels with NaN, out-of-range values and every quality flag."""
    rng = np.random.default_rng(5)
    values = rng.standard_normal((3, n))
    quality = np.zeros((3, n), np.int8)
    if n > 60:
        values[0, 10] = np.nan
        values[1, 20] = np.inf
        values[2, 30] = 50.0  # out of range: SUSPECT
        quality[0, 40:45] = dl.Quality.INTERPOLATED
        quality[1, 50] = dl.Quality.SUSPECT
        quality[2, 60] = dl.Quality.BAD
    cal = dl.Calibration(2.0, 1.0, np.datetime64("2023-01-01")) if calibrated_channels else dl.Calibration()
    channels = [
        dl.Channel("a", "V", calibration=cal),
        dl.Channel("b", "V"),
        dl.Channel("c", "degC", range=(-10.0, 10.0)),
    ]
    kw: dict[str, Any] = {}
    if irregular:
        steps = rng.integers(500_000, 1_500_000, size=n - 1)  # 0.5 .. 1.5 ms
        t = np.datetime64(ORIGINAL_START, "ns") + np.concatenate([[0], np.cumsum(steps)]).astype(
            "timedelta64[ns]")
        kw["times"] = t
    else:
        kw["start"] = ORIGINAL_START
    return dl.make_run(values, channels, sample_rate=rate, quality=quality, name="orig", **kw)


def drain(src: Replay, max_reads: int = 100_000) -> tuple[NDArray[np.float64], NDArray[np.int8],
                                                            NDArray[np.datetime64]]:
    blocks = read_to_end(src, max_reads)
    values = [b.values for b in blocks]
    quality = [b.quality if b.quality is not None else np.zeros_like(b.values, np.int8)
               for b in blocks]
    times = [b.times for b in blocks]
    return (np.concatenate(values, axis=1), np.concatenate(quality, axis=1),
            np.concatenate(times))


def restamped(run: xr.Dataset) -> NDArray[np.datetime64]:
    t = run.time.values
    out: NDArray[np.datetime64] = T0_NS + (t - t[0])
    return out


# --------------------------------------------------------------------------- Replay, as fast as possible


@pytest.mark.parametrize("irregular", [False, True], ids=["even", "irregular"])
@pytest.mark.parametrize("from_path", [False, True], ids=["run", "nc-file"])
def test_replay_gives_back_exactly_the_run(tmp_path: Path, from_path: bool, irregular: bool) -> None:
    run = original_run(irregular=irregular)
    arg: Any = run
    if from_path:
        arg = dl.save(run, tmp_path / "orig.nc")
    src = Replay(arg, speed=None, block_size=137, wall_clock=wall_clock)
    assert [c.name for c in src.channels] == ["a", "b", "c"]
    assert src.sample_rate == 1000.0
    assert not src.finished
    src.start()
    values, quality, times = drain(src)
    np.testing.assert_array_equal(values, run.value.values)  # NaN and inf in place
    np.testing.assert_array_equal(quality, run.quality.values)
    assert quality[0, 10] == dl.Quality.BAD
    assert quality[2, 30] == dl.Quality.SUSPECT
    assert times.dtype == np.dtype("datetime64[ns]")
    np.testing.assert_array_equal(times, restamped(run))
    assert times[0] == T0_NS


def test_replay_blocks_have_the_asked_size() -> None:
    src = Replay(original_run(n=100), speed=None, block_size=30, wall_clock=wall_clock)
    src.start()
    sizes = []
    while not src.finished:
        block = src.read(timeout=0.0)
        assert block is not None
        sizes.append(len(block))
    assert sizes == [30, 30, 30, 10]


def test_a_calibrated_run_replays_raw(tmp_path: Path) -> None:
    raw = original_run(calibrated_channels=True)
    cal = dl.calibrate(raw)
    assert cal.attrs["calibrated"]
    for arg in (cal, dl.save(cal, tmp_path / "cal.nc")):
        src = Replay(arg, speed=None, block_size=100, wall_clock=wall_clock)
        src.start()
        values, _, _ = drain(src)
        np.testing.assert_array_equal(values, raw.value.values)
        assert src.channels[0].calibration.slope == 2.0
        assert src.channels[0].calibration.offset == 1.0


def test_replay_describes_itself() -> None:
    run = original_run(n=10)
    d = Replay(run, speed=3.0, loop=True).describe()
    assert d["type"] == "daqlab.sources.Replay"
    assert d["speed"] == 3.0
    assert d["loop"] is True
    assert d["original_id"] == run.attrs["id"]
    assert d["channels"] == ["a", "b", "c"]


def test_read_before_start_and_double_start_raise() -> None:
    src = Replay(original_run(n=10), speed=None)
    with pytest.raises(dl.SourceError, match="start"):
        src.read(timeout=0.0)
    src.start()
    with pytest.raises(dl.SourceError, match="started already"):
        src.start()


def test_stop_ends_a_replay() -> None:
    src = Replay(original_run(n=100), speed=None, block_size=10)
    src.start()
    assert src.read(timeout=0.0) is not None
    src.stop()
    assert src.read(timeout=0.0) is None


# --------------------------------------------------------------------------- paced replay


@pytest.mark.parametrize("speed", [1.0, 2.5, 0.5], ids=["real-time", "faster", "slower"])
def test_paced_replay_follows_the_fake_clock_at_speed(speed: float) -> None:
    run = original_run(n=500)  # 0.5 s at 1 kHz
    fc = FakeClock(50.0)
    src = Replay(run, speed=speed, clock=fc, sleep=fc.sleep, wall_clock=wall_clock,
                 block_duration=0.01)
    src.start()
    start = fc.now
    rel = (run.time.values - run.time.values[0]).astype(np.int64)
    got_values, got_times = [], []
    delivered = 0
    step = 0.0037  # fake seconds between reads: due samples grow by < max block each time
    while not src.finished:
        fc.advance(step)
        block = src.read(timeout=0.0)
        if block is not None:
            got_values.append(block.values)
            got_times.append(block.times)
            delivered += len(block)
        elapsed_run_ns = (fc.now - start) * speed * 1e9
        due = min(len(rel), int(np.searchsorted(rel, elapsed_run_ns, side="right")))
        # never ahead of (fake) time, never behind by more than rounding at the boundary
        assert due - 1 <= delivered <= due, (fc.now - start, delivered, due)
        assert fc.now - start < 10.0 / speed, "replay did not finish"
    assert fc.sleeps == [] or all(s == 0.0 for s in fc.sleeps), "read(timeout=0) must not sleep"
    np.testing.assert_array_equal(np.concatenate(got_values, axis=1), run.value.values)
    np.testing.assert_array_equal(np.concatenate(got_times), restamped(run))
    # it finished at the fake moment the last sample was due
    assert (fc.now - start) * speed == pytest.approx(rel[-1] / 1e9, abs=step * speed + 1e-9)


def test_a_paced_read_sleeps_on_the_injected_sleep_until_a_block_is_due() -> None:
    run = original_run(n=500)
    fc = FakeClock(50.0)
    src = Replay(run, speed=2.0, clock=fc, sleep=fc.sleep, wall_clock=wall_clock,
                 block_duration=0.01)  # 10 samples a block at 1 kHz
    src.start()
    start = fc.now
    block = src.read(timeout=1.0)
    assert block is not None
    assert len(block) == 10
    # sample 9 is at 9 ms of the run: due after 4.5 ms at speed 2
    assert fc.sleeps == [pytest.approx(0.0045)]
    assert fc.now - start == pytest.approx(0.0045)
    np.testing.assert_array_equal(block.values, run.value.values[:, :10])
    # a timeout shorter than the wait: sleeps only that long and returns what is due
    block = src.read(timeout=0.001)
    assert fc.sleeps[-1] == pytest.approx(0.001)
    assert block is None or len(block) < 10


def test_paced_replay_catches_up_in_bounded_blocks() -> None:
    run = original_run(n=1000)
    fc = FakeClock(50.0)
    src = Replay(run, speed=1.0, clock=fc, sleep=fc.sleep, wall_clock=wall_clock,
                 block_duration=0.01)
    src.start()
    fc.advance(0.5)  # 501 samples due
    sizes = []
    while (block := src.read(timeout=0.0)) is not None:
        sizes.append(len(block))
    assert sum(sizes) == 501
    assert max(sizes) == 100  # ten times the 10-sample block


# --------------------------------------------------------------------------- loop


def test_loop_replays_past_the_end_with_continuous_timestamps() -> None:
    run = original_run(n=100)
    src = Replay(run, speed=None, loop=True, block_size=70, wall_clock=wall_clock)
    src.start()
    blocks = [src.read(timeout=0.0) for _ in range(5)]  # 350 samples: 3.5 loops
    assert not src.finished
    assert all(b is not None and len(b) == 70 for b in blocks)
    values = np.concatenate([b.values for b in blocks if b is not None], axis=1)
    times = np.concatenate([b.times for b in blocks if b is not None])
    orig = run.value.values
    np.testing.assert_array_equal(values, np.concatenate([orig, orig, orig, orig[:, :50]], axis=1))
    dt_ns = np.diff(times.astype(np.int64))
    assert (dt_ns == 1_000_000).all(), "timestamps must stay evenly spaced across loop boundaries"
    assert times[0] == T0_NS
    assert times[-1] == T0_NS + np.timedelta64(349, "ms")


def test_paced_loop_continues_with_the_fake_clock() -> None:
    run = original_run(n=50)  # 50 ms per loop
    fc = FakeClock(50.0)
    src = Replay(run, speed=1.0, loop=True, clock=fc, sleep=fc.sleep, wall_clock=wall_clock)
    src.start()
    total: list[Samples] = []
    while sum(len(b) for b in total) < 180:
        fc.advance(0.003)
        block = src.read(timeout=0.0)
        if block is not None:
            total.append(block)
    times = np.concatenate([b.times for b in total])
    assert (np.diff(times.astype(np.int64)) == 1_000_000).all()
    assert not src.finished


# --------------------------------------------------------------------------- refused


@pytest.mark.parametrize(
    "speed",
    [0, 0.0, -1.0, float("nan"), float("inf"), True, "fast"],
    ids=["zero-int", "zero", "negative", "nan", "inf", "bool", "str"],
)
def test_bad_speed_is_refused(speed: Any) -> None:
    with pytest.raises(dl.ConfigurationError, match="speed"):
        Replay(original_run(n=10), speed=speed)


def test_an_empty_run_is_refused(tmp_path: Path) -> None:
    # (dl.empty_run(...) itself currently fails: make_run(times=[]) rejects an empty list)
    empty = dl.make_run(np.empty((2, 0)), ["a", "b"], sample_rate=100.0, start=ORIGINAL_START)
    with pytest.raises(dl.ConfigurationError, match="no samples"):
        Replay(empty)
    path = dl.save(empty, tmp_path / "empty.nc")
    with pytest.raises(dl.ConfigurationError, match="no samples"):
        Replay(path)


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(dl.DaqlabError):
        Replay(tmp_path / "nope.nc")


# --------------------------------------------------------------------------- Replay under a DataManager


def test_a_manager_over_a_replay_records_the_original(tmp_path: Path) -> None:
    run = original_run(n=3000)
    src = Replay(run, speed=None, block_size=256)
    dm = dl.DataManager(src, output_dir=tmp_path, record=True, autosave_interval=None,
                        handle_sigint=False, flush_interval=0.05)
    with dm:
        assert dm.wait(timeout=20.0)
    assert dm.buffers["src"].written == 3000
    rec_files = [p for p in dm.saved if p.suffix == ".nc"]
    assert len(rec_files) == 1
    recorded = dl.open_run(rec_files[0])
    np.testing.assert_array_equal(recorded.value.values, run.value.values)
    np.testing.assert_array_equal(recorded.quality.values, run.quality.values)
    np.testing.assert_array_equal(
        np.diff(recorded.time.values.astype(np.int64)), np.diff(run.time.values.astype(np.int64)))
    assert list(recorded.channel.values) == ["a", "b", "c"]
    assert recorded.attrs["metadata"]["source"]["type"] == "daqlab.sources.Replay"
    snap = dm.snapshot()
    np.testing.assert_array_equal(snap.value.values, run.value.values)
    np.testing.assert_array_equal(snap.quality.values, run.quality.values)


# --------------------------------------------------------------------------- Push


def push_manager(src: Push, tmp_path: Path, **kw: Any) -> dl.DataManager:
    kw.setdefault("record", False)
    kw.setdefault("autosave_interval", None)
    kw.setdefault("handle_sigint", False)
    return dl.DataManager(src, output_dir=tmp_path, **kw)


def test_feed_before_start_raises() -> None:
    src = Push(["x", "y"], 100.0)
    with pytest.raises(dl.SourceError, match="start"):
        src.feed(np.zeros((2, 3)))


def test_feed_checks_shapes() -> None:
    src = Push(["x", "y"], 100.0)
    src.start()
    with pytest.raises(dl.ShapeError):
        src.feed(np.zeros((3, 4)))
    with pytest.raises(dl.ShapeError):
        src.feed(np.zeros((2, 4)), times=np.arange(3))
    src.feed([1.0, 2.0])  # one sample (channels,)
    block = src.read(timeout=0.0)
    assert block is not None
    assert block.values.tolist() == [[1.0], [2.0]]


def test_a_full_queue_refuses_the_whole_block_and_counts_it() -> None:
    src = Push(["x"], 1000.0, max_pending=100, wall_clock=wall_clock)
    src.start()
    src.feed(np.arange(80.0)[np.newaxis])
    with pytest.raises(dl.SourceError, match="queue full"):
        src.feed(np.arange(30.0)[np.newaxis])
    assert src.refused == 30
    src.feed(np.arange(20.0)[np.newaxis])  # exactly fills the queue
    with pytest.raises(dl.SourceError, match="queue full"):
        src.feed(np.zeros((1, 1)))
    assert src.refused == 31
    block = src.read(timeout=0.0)
    assert block is not None
    assert len(block) == 100
    np.testing.assert_array_equal(block.values[0], np.concatenate([np.arange(80.0), np.arange(20.0)]))
    # the timestamps of refused blocks were not used up
    np.testing.assert_array_equal(block.times, T0_NS + np.arange(100) * np.timedelta64(1, "ms"))
    src.feed(np.zeros((1, 50)))  # room again
    assert src.refused == 31


def test_times_going_backwards_raise() -> None:
    src = Push(["x"], 1000.0)
    src.start()
    t = np.datetime64("2024-01-01T00:00:01", "ns")
    src.feed([[1.0, 2.0]], times=[t, t + np.timedelta64(1, "ms")])
    with pytest.raises(dl.ShapeError, match="non-decreasing"):
        src.feed([[3.0]], times=[t])  # before the last sample fed
    with pytest.raises(dl.ShapeError, match="non-decreasing"):
        src.feed([[3.0, 4.0]], times=[t + np.timedelta64(9, "ms"), t + np.timedelta64(5, "ms")])
    src.feed([[5.0]], times=[t + np.timedelta64(1, "ms")])  # equal is allowed
    block = src.read(timeout=0.0)
    assert block is not None
    assert block.values.tolist() == [[1.0, 2.0, 5.0]]


@pytest.mark.parametrize("kind", ["push", "ring"])
def test_untimed_blocks_after_timed_ones_stay_on_one_grid(kind: str) -> None:
    # timed samples ran ahead of the nominal clock; untimed ones continue after them on one
    # grid: three single samples at 3 Hz end exactly 1 s later (stamping each block from the
    # one before added the rounding of 1e9 / 3 ns three times: 999_999_999 ns)
    t = np.datetime64("2100-01-01T00:00:00", "ns")
    if kind == "push":
        src = Push(["x"], 3.0)
        src.start()
        src.feed([[0.0]], times=[t])
        for k in range(3):
            src.feed([[float(k)]])
        block = src.read(timeout=0.0)
        assert block is not None
        times = block.times
    else:
        buf = dl.RingBuffer(["x"], 10, 3.0, start="2024-01-01")
        buf.push([[0.0]], times=[t])
        for k in range(3):
            buf.push([[float(k)]])
        times = buf.range(0, 4)["time"].values
    assert (times - t).astype(np.int64).tolist() == [0, 333_333_333, 666_666_667, 1_000_000_000]


def test_times_far_apart_are_taken_in_order() -> None:
    # 1700 -> 2200: the step overflows int64; the order check compares, never subtracts
    src = Push(["x"], 1000.0)
    src.start()
    times = np.array(["1700-01-01", "2200-01-01"], dtype="datetime64[ns]")
    src.feed([[1.0, 2.0]], times=times)
    with pytest.raises(dl.ShapeError, match="non-decreasing"):
        src.feed([[1.0, 2.0]], times=times[::-1])
    block = src.read(timeout=0.0)
    assert block is not None
    np.testing.assert_array_equal(block.times, times)


def test_untimed_feeds_after_timed_ones_never_kill_acquisition(tmp_path: Path) -> None:
    """A driver that stamps some blocks itself and leaves others to the source.

    ``feed`` must either refuse the untimed block (ShapeError, so the driver knows)
    or stamp it after the last time fed; what it accepted must not make the
    acquisition thread fail later.
    """
    src = Push(["x"], 1000.0)
    dm = push_manager(src, tmp_path)
    ahead = np.datetime64("2100-01-01T00:00:00", "ns")
    dm.start()
    src.feed([[1.0, 2.0]], times=[ahead, ahead + np.timedelta64(1, "ms")])
    try:
        src.feed([[3.0]])  # no times: t0 + k / rate would go back before 2100
        accepted = 3
    except dl.ShapeError:
        accepted = 2
    wait_for(lambda: dm.buffers["src"].written == accepted or bool(dm.errors), timeout=5.0,
             what="the fed samples to arrive")
    errors = dict(dm.errors)
    with contextlib.suppress(dl.AcquisitionError):  # reported just below
        dm.stop()
    assert errors == {}, f"a block feed() accepted killed the acquisition: {errors}"
    snap = dm.snapshot()
    assert snap.value.values[0].tolist() == [1.0, 2.0, 3.0][:accepted]
    assert (np.diff(snap.time.values.astype(np.int64)) >= 0).all()


def test_quality_fed_is_kept() -> None:
    src = Push(["x", "y"], 10.0)
    src.start()
    src.feed(np.ones((2, 3)), quality=[[0, 1, 2], [3, 0, 0]])
    src.feed(np.ones((2, 2)))
    block = src.read(timeout=0.0)
    assert block is not None
    assert block.quality is not None
    assert block.quality.tolist() == [[0, 1, 2, 0, 0], [3, 0, 0, 0, 0]]
    with pytest.raises(dl.ShapeError, match="quality"):
        src.feed(np.ones((2, 1)), quality=[[7], [0]])


def test_close_makes_a_push_source_finish(tmp_path: Path) -> None:
    src = Push(["x"], 1000.0)
    dm = push_manager(src, tmp_path)
    with dm:
        src.feed(np.arange(10.0)[np.newaxis])
        assert not dm.wait(timeout=0.05)
        src.close()
        assert dm.wait(timeout=5.0), "a closed Push source must finish once drained"
        assert src.finished
        with pytest.raises(dl.SourceError, match="closed"):
            src.feed(np.zeros((1, 1)))
    assert dm.buffers["src"].written == 10


N_FEEDERS = 4
BLOCKS_PER_FEEDER = 150
BLOCK = 40


def test_feeding_from_four_threads_delivers_every_sample_exactly_once(tmp_path: Path) -> None:
    total = N_FEEDERS * BLOCKS_PER_FEEDER * BLOCK
    src = Push(["c0", "c1", "c2"], 10_000.0, max_pending=total)
    dm = push_manager(src, tmp_path, buffer_samples=total)
    go = threading.Event()
    errors: list[BaseException] = []

    def feeder(i: int) -> None:
        try:
            go.wait(10.0)
            for b in range(BLOCKS_PER_FEEDER):
                ids = (i * BLOCKS_PER_FEEDER + b) * BLOCK + np.arange(BLOCK, dtype=np.float64)
                # every channel row holds the same ids, offset by the channel: blocks stay consistent
                src.feed(np.stack([ids, ids + 0.1, ids + 0.2]))
        except BaseException as exc:
            errors.append(exc)

    with dm:
        threads = [threading.Thread(target=feeder, args=(i,), name=f"daqlab-test-feed-{i}")
                   for i in range(N_FEEDERS)]
        for t in threads:
            t.start()
        go.set()
        for t in threads:
            t.join(20.0)
        assert not any(t.is_alive() for t in threads)
        assert errors == []
        src.close()
        assert dm.wait(timeout=10.0)
    snap = dm.snapshot()
    v = snap.value.values
    assert v.shape == (3, total)
    # exactly once: every id appears once, and the rows agree sample by sample
    np.testing.assert_array_equal(np.sort(v[0]), np.arange(total, dtype=np.float64))
    np.testing.assert_allclose(v[1], v[0] + 0.1)
    np.testing.assert_allclose(v[2], v[0] + 0.2)
    # each feeder's blocks arrive whole and in its own order
    for i in range(N_FEEDERS):
        mine = v[0][(v[0] >= i * BLOCKS_PER_FEEDER * BLOCK) & (v[0] < (i + 1) * BLOCKS_PER_FEEDER * BLOCK)]
        assert (np.diff(mine) > 0).all()
    # stamped in feed order: evenly spaced at 1/rate
    assert (np.diff(snap.time.values.astype(np.int64)) == 100_000).all()
    assert (snap.quality.values == 0).all()
    assert dm.buffers["src"].overflow_count == 0


def test_samples_still_queued_at_stop_are_kept(tmp_path: Path) -> None:
    src = Push(["x", "y"], 1000.0)
    dm = push_manager(src, tmp_path)
    dm.start()
    fed = 0
    for k in range(20):
        src.feed(np.full((2, 25), float(k)))
        fed += 25
    dm.stop()  # right after feeding: part of it may still wait in the queue
    snap = dm.snapshot()
    assert snap.sizes["time"] == fed
    np.testing.assert_array_equal(snap.value.values[0], np.repeat(np.arange(20.0), 25))
    assert not [t for t in daqlab_threads() if t.name.startswith("daqlab-acq")]


def test_push_times_are_stamped_from_start() -> None:
    src = Push(["x"], 4.0, wall_clock=wall_clock)
    src.start()
    src.feed(np.zeros((1, 3)))
    src.feed(np.zeros((1, 2)))
    block = src.read(timeout=0.0)
    assert block is not None
    np.testing.assert_array_equal(
        block.times, T0_NS + np.arange(5) * np.timedelta64(250, "ms"))


def test_a_read_waits_for_a_feed_from_another_thread() -> None:
    src = Push(["x"], 100.0)
    src.start()
    fed = threading.Event()

    def later() -> None:
        fed.wait(5.0)
        src.feed([[1.0]])

    t = threading.Thread(target=later, name="daqlab-test-later")
    t.start()
    fed.set()
    block = src.read(timeout=5.0)
    t.join(5.0)
    assert block is not None
    assert block.values.tolist() == [[1.0]]
    wait_for(lambda: not t.is_alive(), timeout=5.0)


def test_replay_from_a_file_loops_exactly_with_blocks_straddling_the_end(tmp_path: Path) -> None:
    # a block size that does not divide the run: blocks cross the loop boundary, and reads go
    # through the read-ahead cache (smaller than the run here) rather than one dask read each
    n = 70_001
    run = dl.make_run(np.random.default_rng(3).normal(size=(2, n)), ["a", "b"], sample_rate=1e3,
                      start="2026-01-01")
    path = dl.save(run, tmp_path / "loop.nc")
    src = dl.sources.Replay(path, speed=None, block_size=777, loop=True, wall_clock=wall_clock)
    src.start()
    blocks = [src.read(timeout=1.0) for _ in range((3 * n) // 777 + 1)]
    values = np.concatenate([b.values for b in blocks if b is not None], axis=1)
    np.testing.assert_array_equal(values[:, : 3 * n], np.tile(run.value.values, 3))
    times = np.concatenate([b.times for b in blocks if b is not None]).view(np.int64)
    assert set(np.diff(times).tolist()) == {1_000_000}


# -------------------------------------------------------------------- Push refuses bad blocks (issue 12)

T_GOOD = np.datetime64("2024-03-01T08:00:01", "ns")

BAD_FEEDS: list[Any] = [
    pytest.param({"values": [["a", "b"]]}, r"feed takes numeric values.*got dtype <U1", id="text-values"),
    pytest.param({"values": [["1.5", "2.5"]]}, r"got dtype <U3", id="numeric-text-values"),
    pytest.param({"values": [[1 + 1j, 2 + 0j]]}, r"got dtype complex128\. Samples are real",
                 id="complex-values"),
    pytest.param({"values": [[True, False]]}, r"got dtype bool", id="bool-values"),
    pytest.param({"values": [[1.0, 2.0], [3.0]]}, r"values must be a rectangular array",
                 id="ragged-values"),
    pytest.param({"times": ["a", "b"]}, r"times must be datetime64 or integer.*got dtype <U1",
                 id="text-times"),
    pytest.param({"times": [1.7e9, 1.7e9 + 0.5]},
                 r"Float times are refused.*np\.round\(t \* 1e9\)\.astype\('int64'\)",
                 id="float-seconds"),
    pytest.param({"times": np.array(["NaT", "NaT"], "datetime64[ns]")}, r"times hold NaT",
                 id="nat-times"),
    pytest.param({"times": np.array([T_GOOD, np.datetime64("NaT")])}, r"times hold NaT",
                 id="time-then-nat"),
    pytest.param({"times": np.array(["3000-01-01", "3000-01-02"], "datetime64[s]")},
                 r"outside the range of datetime64\[ns\]", id="year-3000"),
    pytest.param({"times": np.array([True, True])}, r"got dtype bool", id="bool-times"),
    pytest.param({"times": [T_GOOD + np.timedelta64(1, "s"), T_GOOD]},
                 r"non-decreasing within a block; sample 1", id="times-backwards"),
    pytest.param({"quality": [[300, 0]]},
                 r"quality must hold integers \[0, 1, 2, 3\] \(daqlab\.Quality\); got \[300\]",
                 id="quality-300"),
    pytest.param({"quality": [[0, 0, 0]]}, r"quality must have the shape of values \(1, 2\); got \(1, 3\)",
                 id="quality-shape"),
    pytest.param({"quality": [[0.0, 1.0]]}, r"quality must hold integers.*got dtype float64",
                 id="quality-float"),
]


@pytest.mark.parametrize(("feed", "match"), BAD_FEEDS)
def test_a_bad_feed_is_refused_at_the_call_and_nothing_is_queued(feed: dict[str, Any], match: str) -> None:
    src = Push(["x"], 1000.0, wall_clock=wall_clock)
    src.start()
    kw = {"values": [[1.0, 2.0]], **feed}
    with pytest.raises(dl.ShapeError, match=match):
        src.feed(kw.pop("values"), **kw)
    assert src.read(timeout=0.0) is None
    src.feed([[1.0, 2.0]])  # the stream goes on as if nothing was fed
    block = src.read(timeout=0.0)
    assert block is not None
    np.testing.assert_array_equal(block.times, T0_NS + np.arange(2) * np.timedelta64(1, "ms"))


def test_bad_feeds_never_end_an_acquisition(tmp_path: Path) -> None:
    """NaT times were accepted by feed and then killed the acquisition thread."""
    src = Push(["x"], 1000.0)
    dm = push_manager(src, tmp_path)
    dm.start()
    try:
        for case in BAD_FEEDS:
            feed, match = case.values
            kw = {"values": [[1.0, 2.0]], **feed}
            with pytest.raises(dl.DaqlabError, match=str(match)):
                src.feed(kw.pop("values"), **kw)
        src.feed([[5.0, 6.0]], times=[T_GOOD, T_GOOD + np.timedelta64(1, "ms")])
        src.feed([[7.0]])  # stamped after the last time fed
        wait_for(lambda: dm.buffers["src"].written == 3 or bool(dm.errors), timeout=10.0,
                 what="the good samples to arrive")
        assert dm.errors == {}
        assert any(t.name == "daqlab-acq-src" for t in daqlab_threads())
        snap = dm.snapshot()
        assert snap.value.values.tolist() == [[5.0, 6.0, 7.0]]
        np.testing.assert_array_equal(snap.time.values[:2], [T_GOOD, T_GOOD + np.timedelta64(1, "ms")])
    finally:
        dm.stop()
    assert dm.errors == {}


def test_untimed_stamps_past_2262_are_refused_at_the_feed(tmp_path: Path) -> None:
    src = Push(["x"], 1000.0)
    dm = push_manager(src, tmp_path)
    dm.start()
    try:
        src.feed([[1.0]], times=[np.iinfo(np.int64).max - 10])
        with pytest.raises(dl.ShapeError, match=r"would pass datetime64\[ns\]'s end"):
            src.feed([[2.0, 3.0]])
        wait_for(lambda: dm.buffers["src"].written == 1 or bool(dm.errors), timeout=10.0,
                 what="the first sample to arrive")
        assert dm.errors == {}
    finally:
        dm.stop()


def test_feed_copies_values_times_and_quality() -> None:
    src = Push(["x"], 1000.0)
    src.start()
    values, times, quality = np.array([[1.0, 2.0]]), np.array([10, 20]), np.array([[1, 2]], np.int8)
    src.feed(values, times=times, quality=quality)
    values[:] = 0.0
    times[:] = 0
    quality[:] = 0
    block = src.read(timeout=0.0)
    assert block is not None
    assert block.quality is not None
    assert block.values.tolist() == [[1.0, 2.0]]
    assert block.times.view(np.int64).tolist() == [10, 20]
    assert block.quality.tolist() == [[1, 2]]


@pytest.mark.parametrize(
    "max_pending",
    ["many", float("nan"), float("inf"), 1.5, 10.0, True, 0, -3],
    ids=["str", "nan", "inf", "fraction", "float", "bool", "zero", "negative"],
)
def test_bad_max_pending_is_a_configuration_error_naming_it(max_pending: Any) -> None:
    pattern = rf"max_pending must be a whole number of samples >= 1.*got {re.escape(repr(max_pending))}"
    with pytest.raises(dl.ConfigurationError, match=pattern):
        Push(["x"], 100.0, max_pending=max_pending)


def test_a_numpy_integer_max_pending_is_taken() -> None:
    assert Push(["x"], 100.0, max_pending=np.int64(5)).max_pending == 5  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"block_duration": float("nan")}, r"block_duration must be finite and > 0 \(seconds\); got nan"),
        ({"block_duration": -1.0}, r"block_duration must be .*; got -1\.0"),
        ({"block_duration": "0.1"}, r"block_duration must be .*; got '0\.1'"),
        ({"block_duration": True}, r"block_duration must be .*; got True"),
        ({"block_duration": 1e308}, r"is not a finite number of samples"),
        ({"block_size": 0}, r"block_size must be a whole number of samples >= 1.*; got 0"),
        ({"block_size": -5}, r"block_size must be .*; got -5"),
        ({"block_size": 1.5}, r"block_size must be .*; got 1\.5"),
        ({"block_size": "3"}, r"block_size must be .*; got '3'"),
        ({"loop": "no"}, r"loop must be True or False; got 'no' \(str\)"),
        ({"loop": 1}, r"loop must be True or False; got 1 \(int\)"),
        ({"name": 5}, r"name must be a str; got 5"),
        ({"clock": "monotonic"}, r"clock must be a callable.*got 'monotonic'"),
        ({"wall_clock": 0}, r"wall_clock must be a callable"),
    ],
    ids=["duration-nan", "duration-negative", "duration-str", "duration-bool", "duration-huge",
         "size-zero", "size-negative", "size-fraction", "size-str", "loop-str", "loop-int",
         "name-int", "clock-str", "wall-clock-int"],
)
def test_bad_replay_settings_are_configuration_errors(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(dl.ConfigurationError, match=match):
        Replay(original_run(n=10), **kwargs)


def test_replay_speed_may_be_a_numpy_number() -> None:
    assert Replay(original_run(n=10), speed=np.float32(2.0)).speed == 2.0  # type: ignore[arg-type]


@pytest.mark.parametrize("now", [None, np.datetime64("NaT", "ns")], ids=["none", "nat"])
def test_a_wall_clock_giving_no_time_is_refused_at_start(now: Any) -> None:
    """Untimed feeds were stamped NaT from such a clock, and the ring then refused them."""
    src = Push(["x"], 100.0, wall_clock=lambda: now)
    with pytest.raises(dl.ConfigurationError, match=r"wall_clock\(\) must return the current UTC time"):
        src.start()


def test_feed_copies_buffers_that_are_not_ndarrays() -> None:
    """A memoryview or DataArray given to feed was queued as a view: the driver's reuse of its
    buffer changed samples already fed (found by review)."""
    import xarray as xr

    src = Push(["x", "y"], 100.0)
    src.start()
    raw = np.array([[1.0, 2.0], [3.0, 4.0]])
    stamps = np.array([10, 20], dtype=np.int64)
    src.feed(memoryview(raw), times=memoryview(stamps))  # type: ignore[arg-type]
    src.feed(xr.DataArray(raw + 10), times=xr.DataArray(stamps + 100))
    raw[:] = -99.0
    stamps[:] = 0
    block = src.read(timeout=1.0)
    assert block is not None
    assert block.values.tolist() == [[1.0, 2.0, 11.0, 12.0], [3.0, 4.0, 13.0, 14.0]]
    assert block.times.view(np.int64).tolist() == [10, 20, 110, 120]
    src.stop()
