"""dl.Catalog on real folders: every format is a row with the figures ``open_tree`` gives,
recordings in each state (in progress in a thread, finished, killed by SIGKILL in another
process, consolidated), damaged files as rows with their error, nothing written but the index,
the index kept right (only changed files read again, a damaged or outdated index rebuilt, two
processes scanning at once) and a folder daqlab may not write to (scanned as user 'nobody')."""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import json
import os
import pickle
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import pytest
import xarray as xr

import daqlab as dl
from daqlab.catalog import COLUMNS, INDEX_NAME
from daqlab.tree import make_tree, run_nodes
from tests.helpers import require_tool, wait_for
from tests.io.make_audio import make_flac_file, make_wav_file
from tests.io.make_edf import make_edf_file
from tests.io.make_mdf import make_mdf_file
from tests.io.make_tdms import make_tdms_file
from tests.io.make_xdf import make_xdf_file

SIDECAR = ".daqlab.json"
NOBODY = 65534
ENV = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}


# ---------------------------------------------------------------------- runs and rows


def _run(name: str, channels: list[dl.Channel], rate: float, n: int, *, seed: int,
         calibrated: bool = False, metadata: dict[str, Any] | None = None, description: str = "",
         start: str = "2024-03-01T10:00:00") -> xr.Dataset:
    """A run holding every flag once or twice: samples 1 BAD (NaN), 2-3 SUSPECT (last channel),
    n-1 INTERPOLATED (last channel); every other sample GOOD."""
    values = np.round(np.random.default_rng(seed).normal(size=(len(channels), n)), 6)
    values[0, 1] = np.nan
    quality = np.zeros(values.shape, np.int8)
    quality[0, 1] = dl.Quality.BAD
    quality[-1, 2:4] = dl.Quality.SUSPECT
    quality[-1, n - 1] = dl.Quality.INTERPOLATED
    return dl.make_run(values, channels, sample_rate=rate, start=start, quality=quality, name=name,
                       description=description, metadata=metadata or {}, calibrated=calibrated)


def _flag_counts(c: int, n: int) -> list[int]:
    """What :func:`_run` holds of each flag (good, suspect, bad, interpolated)."""
    return [c * n - 4, 2, 1, 1]


def _ns(value: Any) -> int | None:
    """A time (numpy, pandas or ISO text, naive or UTC) as ns since 1970, None for none/NaT."""
    if value is None or (isinstance(value, str) and not value):
        return None
    t: Any = pd.Timestamp(value)  # NaT too (the stubs say never)
    if pd.isna(t):
        return None
    if t.tzinfo is not None:
        t = t.tz_convert("UTC").tz_localize(None)
    return int(t.value)


def _at(text: str) -> int:
    """An ISO time (UTC) as ns since 1970."""
    ns = _ns(text)
    assert ns is not None
    return ns


def _plain(value: Any) -> Any:
    """A cell of cat.df as plain Python, comparable with ==: times as ns, NaN/NaT as None."""
    if value is pd.NaT or isinstance(value, (pd.Timestamp, np.datetime64)):
        return _ns(value)
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and np.isnan(value):
        return None
    return value


def _row(cat: dl.Catalog, rel: str) -> dict[str, Any]:
    """Row ``rel`` of ``cat.df`` as plain values (see :func:`_plain`)."""
    hits = cat.df.index[cat.df["path"] == rel]
    assert len(hits) == 1, f"{rel} is {len(hits)} rows of {list(cat.df['path'])}"
    return {c: _plain(cat.df.at[hits[0], c]) for c in COLUMNS}


def _counts(run: xr.Dataset) -> np.ndarray[Any, np.dtype[np.int64]]:
    return np.bincount(run["quality"].values.ravel().astype(np.intp), minlength=4)[:4].astype(np.int64)


def _disk(path: Path) -> tuple[int, int]:
    """Bytes and modification time (ns) a catalog shows: a file (a CSV with its sidecar, the
    CSV's time), or the files of a recording folder (the newest time)."""
    if path.is_dir():
        files = [p.stat() for p in path.iterdir() if p.is_file() and not p.name.startswith(".")]
        return sum(s.st_size for s in files), max(s.st_mtime_ns for s in files)
    st = path.stat()
    side = path.with_name(path.name + SIDECAR)
    extra = side.stat().st_size if path.suffix == ".csv" and side.is_file() else 0
    return st.st_size + extra, st.st_mtime_ns


def expected_row(root: Path, rel: str, fmt: str, state: str = "complete") -> dict[str, Any]:
    """The row a catalog of ``root`` must show for ``rel``, from ``dl.open_tree`` of it (every
    quality flag counted from the opened samples) and from ``stat``."""
    path = root / rel
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tree = dl.open_tree(path)
    assert not caught, [str(w.message) for w in caught]  # a readable run opens without a word
    runs = run_nodes(tree)
    counts = np.sum([_counts(r) for r in runs.values()], axis=0)
    total = int(counts.sum())
    starts = [_ns(r["time"].values[0]) for r in runs.values() if r.sizes["time"]]
    ends = [_ns(r["time"].values[-1]) for r in runs.values() if r.sizes["time"]]
    start, end = (min(starts), max(ends)) if starts else (None, None)  # type: ignore[type-var]
    rates = [float(r.attrs["sample_rate"]) for r in runs.values()]
    attrs = tree.attrs
    size, mtime = _disk(path)
    return {
        "path": rel, "format": fmt, "state": state, "error": "", "warning": "",
        "name": str(attrs.get("name", "")), "id": str(attrs.get("id", "")),
        "description": str(attrs.get("description", "")), "created": _ns(attrs.get("created_at")),
        "start": start, "end": end,
        "duration": (end - start) / 1e9 if start is not None and end is not None else None,
        "sample_rate": max(rates), "rates": rates, "groups": list(runs),
        "channels": [str(c) for r in runs.values() for c in r["channel"].values],
        "units": [str(u) for r in runs.values() for u in r["unit"].values],
        "n_channels": sum(r.sizes["channel"] for r in runs.values()),
        "samples": sum(r.sizes["time"] for r in runs.values()),
        **{flag: int(c) / total if total else None
           for flag, c in zip(("good", "suspect", "bad", "interpolated"), counts, strict=True)},
        "calibrated": all(bool(r.attrs["calibrated"]) for r in runs.values()),
        "bytes": size, "modified": mtime,
        "metadata_keys": sorted(attrs.get("metadata") or {}),
    }


def _shares(counts: list[int]) -> dict[str, float]:
    total = sum(counts)
    return {f: c / total for f, c in zip(("good", "suspect", "bad", "interpolated"), counts, strict=True)}


