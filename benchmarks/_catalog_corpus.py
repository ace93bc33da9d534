"""A folder of many small runs in every format a catalog lists, for ``benchmarks/catalog.py``.

:func:`make_corpus` writes ``n`` runs under ``root``, nested ``project/day/operator/``, with
varied metadata (operator, sample id, batch): mostly daqlab NetCDF single runs, then NetCDF
trees, long and wide CSV, seed-hdf5, recording folders (closed, and crashed: their process
ended without closing them), TDMS, EDF+ and WAV written with their own libraries, a few
damaged files, and a few files that are not runs; about :data:`RUNS_PER_FOLDER` runs a
folder. Each file holds a few channels x a few hundred samples; the same ``seed`` gives the
same files (bar times of writing, mtimes and the recordings' ids).

Saving a small NetCDF run with ``daqlab.save`` costs ~0.15 s (a tree ~1 s), almost all of it
xarray and h5netcdf overhead: 2,000 of them would take minutes. So a few template runs are
saved with ``daqlab.save`` in each daqlab format, and each file is a copy of one whose run
attributes (id, name, description, created_at, metadata) are then rewritten: in place with
h5py for NetCDF and seed-hdf5 (as ``daqlab.save`` stores them), in the sidecar for CSV. The
first file of each such kind is opened again to check it reads back with its own attributes.
Recordings, TDMS, EDF+ and WAV are written through their own writers.
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
import shutil
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import xarray as xr

import daqlab as dl
from daqlab.io import describe
from daqlab.tree import make_tree

__all__ = ["DAQLAB_MIX", "MIXED", "make_corpus"]

# share of the runs of each kind (what is left over goes to "netcdf")
MIXED: dict[str, float] = {
    "netcdf": 0.0, "tree": 0.04, "csv": 0.07, "csv-wide": 0.06, "seed-hdf5": 0.05,
    "recording-closed": 0.005, "recording-crashed": 0.005, "tdms": 0.02, "edf": 0.02, "wav": 0.02,
    "damaged": 0.002,
}
DAQLAB_MIX: dict[str, float] = {"netcdf": 0.0, "csv": 0.1, "csv-wide": 0.1}
"""Only daqlab's own NetCDF and CSV files (the target "first index >= 200 runs/s" is for these)."""

RUNS_PER_FOLDER = 8
OPERATORS = ("ann", "bob", "chen", "dana", "emil", "fatou")
PROJECTS = ("fatigue", "thermal", "acoustics", "eeg-pilot")
_EXT = {"netcdf": ".nc", "tree": ".nc", "csv": ".csv", "csv-wide": ".csv", "seed-hdf5": ".h5",
        "recording-closed": ".nc", "recording-crashed": ".nc", "tdms": ".tdms", "edf": ".edf",
        "wav": ".wav", "damaged": ".nc"}
SIDECAR = ".daqlab.json"  # beside NAME.csv: NAME.csv.daqlab.json


def _counts(n: int, mix: dict[str, float]) -> dict[str, int]:
    counts = {k: max(1, round(n * share)) if share else 0 for k, share in mix.items()}
    counts["netcdf"] = n - sum(v for k, v in counts.items() if k != "netcdf")
    if counts["netcdf"] < 1:
        raise ValueError(f"n={n} is too small for this mix of kinds; give n >= {n - counts['netcdf'] + 1}")
    return counts


def _templates(rng: np.random.Generator) -> list[xr.Dataset]:
    """Single runs of a few shapes: channels, rates, units, starts and calibration differ."""
    shapes = ((2, 100.0, 200, "V"), (4, 1000.0, 400, "V"), (8, 250.0, 300, "mV"), (3, 10.0, 120, "degC"),
              (6, 2000.0, 500, "m/s^2"), (4, 50.0, 250, "bar"))
    runs = []
    for i, (c, rate, n, unit) in enumerate(shapes):
        values = np.round(rng.normal(0, 3000, size=(c, n))) * (10 / 32768)
        values[0, rng.integers(0, n, 3)] = np.nan  # a few bad samples: non-zero quality shares
        channels = [dl.Channel(f"ch{k}", unit=unit) for k in range(c)]
        runs.append(dl.make_run(values, channels, sample_rate=rate, start=f"2026-0{1 + i}-1{i}T09:00",
                                name="template", calibrated=bool(i % 2)))
    return runs


