"""Crash safety: SIGKILL at random moments, and a disk that fills up while recording.

A recording process is killed at a random instant (seeded); what it leaves on
disk must open with ``daqlab.open_run`` and hold every sample it announced as
saved and all data older than one second before the kill, exactly as the
seeded source produced it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import daqlab as dl
from tests.helpers import read_all_values, wait_for

RATE = 10_000.0
CHANNELS = 4

RECORDER = f"""
import sys, time
import daqlab as dl
out, stop_after = sys.argv[1], float(sys.argv[2])
src = dl.sources.Simulated({CHANNELS}, {RATE}, seed=7)
dm = dl.DataManager(src, name="k", output_dir=out, autosave_interval=None,
                    flush_interval=0.2, handle_sigint=False)
def announce(ev):
    if isinstance(ev, dl.events.Recorded):
        print("saved", ev.upto, flush=True)
dm.subscribe(announce, kinds=dl.events.Recorded)
dm.start()
print("started", flush=True)
t0 = time.monotonic()
while stop_after < 0 or time.monotonic() - t0 < stop_after:
    time.sleep(0.01)
print("stopping", flush=True)
dm.stop()
print("stopped", flush=True)
"""


def _expected(n: int) -> np.ndarray[tuple[int, int], np.dtype[np.float64]]:
    src = dl.sources.Simulated(CHANNELS, RATE, seed=7, paced=False, block_size=100_000,
                               duration=n / RATE)
    return read_all_values(src)


def _kill_once(tmp: Path, delay: float, stop_after: float) -> tuple[int, float, Path]:
    """Run the recorder, SIGKILL it ``delay`` s after its first durable segment.

    Returns what was announced as saved before the kill, and the moment after
    which no data may be missing (the kill, or the start of stop() if earlier).
    """
    out = tmp / "out"
    script = tmp / "rec.py"
    script.write_text(textwrap.dedent(RECORDER))
    proc = subprocess.Popen([sys.executable, str(script), str(out), str(stop_after)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    announced = 0
    stopping_at = float("inf")
    first_saved = threading.Event()

    def reader() -> None:
        nonlocal announced, stopping_at
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("saved"):
                announced = max(announced, int(line.split()[1]))
                first_saved.set()
            elif line.startswith("stopping"):
                stopping_at = time.time()  # acquisition ends here: nothing newer exists

    t = threading.Thread(target=reader, name="daqlab-test-crash-reader", daemon=True)
    t.start()
    try:
        if not first_saved.wait(timeout=60):
            proc.kill()
            _, err = proc.communicate(timeout=30)
            pytest.fail(f"recorder never saved anything:\n{err}")
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.005)
        seen = announced  # what was announced before the kill
        kill_time = time.time()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        t.join(timeout=10)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
    return seen, min(kill_time, stopping_at), out


def _check_left_over(out: Path, announced: int, kill_time: float) -> int:
    finals = [p for p in out.iterdir() if p.suffix == ".nc" and not p.name.startswith(".")]
    folders = [p for p in out.iterdir() if p.suffix == ".daqrec" and not p.name.startswith(".")]
    assert finals or folders, f"nothing left in {out}: {list(out.iterdir())}"
    path = finals[0] if finals else folders[0]
    run = dl.open_run(path)
    dl.validate(run)
    n = run.sizes["time"]
    assert n >= announced, f"{path.name}: {n} samples, but {announced} were announced as saved"
    if n:
        last = run.time.values[-1].astype("datetime64[ns]").astype(np.int64) / 1e9
        assert last >= kill_time - 1.0, f"lost more than 1 s: last sample {kill_time - last:.3f} s old"
        steps = np.diff(run.time.values.view(np.int64))
        assert (steps == int(1e9 / RATE)).all(), "samples missing or repeated"
        np.testing.assert_array_equal(run.value.values, _expected(n))
        assert (run.quality.values == dl.Quality.GOOD).all()
    # the final name is whole or absent: a file under it always opens completely
    return n


KILLS = [pytest.param(seed, id=f"kill-{seed}") for seed in range(12)]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("seed", KILLS)
def test_sigkill_at_a_random_moment_loses_nothing_announced(tmp_path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    # a third of the kills land around stop(): during the final flush and consolidation
    stop_after = float(rng.uniform(0.3, 1.0)) if seed % 3 == 2 else -1.0
    delay = float(rng.uniform(0.0, 1.5))
    announced, kill_time, out = _kill_once(tmp_path, delay, stop_after)
    _check_left_over(out, announced, kill_time)


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_many_kills_soak(tmp_path: Path) -> None:
    """200 kills: run with ``python3 dev.py test -m slow``."""
    rng = np.random.default_rng(1234)
    for i in range(200):
        sub = tmp_path / f"k{i}"
        sub.mkdir()
        stop_after = float(rng.uniform(0.3, 1.0)) if i % 3 == 2 else -1.0
        announced, kill_time, out = _kill_once(sub, float(rng.uniform(0, 1.5)), stop_after)
        _check_left_over(out, announced, kill_time)


# --------------------------------------------------------------------------- full disk


@contextlib.contextmanager
def small_disk(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``where`` (needs root, as in CI)."""
    where.mkdir()
    if os.geteuid() != 0:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("the full-disk tests need root to mount a tmpfs")
        pytest.skip("the full-disk tests need root to mount a tmpfs")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, f"cannot mount a tmpfs: {proc.stderr}"
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.mark.timeout(120)
def test_disk_full_while_recording(tmp_path: Path) -> None:
    with small_disk(tmp_path / "small", "8m") as disk:
        src = dl.sources.Simulated(8, 50_000.0, seed=3)
        dm = dl.DataManager(src, name="full", output_dir=disk, autosave_interval=None,
                            flush_interval=0.1, handle_sigint=False)
        events = dm.subscribe(kinds=(dl.events.RecordingFailed, dl.events.Recorded), maxsize=10_000)
        dm.start()
        failed = None
        announced = 0
        deadline = time.monotonic() + 60
        while failed is None:
            ev = events.get(timeout=max(0.0, deadline - time.monotonic()))
            assert ev is not None, "the disk never filled up"
            if isinstance(ev, dl.events.Recorded):
                announced = ev.upto
            elif isinstance(ev, dl.events.RecordingFailed):
                failed = ev
        assert "No space" in str(failed.error) or "space" in str(failed.error).lower()
        at_failure = dm.buffers["src"].written
        wait_for(lambda: dm.buffers["src"].written > at_failure + 10_000, 10,
                 "acquisition to go on after the disk filled up")
        with pytest.raises(dl.StorageError, match="recording of source 'src' failed"):
            dm.stop()
        assert dm.snapshot().sizes["time"] > 0  # the ring still holds the latest data
        names = [p.name for p in disk.iterdir()]
        assert not [n for n in names if n.endswith(".nc")], f"a file under the final name: {names}"
        folder = next(disk.glob("*.daqrec"))
        run = dl.open_run(folder)
        assert run.sizes["time"] >= announced > 0
        np.testing.assert_array_equal(np.diff(run.time.values.view(np.int64)), 20_000)