def _index_rows(path: Path) -> list[str]:
    """The paths the SQLite index at ``path`` holds, after checking it is sound."""
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert db.execute("PRAGMA user_version").fetchone()[0] == 1
        return [r[0] for r in db.execute("SELECT path FROM runs ORDER BY path")]
    finally:
        db.close()


def _index_files(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith(INDEX_NAME))


# ---------------------------------------------------------------------- recordings


def _ramp(a: int, b: int, channels: int = 2) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Values unique per sample: ``k`` and ``-k`` for sample ``k``, NaN at sample 4 of the
    last channel (BAD)."""
    k = np.arange(a, b, dtype=np.float64)
    v = np.stack([k * (1 if i % 2 == 0 else -1) for i in range(channels)])
    if a <= 4 < b:
        v[-1, 4 - a] = np.nan
    return v


def _closed_recording(path: Path) -> Path:
    """A recording of 150 samples (two segments), stopped and not consolidated: the folder."""
    buf = dl.RingBuffer(["x", dl.Channel("y", unit="mV")], 1000, 200.0, start="2024-05-01T09:00",
                        name="closed rec", metadata={"rig": "B"})
    rec = dl.Recorder(buf, path, flush_interval=0.01)
    rec.start()
    try:
        buf.push(_ramp(0, 100))
        rec.flush_through(buf.written, timeout=60)
        buf.push(_ramp(100, 150))
    finally:
        folder = rec.close(consolidate=False)
    return folder


KILLED_CHILD = """
import sys, threading
import numpy as np
import daqlab as dl
v = np.stack([np.arange(300.0), -np.arange(300.0)])
v[1, 7] = np.nan
buf = dl.RingBuffer(["p", dl.Channel("q", unit="bar")], 1000, 50.0, start="2024-06-01T08:00",
                    name="killed rec")
rec = dl.Recorder(buf, sys.argv[1], flush_interval=0.02)
rec.start()
buf.push(v[:, :200])
rec.flush_through(buf.written, timeout=60)
buf.push(v[:, 200:])
rec.flush_through(buf.written, timeout=60)
print("saved", rec.saved_upto, flush=True)
threading.Event().wait()  # recording, until killed
"""
KILLED_SAMPLES = 300


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """The child's next line of output; a child that says nothing in ``timeout`` s is killed."""
    guard = threading.Timer(timeout, proc.kill)
    guard.start()
    try:
        assert proc.stdout is not None
        return proc.stdout.readline()
    finally:
        guard.cancel()


@dataclass
class Killed:
    root: Path
    folder: Path
    cat: dl.Catalog
    live: dict[str, Any]
    expected_live: dict[str, Any]