def _tree_template(rng: np.random.Generator) -> xr.DataTree:
    fast = dl.make_run(rng.normal(size=(4, 400)), [dl.Channel(f"acc{k}", unit="m/s^2") for k in range(4)],
                       sample_rate=1000.0, start="2026-03-02T10:00", name="fast")
    slow = dl.make_run(rng.normal(20, 1, size=(2, 40)), [dl.Channel("t_in", unit="degC"),
                                                        dl.Channel("t_out", unit="degC")],
                       sample_rate=100.0, start="2026-03-02T10:00", name="slow")
    return make_tree({"fast": fast, "slow": slow}, name="rig")


def _attrs(rng: np.random.Generator, i: int, kind: str, operator: str, project: str) -> dict[str, Any]:
    """The run attributes of file ``i``: what a catalog shows and searches."""
    minutes = dt.timedelta(minutes=int(rng.integers(0, 500_000)))
    created = dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + minutes
    meta: dict[str, Any] = {"operator": operator, "sample": f"S-{int(rng.integers(0, 5000)):04d}",
                            "batch": int(rng.integers(1, 40)), "project": project}
    if i % 7 == 0:
        meta["note"] = "repeat after recalibration" if i % 2 else "baseline"
    return {"id": str(uuid.UUID(int=int(rng.integers(0, 2**63)) << 64 | int(rng.integers(0, 2**63)))),
            "name": f"{project}-{kind}-{i:05d}", "description": f"{kind} run {i} by {operator}",
            "created_at": created.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "metadata": meta}


def _text(value: str) -> np.ndarray[Any, Any]:
    data = value.encode("utf-8")
    return np.array(data, dtype=h5py.string_dtype("utf-8", max(len(data), 1)))


def _patched_netcdf(template: bytes, path: Path, attrs: dict[str, Any]) -> None:
    """A copy of a daqlab NetCDF file whose root run attributes are ``attrs`` (text attributes
    rewritten as daqlab.save writes them; ``title`` follows the name, as daqlab adds it)."""
    path.write_bytes(template)
    with h5py.File(path, "r+") as f:
        for key in ("id", "name", "description", "created_at"):
            f.attrs.create(key, _text(attrs[key]))
        f.attrs.create("title", _text(attrs["name"]))
        f.attrs.create("metadata", _text(json.dumps(attrs["metadata"])))
        # (the stored summary holds only counts and the time span: it stays true of the copy)


def _patched_seed(template: bytes, path: Path, attrs: dict[str, Any]) -> None:
    """A copy of a seed-hdf5 file whose run attributes (group ``metadata``) are ``attrs``."""
    path.write_bytes(template)
    with h5py.File(path, "r+") as f:
        meta = f["metadata"].attrs
        for key in ("id", "name", "description", "created_at"):
            meta[key] = attrs[key]
        meta["metadata"] = json.dumps(attrs["metadata"])


def _patched_csv(template: tuple[bytes, dict[str, Any]], path: Path, attrs: dict[str, Any]) -> None:
    """A copy of a daqlab CSV file and its sidecar, whose run attributes are ``attrs`` (the
    sidecar's checksum is of the CSV's bytes, which stay as they are)."""
    table, sidecar = template
    path.write_bytes(table)
    out = {**sidecar, "attrs": {**sidecar["attrs"], **attrs}}
    Path(f"{path}{SIDECAR}").write_text(json.dumps(out))