@pytest.mark.timeout(120)
def test_save_on_a_full_disk_keeps_the_old_file(tmp_path: Path) -> None:
    with small_disk(tmp_path / "small", "2m") as disk:
        small = dl.make_run(np.ones((1, 10)), ["a"], sample_rate=1.0, start="2026-01-01")
        path = dl.save(small, disk / "run.nc")
        big = dl.make_run(np.random.default_rng(0).normal(size=(4, 200_000)), 4, sample_rate=1e3,
                          start="2026-01-01")
        with pytest.raises(dl.StorageError, match=r"could not write .*run\.nc.*Nothing was written"):
            dl.save(big, path, overwrite=True)
        back = dl.open_run(path)  # the old file is intact, not a half-written new one
        np.testing.assert_array_equal(back.value.values, small.value.values)
        assert sorted(p.name for p in disk.iterdir()) == ["run.nc"], "temporary files left behind"
        with pytest.raises(dl.StorageError):
            dl.save(big, disk / "other.nc")
        assert sorted(p.name for p in disk.iterdir()) == ["run.nc"]


def test_recording_folder_vanishing_is_an_error_event(tmp_path: Path) -> None:
    import shutil

    src = dl.sources.Simulated(2, 10_000.0, seed=1)
    dm = dl.DataManager(src, name="gone", output_dir=tmp_path, autosave_interval=None,
                        flush_interval=0.05, handle_sigint=False)
    events = dm.subscribe(kinds=(dl.events.RecordingFailed, dl.events.Recorded), maxsize=10_000)
    dm.start()
    ev = events.get(timeout=30)
    assert isinstance(ev, dl.events.Recorded)
    shutil.rmtree(dm.recorders["src"].folder)
    while not isinstance(ev, dl.events.RecordingFailed):
        ev = events.get(timeout=30)
        assert ev is not None, "no RecordingFailed event after the folder vanished"
    at = dm.buffers["src"].written
    wait_for(lambda: dm.buffers["src"].written > at, 10, "acquisition to go on")
    with pytest.raises(dl.StorageError):
        dm.stop()
    assert dm.snapshot().sizes["time"] > 0