@pytest.fixture(scope="module")
def killed_child(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    """The child recording into ``k.daqrec`` (started early: it takes a few seconds to import)."""
    root = tmp_path_factory.mktemp("killed")
    proc = subprocess.Popen([sys.executable, "-c", KILLED_CHILD, str(root / "k.nc")], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield root, proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.communicate(timeout=30)


@pytest.fixture(scope="module")
def killed(killed_child: tuple[Path, subprocess.Popen[str]]) -> Iterator[Killed]:
    """A recording whose process was SIGKILLed after saving 300 samples (two segments); the
    catalog row of it read from this process while the child still held it."""
    root, proc = killed_child
    try:
        line = _read_line(proc, 120)
        if not line.startswith("saved"):
            proc.kill()
            pytest.fail(f"the recording child said {line!r}:\n{proc.communicate(timeout=30)[1]}")
        assert int(line.split()[1]) == KILLED_SAMPLES
        folder = root / "k.daqrec"
        wait_for(lambda: len(list(folder.glob("seg-*.h5"))) == 2, timeout=30, what="two segments")
        cat = dl.Catalog(root)
        live = _row(cat, "k.daqrec")
        expected_live = expected_row(root, "k.daqrec", "recording", "recording")
    finally:
        proc.send_signal(signal.SIGKILL)  # os.kill(pid, SIGKILL), unless it has ended already
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    yield Killed(root, folder, cat, live, expected_live)
    cat.close()


# ---------------------------------------------------------------------- the zoo: a folder of every kind

# label: (path in the zoo, format, state); "*" in a path is resolved once the zoo is written
RUNS: dict[str, tuple[str, str, str]] = {
    "netcdf": ("daqlab/single.nc", "netcdf", "complete"),
    "netcdf-tree": ("daqlab/tree.nc", "netcdf", "complete"),
    "netcdf-calibrated": ("daqlab/calibrated.nc", "netcdf", "complete"),
    "netcdf-deep": ("deep/a/b/c/d/deep.nc", "netcdf", "complete"),
    "csv": ("daqlab/long.csv", "csv", "complete"),
    "csv-wide": ("daqlab/wide.csv", "csv-wide", "complete"),
    "seed-hdf5": ("daqlab/seed.h5", "seed-hdf5", "complete"),
    "tdms": ("foreign/rig.tdms", "tdms", "complete"),
    "mdf4": ("foreign/car.mf4", "mdf4", "complete"),
    "edf": ("foreign/sleep.edf", "edf", "complete"),
    "bdf": ("foreign/eeg.bdf", "edf", "complete"),
    "xdf": ("foreign/lab.xdf", "xdf", "complete"),
    "wav": ("foreign/mic.wav", "wav", "complete"),
    "flac": ("foreign/mic.flac", "wav", "complete"),
    "session": ("session/rig.session.json", "session", "complete"),
    "session-fast": ("session/*-rig-fast-*.nc", "netcdf", "complete"),
    "session-slow": ("session/*-rig-slow-*.nc", "netcdf", "complete"),
    "recording-closed": ("recordings/closed.daqrec", "recording", "complete"),
    "recording-crashed": ("recordings/crashed.daqrec", "recording", "crashed"),
}
# the flags each daqlab file holds (good, suspect, bad, interpolated), as written
KNOWN_COUNTS = {"netcdf": _flag_counts(3, 50), "netcdf-calibrated": _flag_counts(2, 30),
                "netcdf-deep": _flag_counts(3, 50), "csv": _flag_counts(3, 50),
                "csv-wide": _flag_counts(3, 50),
                "netcdf-tree": [a + b for a, b in zip(_flag_counts(2, 60), _flag_counts(1, 6), strict=True)],
                "recording-closed": [299, 0, 1, 0], "recording-crashed": [599, 0, 1, 0]}
KNOWN_SAMPLES = {"netcdf": 50, "netcdf-tree": 66, "csv": 50, "csv-wide": 50, "seed-hdf5": 50,
                 "session": 505, "recording-closed": 150, "recording-crashed": KILLED_SAMPLES}

# damaged: path -> (format, what the error says)
DAMAGED: dict[str, tuple[str, str]] = {
    "damaged/truncated.nc": ("netcdf", r"truncated\.nc could not be read as NetCDF4/HDF5 .*truncated"),
    "damaged/garbage.nc": ("netcdf", r"garbage\.nc is not a run daqlab can read"),
    "damaged/garbage.tdms": ("tdms", r"garbage\.tdms"),
    "damaged/garbage.edf": ("edf", r"garbage\.edf: the header's .* the file is not EDF/BDF"),
    "damaged/garbage.wav": ("wav", r"garbage\.wav is not a run daqlab can read"),
    "damaged/empty.csv": ("csv", r"empty\.csv"),
    "damaged/edited.csv": ("csv", r"edited\.csv\.daqlab\.json .* does not belong to this CSV"),
    "damaged/plain.h5": ("netcdf", r"plain\.h5 is an HDF5 file that is neither a netCDF-4 file"),
    "damaged/newer.nc": ("netcdf", r"newer\.nc was written with run schema version 3 .* Upgrade daqlab"),
    "damaged/broken.daqrec": ("recording", r"broken\.daqrec|run\.json"),
}
NOT_RUNS = ("other/picture.png", "other/notes.txt", "other/analysis.ipynb", "other/config.json",
            "other/orphan.csv.daqlab.json", "other/.hidden.nc", "daqlab/.~lock.single.nc#")


@dataclass
class Zoo:
    root: Path
    paths: dict[str, str] = field(default_factory=dict)  # label -> path, resolved


def _garbage(path: Path, head: bytes, n: int = 3000) -> None:
    path.write_bytes(head + np.random.default_rng(len(path.name)).bytes(n))


def _write_daqlab_runs(root: Path) -> None:
    chans = [dl.Channel("ai0", unit="V"), dl.Channel("ai1", unit="V"), dl.Channel("temp", unit="degC")]
    single = _run("single", chans, 1000.0, 50, seed=1, description="one run",
                  metadata={"operator": "ann", "sample": "S-1"})
    (root / "daqlab").mkdir()
    dl.save(single, root / "daqlab" / "single.nc")
    dl.save(single, root / "daqlab" / "long.csv")
    dl.save(single, root / "daqlab" / "wide.csv", format="csv-wide")
    dl.save(single, root / "daqlab" / "seed.h5", format="seed-hdf5")
    cal = _run("cal", [dl.Channel("p", unit="bar"), dl.Channel("f", unit="N")], 50.0, 30, seed=2,
               calibrated=True, start="2024-03-02T00:00:00.5")
    dl.save(cal, root / "daqlab" / "calibrated.nc")
    fast = _run("fast", [dl.Channel("acc0", unit="m/s^2"), dl.Channel("acc1", unit="m/s^2")], 1000.0, 60,
                seed=3, start="2024-03-03T12:00")
    slow = _run("slow", [dl.Channel("t_in", unit="degC")], 10.0, 6, seed=4, start="2024-03-03T12:00:00.25")
    dl.save(make_tree({"fast": fast, "slow": slow}, name="rig", metadata={"operator": "bob"}),
            root / "daqlab" / "tree.nc")
    deep = root / "deep" / "a" / "b" / "c" / "d"
    deep.mkdir(parents=True)
    shutil.copy2(root / "daqlab" / "single.nc", deep / "deep.nc")


def _write_foreign(root: Path) -> None:
    folder = root / "foreign"
    folder.mkdir()
    makers: dict[str, Callable[[Path], Any]] = {
        "rig.tdms": make_tdms_file, "car.mf4": make_mdf_file, "sleep.edf": make_edf_file,
        "eeg.bdf": functools.partial(make_edf_file, bdf=True), "lab.xdf": make_xdf_file,
        "mic.wav": functools.partial(make_wav_file, frames=1000),
        "mic.flac": functools.partial(make_flac_file, frames=1000)}
    for name, make in makers.items():
        make(folder / name)


def _write_session(root: Path) -> None:
    sources = {"fast": dl.sources.Simulated(["acc0", "acc1"], 1000.0, seed=1, paced=False, duration=0.5),
               "slow": dl.sources.Simulated(["temp"], 10.0, seed=2, paced=False, duration=0.5)}
    with dl.DataManager(sources, name="rig", autosave_interval=None, output_dir=root / "session") as dm:
        assert dm.wait(timeout=60)
    assert dm.session_path is not None
    dm.session_path.rename(root / "session" / "rig.session.json")  # it names its recordings relatively


def _write_damaged(root: Path) -> None:
    folder = root / "damaged"
    folder.mkdir()
    good = root / "daqlab" / "single.nc"
    data = good.read_bytes()
    (folder / "truncated.nc").write_bytes(data[: len(data) // 2])
    _garbage(folder / "garbage.nc", b"")
    _garbage(folder / "garbage.tdms", b"TDSm")
    _garbage(folder / "garbage.edf", b"0       ")
    _garbage(folder / "garbage.wav", b"RIFF")
    (folder / "empty.csv").write_bytes(b"")
    shutil.copy2(root / "daqlab" / "long.csv", folder / "edited.csv")
    shutil.copy2(root / "daqlab" / f"long.csv{SIDECAR}", folder / f"edited.csv{SIDECAR}")
    lines = (folder / "edited.csv").read_text().splitlines(keepends=True)
    (folder / "edited.csv").write_text("".join(lines[:-5]))  # a few samples cut by hand
    with h5py.File(folder / "plain.h5", "w") as f:
        f["x"] = np.arange(10)
    shutil.copy2(good, folder / "newer.nc")
    with h5py.File(folder / "newer.nc", "r+") as f:
        f.attrs["daqlab_schema_version"] = np.int32(3)
    (folder / "broken.daqrec").mkdir()
    (folder / "broken.daqrec" / "run.json").write_text('{"format": "daqlab-recording", ')


def _write_not_runs(root: Path) -> None:
    (root / "other").mkdir()
    (root / "other" / "picture.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    (root / "other" / "notes.txt").write_text("run 3 was noisy\n")
    (root / "other" / "analysis.ipynb").write_text(json.dumps({"cells": [], "nbformat": 4,
                                                              "nbformat_minor": 5, "metadata": {}}))
    (root / "other" / "config.json").write_text('{"rate": 1000}')
    (root / "other" / f"orphan.csv{SIDECAR}").write_text("{}")
    shutil.copy2(root / "daqlab" / "single.nc", root / "other" / ".hidden.nc")
    shutil.copy2(root / "daqlab" / "single.nc", root / "daqlab" / ".~lock.single.nc#")


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest,
        killed_child: tuple[Path, subprocess.Popen[str]]) -> Zoo:
    """A folder of every kind a catalog meets (see RUNS, DAMAGED, NOT_RUNS)."""
    root = tmp_path_factory.mktemp("zoo")  # written while the killed child starts up
    _write_daqlab_runs(root)
    _write_foreign(root)
    _write_session(root)
    (root / "recordings").mkdir()
    _closed_recording(root / "recordings" / "closed.nc")
    _write_damaged(root)
    _write_not_runs(root)
    killed: Killed = request.getfixturevalue("killed")
    shutil.copytree(killed.folder, root / "recordings" / "crashed.daqrec")
    paths = {}
    for label, (pattern, _, _) in RUNS.items():
        found = sorted(root.glob(pattern))
        assert len(found) == 1, (pattern, found)
        paths[label] = found[0].relative_to(root).as_posix()
    return Zoo(root, paths)


@pytest.fixture(scope="module")
def zoo_cat(zoo: Zoo) -> Iterator[dl.Catalog]:
    cat = dl.Catalog(zoo.root)
    yield cat
    cat.close()


# ---------------------------------------------------------------------- 1. every format


def test_the_zoo_lists_every_run_and_damaged_file_and_nothing_else(zoo: Zoo, zoo_cat: dl.Catalog) -> None:
    df = zoo_cat.df
    assert list(df.columns) == list(COLUMNS)
    assert list(df.index) == list(range(len(df)))
    assert list(df["path"]) == sorted([*zoo.paths.values(), *DAMAGED])
    assert (df.loc[df["path"].isin(list(zoo.paths.values())), "error"] == "").all()


@pytest.mark.parametrize("label", list(RUNS))
def test_each_format_is_a_row_with_the_figures_open_tree_gives(zoo: Zoo, zoo_cat: dl.Catalog,
                                                               label: str) -> None:
    rel = zoo.paths[label]
    _, fmt, state = RUNS[label]
    got = _row(zoo_cat, rel)
    assert got == expected_row(zoo.root, rel, fmt, state)
    if label in KNOWN_COUNTS:  # and those are the flags that were written
        assert {f: got[f] for f in ("good", "suspect", "bad", "interpolated")} == _shares(KNOWN_COUNTS[label])
    if label in KNOWN_SAMPLES:
        assert got["samples"] == KNOWN_SAMPLES[label]


def test_the_rows_of_a_tree_and_a_session_hold_each_group(zoo: Zoo, zoo_cat: dl.Catalog) -> None:
    tree = _row(zoo_cat, zoo.paths["netcdf-tree"])
    assert (tree["groups"], tree["rates"], tree["sample_rate"]) == (["/fast", "/slow"], [1000.0, 10.0],
                                                                    1000.0)
    assert (tree["channels"], tree["units"]) == (["acc0", "acc1", "t_in"], ["m/s^2", "m/s^2", "degC"])
    assert (tree["name"], tree["metadata_keys"], tree["samples"]) == ("rig", ["operator"], 66)
    assert tree["start"] == _ns("2024-03-03T12:00")
    assert tree["end"] == _ns("2024-03-03T12:00:00.75")  # the slow group ends last
    session = _row(zoo_cat, zoo.paths["session"])
    assert (session["groups"], session["rates"]) == (["/fast", "/slow"], [1000.0, 10.0])
    assert session["samples"] == 505
    assert session["channels"] == ["acc0", "acc1", "temp"]
    single = _row(zoo_cat, zoo.paths["netcdf"])
    assert (single["groups"], single["name"], single["description"]) == (["/"], "single", "one run")
    assert (single["start"], single["duration"]) == (_ns("2024-03-01T10:00"), 0.049)
    assert single["metadata_keys"] == ["operator", "sample"]
    assert _row(zoo_cat, zoo.paths["netcdf-calibrated"])["calibrated"] is True


# ---------------------------------------------------------------------- 2. recordings


def test_a_recording_is_listed_while_written_then_complete_then_as_its_file(tmp_path: Path) -> None:
    buf = dl.RingBuffer(["x", dl.Channel("y", unit="mV")], 1000, 200.0, start="2024-05-01T09:00",
                        name="live rec")
    rec = dl.Recorder(buf, tmp_path / "live.nc", flush_interval=0.01)
    rec.start()
    try:
        buf.push(_ramp(0, 120))
        wait_for(lambda: rec.saved_upto >= 120, timeout=30, what="120 samples durable")
        cat = dl.Catalog(tmp_path)
        assert rec._thread is not None and rec._thread.is_alive()  # noqa: PT018 - still recording
        assert _row(cat, "live.daqrec") == expected_row(tmp_path, "live.daqrec", "recording", "recording")
        assert _row(cat, "live.daqrec")["samples"] == 120
        buf.push(_ramp(120, 200))
        wait_for(lambda: rec.saved_upto >= 200, timeout=30, what="200 samples durable")
        got = _row(cat.scan(), "live.daqrec")
        assert (got["state"], got["samples"], got["bad"]) == ("recording", 200, 1 / 400)
        buf.push(_ramp(200, 230))
        rec.stop()
        assert (tmp_path / "live.daqrec" / "closed.json").is_file()
        got = _row(cat.scan(), "live.daqrec")
        assert got == expected_row(tmp_path, "live.daqrec", "recording", "complete")
        assert (got["state"], got["samples"], got["name"]) == ("complete", 230, "live rec")
        assert got["end"] == _at("2024-05-01T09:00") + 229 * 5_000_000
    finally:
        path = rec.close()  # consolidated: the folder becomes live.nc
    assert list(cat.scan().df["path"]) == ["live.nc"]
    got = _row(cat, "live.nc")
    assert got == expected_row(tmp_path, "live.nc", "netcdf")
    assert (got["samples"], got["bad"], got["name"]) == (230, 1 / 460, "live rec")
    assert _index_rows(tmp_path / INDEX_NAME) == ["live.nc"]
    assert path == tmp_path / "live.nc"


def test_a_finished_recording_not_consolidated_is_complete(tmp_path: Path) -> None:
    folder = _closed_recording(tmp_path / "done.nc")
    assert sorted(p.name for p in folder.iterdir())[:2] == ["closed.json", "run.json"]
    cat = dl.Catalog(tmp_path)
    got = _row(cat, "done.daqrec")
    assert got == expected_row(tmp_path, "done.daqrec", "recording", "complete")
    assert (got["samples"], got["channels"], got["units"], got["metadata_keys"]) == (
        150, ["x", "y"], ["", "mV"], ["rig"])


def test_a_killed_recording_is_crashed_with_the_samples_its_segments_hold(killed: Killed) -> None:
    # while the child held it, from this process: still being written
    assert killed.live == killed.expected_live
    assert (killed.live["state"], killed.live["samples"]) == ("recording", KILLED_SAMPLES)
    in_segments = 0
    for seg in sorted(killed.folder.glob("seg-*.h5")):
        with h5py.File(seg, "r") as f:
            in_segments += f["time"].shape[0]
    assert in_segments == KILLED_SAMPLES
    assert not (killed.folder / "closed.json").exists()
    # the kill changed no file: the state alone tells the rescan to look again
    got = _row(killed.cat.scan(), "k.daqrec")
    assert got == expected_row(killed.root, "k.daqrec", "recording", "crashed")
    assert (got["state"], got["samples"], got["bad"], got["units"]) == ("crashed", 300, 1 / 600, ["", "bar"])
    assert got["start"] == _ns("2024-06-01T08:00")
    assert got["end"] == _at("2024-06-01T08:00") + 299 * 20_000_000
    assert _row(dl.Catalog(killed.root, index=":memory:"), "k.daqrec") == got


# ---------------------------------------------------------------------- 3. damaged files


@pytest.mark.parametrize("rel", list(DAMAGED))
def test_a_damaged_file_is_a_row_with_its_error(zoo: Zoo, zoo_cat: dl.Catalog, rel: str) -> None:
    fmt, message = DAMAGED[rel]
    got = _row(zoo_cat, rel)
    assert (got["format"], got["state"]) == (fmt, "error")
    assert re.search(message, got["error"]), got["error"]
    size, mtime = _disk(zoo.root / rel)
    assert {k: got[k] for k in ("samples", "n_channels", "channels", "units", "groups", "rates", "start",
                                "end", "good", "bad", "bytes", "modified", "calibrated")} == {
        "samples": 0, "n_channels": 0, "channels": [], "units": [], "groups": [], "rates": [],
        "start": None, "end": None, "good": None, "bad": None, "bytes": size, "modified": mtime,
        "calibrated": False}


def test_files_that_are_no_run_are_not_rows(zoo: Zoo, zoo_cat: dl.Catalog) -> None:
    for rel in NOT_RUNS:
        assert (zoo.root / rel).is_file(), rel
        assert rel not in set(zoo_cat.df["path"]), rel


def _ncks_cut(ncks: str, src: Path, dst: Path, n: int) -> None:
    subprocess.run([ncks, "-O", "-d", f"time,0,{n - 1}", str(src), str(dst)], check=True,
                   capture_output=True, timeout=60)


def test_a_file_a_tool_cut_is_read_again_not_taken_from_its_stored_summary(tmp_path: Path) -> None:
    ncks = require_tool("ncks")
    single = _run("single", [dl.Channel("a", unit="V"), dl.Channel("b", unit="V")], 100.0, 40, seed=5)
    dl.save(single, tmp_path / "full.nc")
    fast = _run("fast", [dl.Channel("a", unit="V")], 100.0, 40, seed=6)
    slow = _run("slow", [dl.Channel("t", unit="K")], 10.0, 8, seed=7)
    dl.save(make_tree({"fast": fast, "slow": slow}, name="pair"), tmp_path / "tree.nc")
    _ncks_cut(ncks, tmp_path / "full.nc", tmp_path / "cut.nc", 3)  # keeps samples 0-2: one SUSPECT
    _ncks_cut(ncks, tmp_path / "tree.nc", tmp_path / "cut_tree.nc", 2)
    with h5py.File(tmp_path / "cut.nc", "r") as f:  # the tool kept the summary of 40 samples
        assert f["time"].shape == (3,)
        assert '"samples": 40' in f.attrs["daqlab_summary"].decode()
    with h5py.File(tmp_path / "cut_tree.nc", "r") as f:
        assert (f["fast/time"].shape, f["slow/time"].shape) == ((2,), (2,))
        assert '"samples": 40' in f["fast"].attrs["daqlab_summary"].decode()
    cat = dl.Catalog(tmp_path)
    assert list(cat.df["path"]) == ["cut.nc", "cut_tree.nc", "full.nc", "tree.nc"]
    for rel in cat.df["path"]:
        assert _row(cat, rel) == expected_row(tmp_path, rel, "netcdf"), rel
    cut = _row(cat, "cut.nc")
    assert (cut["samples"], cut["suspect"], cut["bad"], cut["interpolated"]) == (3, 1 / 6, 1 / 6, 0.0)
    cut_tree = _row(cat, "cut_tree.nc")
    assert (cut_tree["samples"], cut_tree["bad"]) == (4, 2 / 4)  # sample 1 of each group is BAD
    assert _row(cat, "full.nc")["samples"] == 40


# ---------------------------------------------------------------------- 4. nothing written but the index


def _snapshot(root: Path) -> dict[str, tuple[Any, ...]]:
    """Every file (size, mtime, mode, sha256) and folder (mtime but the root's, mode) under
    ``root``, the catalog's index files left out."""
    out: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        for name in dirnames:
            st = (here / name).lstat()
            out[(here / name).relative_to(root).as_posix() + "/"] = (st.st_mtime_ns, st.st_mode)
        for name in filenames:
            if here == root and name.startswith(INDEX_NAME):
                continue
            p = here / name
            st = p.lstat()
            out[p.relative_to(root).as_posix()] = (st.st_size, st.st_mtime_ns, st.st_mode,
                                                  hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def test_scanning_writes_nothing_in_the_folder_but_the_index(zoo: Zoo, tmp_path: Path) -> None:
    root = tmp_path / "zoo"
    shutil.copytree(zoo.root, root, symlinks=True)
    for name in _index_files(root):
        (root / name).unlink()
    before = _snapshot(root)
    assert any(rel.startswith("recordings/crashed.daqrec/seg-") for rel in before)
    cat = dl.Catalog(root)
    assert set(cat.df["state"]) == {"complete", "crashed", "error"}
    cat.scan()
    cat.close()
    again = dl.Catalog(root)  # from the index
    assert list(again.df["path"]) == sorted([*zoo.paths.values(), *DAMAGED])
    again.close()
    assert _snapshot(root) == before
    assert _index_files(root) == [INDEX_NAME]


# ---------------------------------------------------------------------- 5. the index


def _small(i: int) -> xr.Dataset:
    return _run(f"r{i}", [dl.Channel("a", unit="V"), dl.Channel("b", unit="V")], 100.0, 20, seed=10 + i,
                start=f"2024-07-0{1 + i}T00:00")


def _keep_stat(path: Path, write: Callable[[], object]) -> None:
    """Change ``path``'s bytes with ``write`` and put its size and mtime back as they were."""
    st = path.stat()
    write()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)


def _touch(path: Path) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def test_a_rescan_reads_only_files_whose_size_or_time_changed(tmp_path: Path) -> None:
    for i in range(3):
        dl.save(_small(i), tmp_path / f"r{i}.nc")
    dl.save(_small(3), tmp_path / "r3.csv")
    cat = dl.Catalog(tmp_path)
    assert list(cat.df["state"]) == ["complete"] * 4
    first = cat.df.copy()
    nc = tmp_path / "r0.nc"
    size = nc.stat().st_size
    _keep_stat(nc, lambda: nc.write_bytes(np.random.default_rng(0).bytes(size)))  # garbage now
    side = tmp_path / f"r3.csv{SIDECAR}"
    _keep_stat(side, lambda: side.write_bytes(side.read_bytes().replace(b'"samples"', b'"Samples"')))
    pd.testing.assert_frame_equal(cat.scan().df, first)  # not read again: the old rows stand
    reopened = dl.Catalog(tmp_path)  # a new catalog takes them from the index too
    pd.testing.assert_frame_equal(reopened.df, first)
    reopened.close()
    _touch(nc)
    got = _row(cat.scan(), "r0.nc")
    assert (got["state"], got["samples"]) == ("error", 0)
    assert "r0.nc" in got["error"]
    assert _row(cat, "r3.csv")["state"] == "complete"
    _touch(side)  # a CSV's sidecar is part of its row
    assert _row(cat.scan(), "r3.csv")["state"] == "error"
    pd.testing.assert_frame_equal(cat.df.iloc[1:3], first.iloc[1:3])  # the others as they were
    (tmp_path / "r1.nc").unlink()
    (tmp_path / "sub").mkdir()
    dl.save(_small(4), tmp_path / "sub" / "r4.nc")
    assert list(cat.scan().df["path"]) == ["r0.nc", "r2.nc", "r3.csv", "sub/r4.nc"]
    assert _index_rows(tmp_path / INDEX_NAME) == ["r0.nc", "r2.nc", "r3.csv", "sub/r4.nc"]
    cat.close()


def _catalog_folder(root: Path) -> pd.DataFrame:
    for i in range(3):
        dl.save(_small(i), root / f"r{i}.nc")
    (root / "bad.nc").write_bytes(b"not a run")
    cat = dl.Catalog(root)
    df = cat.df
    cat.close()
    assert len(df) == 4
    return df


@pytest.mark.parametrize("damage", ["garbage", "truncated", "header-only"])
def test_a_damaged_index_is_rebuilt(tmp_path: Path, damage: str) -> None:
    df = _catalog_folder(tmp_path)
    index = tmp_path / INDEX_NAME
    data = index.read_bytes()
    if damage == "garbage":
        index.write_bytes(np.random.default_rng(1).bytes(len(data)))
    elif damage == "truncated":
        index.write_bytes(data[: len(data) // 2 + 100])
    else:
        index.write_bytes(b"SQLite format 3\x00" + bytes(200))
    cat = dl.Catalog(tmp_path)
    assert cat.index_path == index
    pd.testing.assert_frame_equal(cat.df, df)
    assert _index_rows(index) == list(df["path"])
    dl.save(_small(5), tmp_path / "r5.nc")
    assert len(cat.scan().df) == 5
    assert _index_rows(index) == sorted([*df["path"], "r5.nc"])
    cat.close()
    assert _index_files(tmp_path) == [INDEX_NAME]


@pytest.mark.parametrize(("version", "table"), [
    (0, "CREATE TABLE files (name TEXT, size INTEGER)"),
    (0, "CREATE TABLE runs (path TEXT, size INTEGER)"),
    (99, "CREATE TABLE runs (path TEXT PRIMARY KEY, signature TEXT, record TEXT, extra BLOB)"),
], ids=["0-other-table", "0-old-runs", "99-newer"])
def test_an_index_of_another_schema_is_rebuilt(tmp_path: Path, version: int, table: str) -> None:
    df = _catalog_folder(tmp_path)
    index = tmp_path / INDEX_NAME
    index.unlink()
    db = sqlite3.connect(index)
    db.execute(table)
    db.execute(f"INSERT INTO {table.split()[2]} (path) VALUES ('r0.nc')" if "path" in table else
               "INSERT INTO files VALUES ('r0.nc', 1)")
    db.execute(f"PRAGMA user_version = {version}")
    db.commit()
    db.close()
    cat = dl.Catalog(tmp_path)
    assert cat.index_path == index
    pd.testing.assert_frame_equal(cat.df, df)
    assert _index_rows(index) == list(df["path"])
    db = sqlite3.connect(index)
    assert [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")] == ["runs"]
    db.close()
    cat.close()


SCAN_CHILD = """
import base64, pickle, sys, time
from pathlib import Path
import daqlab as dl
root, go = Path(sys.argv[1]), Path(sys.argv[2])
print("ready", flush=True)
deadline = time.monotonic() + 120
while not go.exists():  # both children start scanning when the test says go
    if time.monotonic() > deadline:
        sys.exit("never told to go")
    time.sleep(0.001)
cat = dl.Catalog(root)
print(base64.b64encode(pickle.dumps((str(cat.index_path), cat.df))).decode(), flush=True)
"""


def _many(root: Path, n: int = 200) -> list[str]:
    """``n`` small runs in subfolders: copies of NetCDF, CSV, wide CSV and seed-hdf5 files (and
    two damaged files); returns their paths."""
    templates = root.parent / "templates"
    templates.mkdir()
    root.mkdir()
    run = _small(0)
    kinds = {"nc": dl.save(run, templates / "t.nc"), "csv": dl.save(run, templates / "t.csv"),
             "wide.csv": dl.save(run, templates / "w.csv", format="csv-wide"),
             "h5": dl.save(run, templates / "t.h5", format="seed-hdf5")}
    plan = ["nc"] * 104 + ["csv"] * 43 + ["wide.csv"] * 43 + ["h5"] * 8
    rels = []
    for i, kind in enumerate(plan):
        rel = f"day{i % 7}/op{i % 3}/run{i:03d}.{kind}"
        dst = root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(kinds[kind], dst)
        if kind.endswith("csv"):
            side = kinds[kind].with_name(kinds[kind].name + SIDECAR)
            shutil.copyfile(side, dst.with_name(dst.name + SIDECAR))
        rels.append(rel)
    for rel in ("day0/broken.nc", "day1/garbage.tdms"):
        _garbage(root / rel, b"TDSm" if rel.endswith("tdms") else b"\x89HDF\r\n\x1a\n")
        rels.append(rel)
    assert len(rels) == n
    return sorted(rels)


def test_two_processes_scanning_at_once_get_the_whole_list_and_a_sound_index(tmp_path: Path) -> None:
    root, go = tmp_path / "runs", tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", SCAN_CHILD, str(root), str(go)], env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        rels = _many(root)  # while the children import daqlab
        for proc in procs:
            line = _read_line(proc, 120)
            assert line == "ready\n", (line, proc.communicate(timeout=30)[1])
        go.touch()
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            results.append(pickle.loads(base64.b64decode(out.strip())))
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
    (where, df), (where2, df2) = results
    assert where == where2 == str(root / INDEX_NAME)
    pd.testing.assert_frame_equal(df, df2)
    assert list(df["path"]) == rels
    assert df.loc[df["state"] == "error", "path"].tolist() == ["day0/broken.nc", "day1/garbage.tdms"]
    ok = df[df["state"] == "complete"]
    assert len(ok) == 198
    assert (ok["samples"] == 20).all() and (ok["n_channels"] == 2).all()  # noqa: PT018
    assert ok["format"].value_counts().to_dict() == {"netcdf": 104, "csv": 43, "csv-wide": 43, "seed-hdf5": 8}
    assert _index_rows(root / INDEX_NAME) == rels
    after = dl.Catalog(root)  # what they left is whole: the same rows, from the index alone
    pd.testing.assert_frame_equal(after.df, df)
    after.close()
    assert _index_files(root) == [INDEX_NAME]


def test_a_catalog_keeps_indexing_after_another_one_rebuilt_the_index(tmp_path: Path) -> None:
    """Two kernels meet an outdated index: the second to open it rebuilds it (a new file renamed
    over it) while the first is already open on the old one; the first must go on indexing."""
    dl.save(_small(0), tmp_path / "r0.nc")
    first = dl.Catalog(tmp_path)
    db = sqlite3.connect(tmp_path / INDEX_NAME)
    db.execute("PRAGMA user_version = 99")  # as another daqlab version leaves it
    db.commit()
    db.close()
    second = dl.Catalog(tmp_path)
    assert second.index_path == tmp_path / INDEX_NAME
    assert _index_rows(tmp_path / INDEX_NAME) == ["r0.nc"]  # rebuilt
    second.close()
    dl.save(_small(1), tmp_path / "r1.nc")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first.scan()
    assert list(first.df["path"]) == ["r0.nc", "r1.nc"]
    assert [str(w.message) for w in caught] == []
    assert _index_rows(tmp_path / INDEX_NAME) == ["r0.nc", "r1.nc"]
    first.close()


def test_a_file_whose_name_is_not_utf8_is_listed_and_indexed(tmp_path: Path) -> None:
    dl.save(_small(0), tmp_path / "plain.nc")
    odd = os.fsdecode(b"caf\xe9-\xff.nc")  # a Latin-1 name, as old shares and USB sticks have
    shutil.copyfile(tmp_path / "plain.nc", tmp_path / odd)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cat = dl.Catalog(tmp_path)  # the path column may show the name as it likes
    assert len(cat.df) == 2
    shown = str(cat.df.at[0, "path"])
    assert shown.startswith("caf")
    assert cat.df.at[1, "path"] == "plain.nc"
    assert [str(w.message) for w in caught] == []
    assert _row(cat, shown) == {**expected_row(tmp_path, odd, "netcdf"), "path": shown}
    xr.testing.assert_identical(cat.open(0), dl.open_run(tmp_path / odd))
    assert len(_index_rows(tmp_path / INDEX_NAME)) == 2
    cat.close()


# ---------------------------------------------------------------------- a session being recorded


class _Session:
    """A DataManager recording two Push sources (fed by the test) into ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.fast, self.slow = dl.sources.Push(["acc0", "acc1"], 1000.0), dl.sources.Push(["temp"], 10.0)
        self.dm = dl.DataManager({"fast": self.fast, "slow": self.slow}, name="rig", autosave_interval=None,
                                 output_dir=folder, flush_interval=0.02, handle_sigint=False)

    @contextlib.contextmanager
    def started(self) -> Iterator[str]:
        """The manager running; yields the session manifest's name (relative to the folder)."""
        self.dm.start()
        try:
            assert self.dm.session_path is not None
            yield self.dm.session_path.name
        finally:
            self.dm.stop()

    def feed(self, n_fast: int, n_slow: int) -> None:
        """Feed that many samples and wait until they are durable."""
        recs = self.dm.recorders
        want = {name: r.saved_upto - r.start_index for name, r in recs.items()}
        want["fast"] += n_fast
        want["slow"] += n_slow
        if n_fast:
            self.fast.feed(np.zeros((2, n_fast)))
        if n_slow:
            self.slow.feed(np.ones((1, n_slow)))
        wait_for(lambda: all(r.saved_upto - r.start_index >= want[k] for k, r in recs.items()),
                 timeout=30, what=f"durable samples {want}")


def test_a_session_row_follows_its_recordings_while_they_are_written(tmp_path: Path) -> None:
    session = _Session(tmp_path)
    with session.started() as rel:
        session.feed(100, 4)
        cat = dl.Catalog(tmp_path)
        assert _row(cat, rel)["samples"] == 104
        session.feed(50, 0)
        cat.scan()
        folders = cat.df[cat.df["format"] == "recording"]
        assert (list(folders["state"]), list(folders["samples"])) == (["recording"] * 2, [150, 4])
        assert _row(cat, rel)["samples"] == 154
    final = _row(cat.scan(), rel)
    assert final == expected_row(tmp_path, rel, "session", "complete")
    assert (final["samples"], final["groups"]) == (154, ["/fast", "/slow"])
    assert list(cat.df["format"]) == ["netcdf", "netcdf", "session"]
    cat.close()


def test_a_session_being_recorded_is_in_state_recording(tmp_path: Path) -> None:
    """Like its recordings' rows: "recording" while they are written, "complete" after."""
    session = _Session(tmp_path)
    with session.started() as rel:
        session.feed(10, 1)
        cat = dl.Catalog(tmp_path)
        during = _row(cat, rel)
    after = _row(cat.scan(), rel)
    cat.close()
    assert (during["samples"], after["samples"]) == (11, 11)
    assert (during["state"], after["state"]) == ("recording", "complete")


# ---------------------------------------------------------------------- 6. a folder daqlab may not write to

READONLY_CHILD = """
import base64, os, pickle, sys, warnings
import daqlab as dl
out = []
for root, cache in zip(sys.argv[1::2], sys.argv[2::2]):
    os.environ["XDG_CACHE_HOME"] = cache
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cat = dl.Catalog(root)
        cat.scan()
    out.append((None if cat.index_path is None else str(cat.index_path), cat.df, os.getuid(),
                [str(w.message) for w in caught]))
    cat.close()
print(base64.b64encode(pickle.dumps(out)).decode(), flush=True)
"""


def _chmod_tree(root: Path, folders: int, files: int) -> None:
    for dirpath, _, filenames in os.walk(root):
        os.chmod(dirpath, folders)
        for name in filenames:
            os.chmod(Path(dirpath) / name, files)


def _copy_runs(zoo: Zoo, root: Path, labels: tuple[str, ...]) -> None:
    root.mkdir()
    for label in labels:
        src = zoo.root / zoo.paths[label]
        dst = root / src.name
        if src.is_dir():
            shutil.copytree(src, dst)
        else:
            shutil.copy2(src, dst)
            if src.suffix == ".csv":
                shutil.copy2(src.with_name(src.name + SIDECAR), dst.with_name(dst.name + SIDECAR))


@dataclass
class ReadOnly:
    """Catalogs made by a user who may not write to the folders (nobody, when the tests run as
    root): ``scans`` holds (index_path, df, uid, warnings) of each case, ``expected`` the df of
    each folder scanned here with the index in memory, ``before``/``after`` their snapshots."""

    base: Path
    writable: Path
    locked: Path
    scans: dict[str, tuple[str | None, pd.DataFrame, int, list[str]]]
    expected: dict[str, pd.DataFrame]
    before: dict[str, dict[str, tuple[Any, ...]]]
    after: dict[str, dict[str, tuple[Any, ...]]]


def _snapshot_all(root: Path) -> dict[str, tuple[Any, ...]]:
    """:func:`_snapshot` with the index files too (a folder's old index must stay as it is)."""
    snap = _snapshot(root)
    for name in _index_files(root):
        st = (root / name).stat()
        digest = hashlib.sha256((root / name).read_bytes()).hexdigest()
        snap[name] = (st.st_size, st.st_mtime_ns, st.st_mode, digest)
    return snap


@pytest.fixture(scope="module")
def readonly(zoo: Zoo) -> Iterator[ReadOnly]:
    """Folder ``runs`` (runs of several kinds, recordings complete and crashed, a damaged file and
    one the user may not read) scanned with a writable cache folder and with none; folder
    ``archive``, which holds an index made before a run was added and it became read-only,
    scanned with a writable cache folder. All of it in one child process."""
    as_root = os.geteuid() == 0
    base = Path(tempfile.mkdtemp(prefix="daqlab-readonly-"))  # not under pytest's 0700 folders
    try:
        os.chmod(base, 0o755)
        runs, archive = base / "runs", base / "archive"
        _copy_runs(zoo, runs, ("netcdf", "netcdf-tree", "csv", "recording-closed", "recording-crashed"))
        shutil.copy2(zoo.root / "damaged" / "garbage.nc", runs / "garbage.nc")
        shutil.copy2(zoo.root / zoo.paths["netcdf"], runs / "secret.nc")
        _copy_runs(zoo, archive, ("netcdf", "csv"))
        dl.Catalog(archive).close()  # its owner listed it once...
        shutil.copy2(zoo.root / zoo.paths["netcdf-calibrated"], archive / "later.nc")  # ...then added a run
        for root in (runs, archive):
            _chmod_tree(root, 0o555, 0o444)
        os.chmod(runs / "secret.nc", 0o000)
        writable = base / "cache"  # the user's cache folder: it may write there
        writable.mkdir(mode=0o755)
        locked = base / "locked-cache"  # a cache folder it may not write to either
        locked.mkdir(mode=0o555)
        if as_root:
            os.chown(writable, NOBODY, NOBODY)
        before = {"runs": _snapshot_all(runs), "archive": _snapshot_all(archive)}
        expected = {name: dl.Catalog(root, index=":memory:").df for name, root in (("runs", runs),
                                                                                   ("archive", archive))}
        user: dict[str, Any] = {"user": NOBODY, "group": NOBODY, "extra_groups": []} if as_root else {}
        cases = {"runs": (runs, writable), "runs-no-cache": (runs, locked), "archive": (archive, writable)}
        args = [str(p) for pair in cases.values() for p in pair]
        proc = subprocess.run([sys.executable, "-c", READONLY_CHILD, *args], env={**ENV, "HOME": str(base)},
                              cwd=base, capture_output=True, text=True, timeout=120, check=False, **user)
        assert proc.returncode == 0, proc.stderr
        scans = dict(zip(cases, pickle.loads(base64.b64decode(proc.stdout.strip())), strict=True))
        assert {uid for _, _, uid, _ in scans.values()} == {NOBODY if as_root else os.getuid()}
        after = {"runs": _snapshot_all(runs), "archive": _snapshot_all(archive)}
        yield ReadOnly(base, writable, locked, scans, expected, before, after)
    finally:
        _chmod_tree(base, 0o755, 0o644)
        shutil.rmtree(base)


def test_a_folder_daqlab_may_not_write_to_is_listed_whole_with_its_index_in_the_cache(
        readonly: ReadOnly) -> None:
    expected = readonly.expected["runs"]
    assert list(expected["path"]) == ["closed.daqrec", "crashed.daqrec", "garbage.nc", "long.csv",
                                      "secret.nc", "single.nc", "tree.nc"]
    for case in ("runs", "runs-no-cache"):
        _, df, _, caught = readonly.scans[case]
        assert caught == [], case
        others = df["path"] != "secret.nc"  # the one file this user may not read: a row with its error
        pd.testing.assert_frame_equal(df[others], expected[expected["path"] != "secret.nc"])
        secret = df[~others].iloc[0]
        assert (secret["format"], secret["state"], secret["samples"]) == ("netcdf", "error", 0)
        assert "Permission denied" in secret["error"], secret["error"]
        assert secret["bytes"] == expected.loc[expected["path"] == "secret.nc", "bytes"].item()
        assert set(df["state"]) == {"complete", "crashed", "error"}
    cached, _, _, _ = readonly.scans["runs"]
    assert cached is not None
    assert Path(cached).parent == readonly.writable / "daqlab" / "catalogs"
    assert Path(cached).name.startswith("runs-")
    assert _index_rows(Path(cached)) == list(expected["path"])
    assert readonly.scans["runs-no-cache"][0] is None  # kept in memory
    assert list(readonly.locked.iterdir()) == []
    assert readonly.after["runs"] == readonly.before["runs"]  # nothing written in the folder
    assert _index_files(readonly.base / "runs") == []


def test_a_read_only_folder_holding_an_older_index_is_listed_without_a_warning(readonly: ReadOnly) -> None:
    index_path, df, _, caught = readonly.scans["archive"]
    expected = readonly.expected["archive"]
    assert list(expected["path"]) == ["later.nc", "long.csv", "single.nc"]
    pd.testing.assert_frame_equal(df, expected)
    assert readonly.after["archive"] == readonly.before["archive"]  # its old index untouched too
    assert caught == []
    assert index_path is not None
    assert Path(index_path).parent == readonly.writable / "daqlab" / "catalogs"
    assert _index_rows(Path(index_path)) == list(expected["path"])
