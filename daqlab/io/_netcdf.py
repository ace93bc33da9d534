"""Runs as NetCDF4/HDF5 files, written and read through h5netcdf."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from daqlab._version import __version__
from daqlab.errors import FormatError, StorageError
from daqlab.io._atomic import atomic_path
from daqlab.run import SCHEMA_VERSION, iso_utc, validate

__all__ = ["from_disk", "open_netcdf", "save_netcdf", "to_disk"]

_SCHEMA_ATTR = "daqlab_schema_version"


def to_disk(run: xr.Dataset) -> xr.Dataset:
    """Encode what netCDF cannot hold (dict, bool attributes) and add provenance."""
    attrs = dict(run.attrs)
    attrs["metadata"] = json.dumps(attrs.get("metadata", {}), allow_nan=True)
    attrs["calibrated"] = np.int8(bool(attrs.get("calibrated", False)))
    attrs.setdefault("title", attrs.get("name") or "daqlab run")
    attrs["Conventions"] = "CF-1.8"
    attrs["daqlab_version"] = __version__
    attrs[_SCHEMA_ATTR] = np.int32(SCHEMA_VERSION)
    history = attrs.get("history", "")
    attrs["history"] = (history + "\n" if history else "") + f"{iso_utc()} written by daqlab {__version__}"
    return run.assign_attrs(attrs)


def from_disk(ds: xr.Dataset, source: Path) -> xr.Dataset:
    """Decode :func:`to_disk`'s encoding; refuse files from a newer schema."""
    attrs = dict(ds.attrs)
    version = attrs.pop(_SCHEMA_ATTR, None)
    if version is None:
        raise FormatError(
            f"{source} is a NetCDF file but not a daqlab run (no {_SCHEMA_ATTR} attribute)."
        )
    if int(version) > SCHEMA_VERSION:
        raise FormatError(
            f"{source} was written with run schema version {int(version)} by daqlab "
            f"{attrs.get('daqlab_version', '?')}; this daqlab ({__version__}) reads up to "
            f"version {SCHEMA_VERSION}. Upgrade daqlab to open it."
        )
    for k in ("Conventions", "daqlab_version", "title", "history"):
        attrs.pop(k, None)
    try:
        attrs["metadata"] = json.loads(attrs.get("metadata", "{}"))
    except json.JSONDecodeError as exc:
        raise FormatError(f"{source}: attribute 'metadata' is not valid JSON ({exc}).") from None
    attrs["calibrated"] = bool(int(attrs.get("calibrated", 0)))
    attrs["sample_rate"] = float(attrs.get("sample_rate", np.nan))
    for k in ("id", "name", "description", "created_at"):
        attrs[k] = str(attrs.get(k, ""))
    out = ds.copy(deep=False)
    out.attrs = attrs
    return out


_CHUNK_SAMPLES = 1 << 18  # per channel and HDF5 chunk: 2 MiB of float64


def _encoding(ds: xr.Dataset, compression: bool) -> dict[str, dict[str, Any]]:
    n = ds.sizes["time"]
    enc: dict[str, dict[str, Any]] = {}
    for name in ("value", "quality", "raw"):
        if name not in ds.data_vars or n == 0:
            continue
        e: dict[str, Any] = {"chunksizes": (1, min(n, _CHUNK_SAMPLES))}
        if compression:
            e.update(zlib=True, complevel=1, shuffle=True)
        enc[name] = e
    return enc


def _verify(tmp: Path, run: xr.Dataset) -> None:
    """Reopen what was written and compare shape, time span and the last samples."""
    with xr.open_dataset(tmp, engine="h5netcdf") as back:
        problems = []
        if dict(back.sizes) != dict(run.sizes):
            problems.append(f"sizes {dict(back.sizes)} != {dict(run.sizes)}")
        elif run.sizes["time"]:
            tail = slice(max(0, run.sizes["time"] - 1024), None)
            if not np.array_equal(back["time"].values[[0, -1]], run["time"].values[[0, -1]]):
                problems.append("time span differs")
            if not np.array_equal(back["value"][:, tail].values, run["value"][:, tail].values,
                                  equal_nan=True):
                problems.append("last samples differ")
    if problems:
        raise StorageError(5, f"check of the file written for {tmp.name} failed ({'; '.join(problems)}); "
                           "it was not renamed into place.")


def save_netcdf(
    run: xr.Dataset, path: Path, *, overwrite: bool = False, compression: bool = False
) -> Path:
    validate(run, check_data=False)
    ds = to_disk(run)
    with atomic_path(path, overwrite=overwrite) as tmp:
        ds.to_netcdf(tmp, engine="h5netcdf", encoding=_encoding(ds, compression))
        _verify(tmp, run)
    return path


def open_netcdf(path: Path, chunks: Any = None) -> xr.Dataset:
    try:
        ds = xr.open_dataset(path, engine="h5netcdf", chunks=chunks)
    except (OSError, ValueError) as exc:
        raise FormatError(f"{path} could not be read as NetCDF4/HDF5: {exc}") from exc
    run = from_disk(ds, path)
    if chunks is None:
        run = run.load()
        ds.close()
    for name in ("channel", "unit"):
        run[name] = run[name].astype(object)
    return validate(run, check_data=False)