def test_a_recording_netcdf_cannot_hold_exactly_stays_a_recording(tmp_path: Path) -> None:
    # half a year at 3 Hz: float64 time counts cannot keep 1/3 s steps exactly over 104 days
    buf = dl.RingBuffer(1, 100, 3.0, start="2024-01-01")
    rec = dl.Recorder(buf, tmp_path / "r.nc", flush_interval=0.01)
    rec.start()
    times = np.array(["2024-01-01T00:00:00", "2024-01-01T00:00:00.333333333", "2024-07-01T00:00:00"],
                     dtype="datetime64[ns]")
    buf.push(np.array([[1.0, 2.0, 3.0]]), times)
    rec.flush_through(buf.written)
    with pytest.raises(dl.FormatError, match=r"cannot write r\.nc as NetCDF: its times span 182 days.*"
                       r"The recording is kept, whole, in .*r\.daqrec: "
                       r"daqlab\.open_run\('.*r\.nc'\) opens it"):
        rec.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.daqrec"]
    run = dl.open_run(tmp_path / "r.nc")
    np.testing.assert_array_equal(run.time.values, times)
    np.testing.assert_array_equal(run.value.values, [[1.0, 2.0, 3.0]])


@pytest.mark.parametrize("version", ["x", None, [1], 1.5, True])
def test_a_recording_with_a_damaged_schema_version_is_a_format_error(tmp_path: Path, version: Any) -> None:
    import json

    folder = tmp_path / "r.daqrec"
    folder.mkdir()
    (folder / "run.json").write_text(json.dumps(
        {"format": "daqlab-recording", "schema_version": version, "channels": [], "attrs": {}}))
    with pytest.raises(dl.FormatError, match=r"r\.daqrec/run\.json is damaged: schema_version .* is not "
                       r"a whole number"):
        dl.open_run(folder)


def test_open_run_of_the_final_name_finds_the_recording_after_a_crash(tmp_path: Path) -> None:
    buf = dl.RingBuffer(2, 1000, 100.0, start="2026-01-01")
    rec = dl.Recorder(buf, tmp_path / "r.nc", flush_interval=0.05)
    rec.start()
    buf.push(np.ones((2, 50)))
    rec.stop()  # as if killed before consolidation: only the folder exists
    assert not (tmp_path / "r.nc").exists()
    run = dl.open_run(tmp_path / "r.nc")
    assert run.sizes["time"] == 50


# --------------------------------------------------------------------------- reading while consolidating


def _recording(path: Path, blocks: int, size: int = 200) -> tuple[dl.Recorder, np.ndarray[Any, Any]]:
    """A started recorder on ``path`` holding ``blocks`` durable segments of distinct values."""
    buf = dl.RingBuffer(2, blocks * size + 1, 1000.0, start="2026-01-01")
    rec = dl.Recorder(buf, path, flush_interval=0.01)
    rec.start()
    k = np.arange(blocks * size, dtype=np.float64)
    pushed = np.stack([k, -k - 1.0])
    for i in range(blocks):
        buf.push(pushed[:, i * size:(i + 1) * size])
        rec.flush_through(buf.written)  # one segment per block: consolidation has work to do
    return rec, pushed


