"""``save``, ``open_run`` and ``open_runs``: the format from the suffix, or from the contents."""

from __future__ import annotations

import glob
import os
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from daqlab.errors import FormatError, SchemaError, StorageError
from daqlab.io._csv import open_csv, save_csv, sniff_csv
from daqlab.io._netcdf import open_netcdf, save_netcdf
from daqlab.io._recorder import RECORDING_SUFFIX, is_recording, open_recording
from daqlab.io._seed import is_seed_file, open_seed, save_seed
from daqlab.run import channels_of, check_chunks, coords_in_memory

__all__ = ["FORMATS", "detect_format", "open_run", "open_runs", "save"]

FORMATS = ("netcdf", "csv", "csv-wide", "seed-hdf5")
"""Formats ``save`` writes and ``open_run`` reads."""

_SUFFIXES = {".nc": "netcdf", ".nc4": "netcdf", ".h5": "netcdf", ".hdf5": "netcdf", ".csv": "csv"}
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def format_for(path: Path, format: str | None) -> str:
    if format is not None:
        if format not in FORMATS:
            raise FormatError(f"format {format!r} is not supported; choose one of {list(FORMATS)}.")
        return format
    fmt = _SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise FormatError(
            f"cannot tell the format of {path.name!r} from its suffix; use one of "
            f"{sorted(_SUFFIXES)} or pass format= (one of {list(FORMATS)})."
        )
    return fmt


def save(
    run: xr.Dataset, path: str | os.PathLike[str], format: str | None = None,
    *, overwrite: bool = False, compression: bool = False,
) -> Path:
    """Save ``run`` to ``path``; returns the path written.

    ``format`` is one of :data:`FORMATS`, or taken from the suffix (``.nc``,
    ``.h5`` -> NetCDF4; ``.csv`` -> long CSV). Every format is written under a
    hidden temporary name, checked and renamed into place, so a failure never
    leaves a half-written file under ``path``; an existing file is kept unless
    ``overwrite=True``. ``compression`` applies to NetCDF (zlib + shuffle).
    """
    p = Path(path)
    fmt = format_for(p, format)
    if fmt == "netcdf":
        return save_netcdf(run, p, overwrite=overwrite, compression=compression)
    if fmt == "seed-hdf5":
        return save_seed(run, p, overwrite=overwrite)
    return save_csv(run, p, wide=fmt == "csv-wide", overwrite=overwrite)


def detect_format(path: str | os.PathLike[str]) -> str:
    """The format of a saved run by its contents: one of :data:`FORMATS` or ``"recording"``."""
    p = Path(path)
    if is_recording(p):
        return "recording"
    if not p.exists():
        raise StorageError(2, f"{p} does not exist; check the path (cwd is {Path.cwd()}).")
    if p.is_dir():
        raise FormatError(f"{p} is a folder but not a daqlab recording (no run.json in it).")
    try:
        with p.open("rb") as f:
            head = f.read(4096)
    except OSError as exc:
        raise StorageError(exc.errno or 5, f"cannot read {p}: {exc}") from exc
    if head.startswith(_HDF5_MAGIC):
        return "seed-hdf5" if is_seed_file(p) else "netcdf"
    fmt = sniff_csv(head)
    if fmt is not None:
        return fmt
    raise FormatError(
        f"{p} is not a run daqlab can read: it is neither NetCDF4/HDF5 nor one of daqlab's CSV "
        f"layouts (first bytes {head[:16]!r}). Supported: {list(FORMATS)} and recording folders."
    )


def open_run(path: str | os.PathLike[str], chunks: Any = None) -> xr.Dataset:
    """Open a saved run of any supported format, detected from its contents.

    ``chunks`` (as in xarray: ``{}`` for the file's own chunks, ``"auto"``, a number of
    samples, or e.g. ``{"time": 1_000_000}``) gives a lazy dask-backed run. A recording
    folder, or the final name of a recording whose process died before it finished, opens
    as the run recorded so far.
    """
    p = Path(path)
    chunks = check_chunks(chunks)
    if not p.exists():
        recording = p.with_suffix(RECORDING_SUFFIX)
        if is_recording(recording):  # the recorder was killed before it wrote the final file
            return open_recording(recording, chunks)
    fmt = detect_format(p)
    opener = {"recording": open_recording, "netcdf": open_netcdf, "seed-hdf5": open_seed}.get(
        fmt, open_csv)
    return coords_in_memory(opener(p, chunks))


def _expand(paths_or_glob: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> list[Path]:
    if isinstance(paths_or_glob, (str, os.PathLike)):
        text = os.fspath(paths_or_glob)
        if any(ch in text for ch in "*?["):
            return [Path(p) for p in sorted(glob.glob(text))]
        return [Path(text)]
    return [Path(p) for p in paths_or_glob]


def open_runs(
    paths_or_glob: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], chunks: Any = None
) -> xr.Dataset:
    """Several runs of the same channels as one lazy run along time.

    Files are ordered by their first timestamp; they must have the same
    channels (names, units, calibration), sample rate and calibration state, and
    must not overlap in time. The result has a new id, the first run's other
    attributes, and ``metadata["sources"]`` listing each file and its run id.
    """
    chunks = check_chunks(chunks)
    paths = _expand(paths_or_glob)
    if not paths:
        raise StorageError(2, f"no files match {paths_or_glob!r}.")
    runs = [open_run(p, chunks={} if chunks is None else chunks) for p in paths]
    def first_time(i: int) -> np.datetime64:
        t = runs[i]["time"].values
        return t[0] if t.size else np.datetime64(0, "ns")

    order = sorted(range(len(runs)), key=first_time)
    runs, paths = [runs[i] for i in order], [paths[i] for i in order]
    first = runs[0]
    problems = []
    for p, r in zip(paths[1:], runs[1:], strict=True):
        if channels_of(r) != channels_of(first):
            problems.append(f"{p.name}: channels {r.daq.channel_names} differ from "
                            f"{paths[0].name}'s {first.daq.channel_names} (names, units or calibration)")
        if r.attrs["sample_rate"] != first.attrs["sample_rate"]:
            problems.append(f"{p.name}: sample_rate {r.attrs['sample_rate']} != {first.attrs['sample_rate']}")
        if r.attrs["calibrated"] != first.attrs["calibrated"]:
            problems.append(f"{p.name}: calibrated={r.attrs['calibrated']} unlike {paths[0].name}")
    for (pa, a), (pb, b) in zip(zip(paths, runs, strict=True), zip(paths[1:], runs[1:], strict=True),
                                strict=False):
        if a.sizes["time"] and b.sizes["time"] and b["time"].values[0] < a["time"].values[-1]:
            problems.append(f"{pb.name} starts ({b['time'].values[0]}) before {pa.name} ends "
                            f"({a['time'].values[-1]}): the runs overlap in time")
    if problems:
        raise SchemaError(problems, what="set of runs")
    combined = xr.concat(runs, dim="time", data_vars="all", coords="minimal", compat="override",
                         combine_attrs="override", join="exact")
    attrs = dict(first.attrs)
    attrs["id"] = str(uuid.uuid4())
    attrs["metadata"] = {**first.attrs.get("metadata", {}),
                         "sources": [{"path": str(p), "id": r.attrs["id"]} for p, r in
                                     zip(paths, runs, strict=True)]}
    combined.attrs = attrs
    return combined