def _write_tdms(path: Path, rng: np.random.Generator, attrs: dict[str, Any]) -> None:
    nptdms: Any = importlib.import_module("nptdms")  # untyped: no stubs

    start = np.datetime64(attrs["created_at"][:-1], "ns")
    wf = {"wf_start_time": start, "wf_increment": 0.001, "wf_start_offset": 0.0, "unit_string": "V"}
    root = {"name": attrs["name"], "description": attrs["description"],
            "author": attrs["metadata"]["operator"], "sample": attrs["metadata"]["sample"]}
    with nptdms.TdmsWriter(str(path)) as w:
        channels = [nptdms.ChannelObject("data", f"ai{k}", rng.normal(size=300), wf) for k in range(3)]
        w.write_segment([nptdms.RootObject(root), nptdms.GroupObject("data", {}), *channels])


def _write_edf(path: Path, rng: np.random.Generator, attrs: dict[str, Any]) -> None:
    import pyedflib

    rate, seconds = 64, 5
    w = pyedflib.EdfWriter(str(path), 3, file_type=pyedflib.FILETYPE_EDFPLUS)
    try:
        w.setSignalHeaders([{"label": f"EEG {k}", "dimension": "uV", "sample_frequency": rate,
                             "physical_min": -200.0, "physical_max": 200.0, "digital_min": -32768,
                             "digital_max": 32767, "transducer": "", "prefilter": ""} for k in range(3)])
        w.setStartdatetime(dt.datetime.fromisoformat(attrs["created_at"][:19]))
        w.setPatientCode(attrs["metadata"]["sample"])
        w.setTechnician(attrs["metadata"]["operator"])
        w.writeSamples([rng.integers(-3000, 3000, rate * seconds).astype(np.int32) for _ in range(3)],
                       digital=True)
    finally:
        w.close()


def _write_wav(path: Path, rng: np.random.Generator) -> None:
    import soundfile as sf  # type: ignore[import-untyped]

    sf.write(str(path), rng.uniform(-0.5, 0.5, size=(400, 2)), 8000, subtype="PCM_16")


def _check(path: Path, attrs: dict[str, Any]) -> None:
    """Fail loudly if a patched copy does not read back as a run with ``attrs`` (a format that
    changed under this generator)."""
    got = (dl.open_tree(path) if path.name.startswith("tree") else dl.open_run(path)).attrs
    record = describe(path) or {}
    listed = {"id": record.get("id"), "name": record.get("name"), "metadata": record.get("metadata")}
    for what, seen in (("reads back", {k: got.get(k) for k in attrs}), ("is described", listed)):
        if {k: v for k, v in seen.items() if k in listed} != {k: attrs[k] for k in listed}:
            raise AssertionError(f"{path} {what} with attributes {seen}, not {attrs}: "
                                 "benchmarks/_catalog_corpus.py needs updating to the format")


_RECORD = """
import os, sys
import numpy as np
import daqlab as dl
jobs = {jobs!r}
for path, name, metadata, crash in jobs:
    buf = dl.RingBuffer(3, 1000, 200.0, start="2026-04-01T08:00", name=name, metadata=metadata)
    # an idle Recorder whose flush interval has passed polls without sleeping: the ones left
    # open get a long interval (flush_through still writes at once), or they would hog the CPU
    rec = dl.Recorder(buf, path, flush_interval=3600.0 if crash else 0.01)
    rec.start()
    for k in range(3):  # three durable segments
        buf.push(np.full((3, 100), float(k)))
        rec.flush_through(buf.written)
    if not crash:
        rec.close(consolidate=False)  # a closed recording folder, left unconsolidated
sys.stdout.flush()
os._exit(0)  # ends the process with the other recorders still open: to a reader, they crashed
"""


def _record(jobs: list[tuple[str, str, dict[str, Any], bool]]) -> None:
    """Write recording folders in a child process that ends without closing the crashed ones
    (nothing is killed: the process exits, and the kernel drops their writer locks)."""
    if jobs:
        subprocess.run([sys.executable, "-c", _RECORD.format(jobs=jobs)], check=True, timeout=300)