@pytest.mark.timeout(180)
def test_open_run_while_the_recorder_consolidates_gives_the_run(tmp_path: Path) -> None:
    # open_run of the final name reads the recording folder until the final file is there;
    # when close() renamed the folder away mid-read, that read failed with a raw
    # FileNotFoundError or "segment ... is unreadable" although the complete file existed
    results: list[tuple[Path, int]] = []
    errors: list[BaseException] = []
    for trial in range(6):
        path = tmp_path / f"r{trial}.nc"
        rec, pushed = _recording(path, 40)
        closed = threading.Event()
        reading = threading.Event()

        def read_until_closed(path: Path = path, pushed: np.ndarray[Any, Any] = pushed,
                              closed: threading.Event = closed, reading: threading.Event = reading) -> None:
            deadline = time.monotonic() + 60
            opens_after_close = 0
            while opens_after_close < 2 and time.monotonic() < deadline:
                after = closed.is_set()
                reading.set()
                try:
                    run = dl.open_run(path)
                    n = run.sizes["time"]
                    assert 0 < n <= pushed.shape[1]
                    np.testing.assert_array_equal(run["value"].values, pushed[:, :n])  # a prefix
                    dl.validate(run)
                    results.append((path, n))
                    if after:
                        assert n == pushed.shape[1], "an open after close() missed samples"
                except BaseException as exc:
                    errors.append(exc)
                opens_after_close += after

        reader = threading.Thread(target=read_until_closed, name=f"test-reader-{trial}")
        reader.start()
        assert reading.wait(30), "the reader did not start"
        assert rec.close() == path
        closed.set()
        reader.join(90)
        assert not reader.is_alive(), "open_run hung while the recorder consolidated"
        assert not rec.folder.exists()
    # every open gave a valid prefix of the samples: no raw OSError, and no DaqlabError either,
    # since the final file is complete before the folder goes
    assert not errors, [f"{type(e).__name__}: {e}" for e in errors[:5]]
    assert len(results) >= 12


def test_a_lazy_run_of_a_recording_consolidated_before_loading_names_the_final_file(tmp_path: Path) -> None:
    import re
    import shutil

    path = tmp_path / "r.h5"  # any final name: the recording's manifest keeps it
    rec, pushed = _recording(path, 3)
    lazy = dl.open_run(path, chunks={})
    lazy_folder = dl.open_run(rec.folder, chunks={})
    recorded = rec.recorded(chunks={})
    assert lazy["value"].chunks is not None
    rec.close()
    consolidated = rf"recording .*r\.daqrec was finished and consolidated into {re.escape(str(path))}.*" \
                   rf"open the complete run with daqlab\.open_run\('{re.escape(str(path))}'\)"
    for run in (lazy, lazy_folder, recorded):
        with pytest.raises(dl.StorageError, match=consolidated):
            run.load()
    with pytest.raises(dl.StorageError, match=r"r\.daqrec does not exist; check the path"):
        dl.open_recording(rec.folder)
    shutil.move(path, path.with_suffix(".nc"))  # where a recording goes by default
    with pytest.raises(dl.StorageError, match=r"consolidated into .*r\.nc"):
        dl.open_recording(rec.folder)  # its folder is gone; the message says where the run went
    path = path.with_suffix(".nc")
    np.testing.assert_array_equal(dl.open_run(path)["value"].values, pushed)


def test_a_recording_folder_deleted_under_a_lazy_run_is_a_storage_error(tmp_path: Path) -> None:
    import shutil

    rec, _ = _recording(tmp_path / "r.nc", 2)
    lazy = dl.open_run(rec.folder, chunks={})
    rec.stop()
    shutil.rmtree(rec.folder)  # deleted, not consolidated: no final file to point to
    with pytest.raises(dl.StorageError, match=r"segment seg-0000000\d\.h5 of recording .*r\.daqrec vanished"):
        lazy.load()
