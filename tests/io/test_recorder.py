"""Recorder.samples: a range of write-counter indices, read back from the recording."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
from numpy.typing import NDArray

import daqlab as dl
from tests.helpers import wait_for

BEFORE = 10
"""Samples pushed before the recorder is made: it starts at write index 10."""


def fed(start: int, stop: int) -> NDArray[np.float64]:
    """Values unique per sample and channel: ``k`` and ``-k - 1`` for write index ``k``."""
    k = np.arange(start, stop, dtype=np.float64)
    return np.stack([k, -k - 1.0])


@pytest.fixture
def recording(tmp_path: Path) -> Iterator[tuple[dl.RingBuffer, dl.Recorder]]:
    """A started recorder that holds samples 10..209, every one of them durable."""
    buf = dl.RingBuffer(["a", "b"], 100, 1000.0, start="2024-01-01")
    buf.push(fed(0, BEFORE))
    rec = dl.Recorder(buf, tmp_path / "r.nc", flush_interval=0.01)
    rec.start()
    for i in range(4):  # one ring's half at a time, durable before the next: the ring never laps
        buf.push(fed(BEFORE + 50 * i, BEFORE + 50 * (i + 1)))
        rec.flush_through(buf.written)
    yield buf, rec
    rec.stop()


def test_samples_are_the_range_asked_for_read_lazily(recording: tuple[dl.RingBuffer, dl.Recorder]) -> None:
    buf, rec = recording
    assert buf.first_index > 20, "the range must be one the ring no longer holds"
    run = rec.samples(20, 150)
    assert isinstance(run.value.data, da.Array)
    np.testing.assert_array_equal(run.value.values, fed(20, 150))
    assert (run.quality.values == dl.Quality.GOOD).all()
    assert (np.diff(run.time.values.astype(np.int64)) == 1_000_000).all()
    assert run.time.values[0] == np.datetime64("2024-01-01T00:00:00.020", "ns")


def test_samples_flush_through_stop_first(recording: tuple[dl.RingBuffer, dl.Recorder]) -> None:
    buf, rec = recording
    buf.push(fed(210, 240))  # not durable yet: samples() waits for it
    run = rec.samples(200, 240)
    np.testing.assert_array_equal(run.value.values, fed(200, 240))
    assert rec.saved_upto >= 240


def test_samples_end_where_the_recording_ends(recording: tuple[dl.RingBuffer, dl.Recorder]) -> None:
    _, rec = recording
    rec.stop()
    np.testing.assert_array_equal(rec.samples(150, 10_000).value.values, fed(150, 210))
    assert rec.samples(210, 10_000).sizes["time"] == 0
    assert rec.samples(BEFORE, BEFORE).sizes["time"] == 0


def test_samples_read_the_final_file_once_closed(recording: tuple[dl.RingBuffer, dl.Recorder]) -> None:
    _, rec = recording
    path = rec.close()
    assert path.is_file()
    assert not rec.folder.exists()
    np.testing.assert_array_equal(rec.samples(BEFORE, 60).value.values, fed(BEFORE, 60))


@pytest.mark.parametrize(("start", "stop", "match"), [
    (5, 50, r"sample 5 is not recorded: this recorder started at sample 10\."),
    (0, 0, r"sample 0 is not recorded: this recorder started at sample 10\."),
    (211, 300, r"sample 211 is not recorded: the recording ends at sample 210\."),
], ids=["before-the-start", "empty-before-the-start", "past-the-end"])
def test_samples_the_recorder_does_not_have_are_a_data_range_error(
    recording: tuple[dl.RingBuffer, dl.Recorder], start: int, stop: int, match: str
) -> None:
    _, rec = recording
    rec.stop()
    with pytest.raises(dl.DataRangeError, match=match) as info:
        rec.samples(start, stop)
    assert isinstance(info.value, IndexError)


def test_a_failed_recording_serves_no_samples(recording: tuple[dl.RingBuffer, dl.Recorder]) -> None:
    buf, rec = recording
    shutil.rmtree(rec.folder)
    buf.push(fed(210, 220))
    wait_for(lambda: rec.error is not None, 10, "the recording to fail")
    with pytest.raises(dl.DataRangeError, match=r"the recording into .*r\.daqrec failed .*before 210"):
        rec.samples(BEFORE, 20)


@pytest.mark.parametrize(("start", "stop", "match"), [
    (50, 40, r"samples\(\) stop must be a whole number >= 50 \(start is 50\); got 40"),
    (20.0, 40, r"samples\(\) start must be a whole number >= 0; got 20\.0"),
    (-1, 40, r"samples\(\) start must be a whole number >= 0; got -1"),
], ids=["stop-before-start", "float-start", "negative-start"])
def test_a_bad_range_is_refused_saying_what_is_allowed(
    recording: tuple[dl.RingBuffer, dl.Recorder], start: int, stop: int, match: str
) -> None:
    _, rec = recording
    with pytest.raises(dl.ConfigurationError, match=match):
        rec.samples(start, stop)


def test_an_idle_recorder_waits_instead_of_spinning(tmp_path: Path) -> None:
    """Once a flush was due with nothing pending, the thread used to wait 0 s per turn: a core
    at 100 % for as long as no sample came. It now sleeps in the reader's wait (woken by data)."""
    import threading
    import time

    calls = 0
    lock = threading.Lock()

    def clock() -> float:
        nonlocal calls
        with lock:
            calls += 1
        return time.monotonic()

    buf = dl.RingBuffer(["a"], 1000, 100.0, start="2024-01-01")
    rec = dl.Recorder(buf, tmp_path / "idle.nc", flush_interval=0.01, clock=clock)
    rec.start()
    buf.push(np.ones((1, 10)))
    wait_for(lambda: rec.saved_upto == 10, what="the first samples on disk")
    with lock:
        before = calls
    t0 = time.monotonic()
    deadline = t0 + 0.5
    while time.monotonic() < deadline:  # idle: the thread may turn at most every 0.1 s
        time.sleep(0.05)
    with lock:
        turns = calls - before
    elapsed = time.monotonic() - t0
    rec.close()
    # a spinning thread calls the clock thousands of times in 0.5 s; a waiting one ~2 per 0.1 s
    assert turns <= 4 * (elapsed / 0.1 + 2), f"{turns} clock calls in {elapsed:.2f} s idle"
    assert dl.open_run(tmp_path / "idle.nc").sizes["time"] == 10