def make_corpus(root: str | Path, n: int, seed: int = 0, *, mix: dict[str, float] | None = None
                ) -> dict[str, int]:
    """Write ``n`` small runs under ``root`` (created; must be empty or absent); return how many
    of each kind, plus ``"other"``: files that are not runs (notes), which a catalog skips.

    ``mix``: share of each kind (:data:`MIXED`, the default, or :data:`DAQLAB_MIX`); the
    remainder is daqlab NetCDF single runs. Damaged files count as runs (a catalog lists them
    as rows with their error).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if any(root.iterdir()):
        raise ValueError(f"make_corpus: {root} is not empty; give an empty or new folder")
    rng = np.random.default_rng(seed)
    counts = _counts(n, MIXED if mix is None else mix)
    kinds = np.array([k for k, c in counts.items() for _ in range(c)])
    rng.shuffle(kinds)

    templates = _templates(rng)
    scratch = root / ".templates"
    scratch.mkdir()
    made: dict[str, list[Any]] = {kind: [] for kind in ("netcdf", "csv", "csv-wide", "seed-hdf5")}
    for j, run in enumerate(templates):
        for kind in made:
            if counts.get(kind) or (kind == "netcdf" and counts.get("damaged")):
                p = dl.save(run, scratch / f"t{j}-{kind}{_EXT[kind]}", kind)
                side = Path(f"{p}{SIDECAR}")
                made[kind].append((p.read_bytes(), json.loads(side.read_text())) if side.exists()
                                  else p.read_bytes())
    tree_bytes = dl.save(_tree_template(rng), scratch / "tree.nc").read_bytes() if counts.get("tree") else b""
    shutil.rmtree(scratch)

    # a session folder project/day/operator holds RUNS_PER_FOLDER runs on average
    sessions = [(PROJECTS[int(rng.integers(0, len(PROJECTS)))],
                 f"2026-{int(rng.integers(1, 13)):02d}-{int(rng.integers(1, 29)):02d}",
                 OPERATORS[int(rng.integers(0, len(OPERATORS)))])
                for _ in range(max(1, n // RUNS_PER_FOLDER))]
    folders: set[Path] = set()
    first: dict[str, tuple[Path, dict[str, Any]]] = {}
    jobs: list[tuple[str, str, dict[str, Any], bool]] = []
    for i, kind in enumerate(kinds.tolist()):
        project, day, operator = sessions[int(rng.integers(0, len(sessions)))]
        folder = root / project / day / operator
        if folder not in folders:
            folder.mkdir(parents=True, exist_ok=True)
            folders.add(folder)
        path = folder / f"{kind}_{i:05d}{_EXT[kind]}"
        attrs = _attrs(rng, i, kind, operator, project)
        t = i % len(templates)
        first.setdefault(kind, (path, attrs))
        if kind == "netcdf":
            _patched_netcdf(made["netcdf"][t], path, attrs)
        elif kind == "tree":
            _patched_netcdf(tree_bytes, path, attrs)
        elif kind in ("csv", "csv-wide"):
            _patched_csv(made[kind][t], path, attrs)
        elif kind == "seed-hdf5":
            _patched_seed(made[kind][t], path, attrs)
        elif kind.startswith("recording"):
            jobs.append((str(path), attrs["name"], attrs["metadata"], kind == "recording-crashed"))
        elif kind == "tdms":
            _write_tdms(path, rng, attrs)
        elif kind == "edf":
            _write_edf(path, rng, attrs)
        elif kind == "wav":
            _write_wav(path, rng)
        elif kind == "damaged":
            whole = made["netcdf"][t]
            path.write_bytes(whole[: len(whole) // 3])  # cut short, as by a full disk
    _record(jobs)
    for kind in ("netcdf", "tree", "csv", "csv-wide", "seed-hdf5"):
        if kind in first:
            _check(*first[kind])
    projects = sorted({f.relative_to(root).parts[0] for f in folders})
    for name in projects:
        (root / name / "notes.txt").write_text(f"lab notes for {name}\n")
    out = dict(Counter(kinds.tolist()))
    out["other"] = len(projects)
    return out


if __name__ == "__main__":  # python benchmarks/_catalog_corpus.py DIR N: make one, say what and how fast
    import time

    t0 = time.perf_counter()
    made = make_corpus(sys.argv[1], int(sys.argv[2]))
    print(made, f"{time.perf_counter() - t0:.1f} s")
