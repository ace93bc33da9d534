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


_ENCODING_ATTR = "daqlab_attrs"
"""JSON note of how attributes were encoded, so that opening restores them exactly."""


def to_disk(run: xr.Dataset) -> xr.Dataset:
    """Encode what netCDF cannot hold (bool, dict, None attributes) and add provenance.

    Every attribute comes back as it was through :func:`from_disk`; the
    attributes CF wants (``title``, ``history``, ``Conventions``) are added and
    removed again unless the run had its own.
    """
    note: dict[str, Any] = {"bool": [], "json": [], "added": [], "history_len": None}
    attrs: dict[str, Any] = {}
    for k, v in run.attrs.items():
        if isinstance(v, (bool, np.bool_)):
            attrs[k] = np.int8(v)
            note["bool"].append(k)
        elif v is None or isinstance(v, (dict, list, tuple)):
            attrs[k] = json.dumps(v, allow_nan=True)
            note["json"].append(k)
        else:
            attrs[k] = v
    line = f"{iso_utc()} written by daqlab {__version__}"
    if "history" in attrs:
        note["history_len"] = len(str(attrs["history"]))
        attrs["history"] = f"{attrs['history']}\n{line}"
    else:
        attrs["history"] = line
        note["added"].append("history")
    for k, default in (("title", run.attrs.get("name") or "daqlab run"), ("Conventions", "CF-1.8")):
        if k not in attrs:
            attrs[k] = default
            note["added"].append(k)
    attrs["daqlab_version"] = __version__
    attrs[_SCHEMA_ATTR] = np.int32(SCHEMA_VERSION)
    attrs[_ENCODING_ATTR] = json.dumps(note)
    out = run.copy(deep=False)
    out.attrs = attrs
    return out


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
    attrs.pop("daqlab_version", None)
    try:
        note = json.loads(attrs.pop(_ENCODING_ATTR, "{}"))
    except json.JSONDecodeError as exc:
        raise FormatError(f"{source}: attribute {_ENCODING_ATTR!r} is not valid JSON ({exc}).") from None
    for k in note.get("json", []):
        try:
            attrs[k] = json.loads(attrs[k])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise FormatError(
                f"{source}: attribute {k!r} is not valid JSON ({exc}); the file was damaged or "
                "edited by another tool."
            ) from None
    for k in note.get("bool", []):
        attrs[k] = bool(int(attrs[k]))
    for k in note.get("added", []):
        attrs.pop(k, None)
    if note.get("history_len") is not None and "history" in attrs:
        attrs["history"] = str(attrs["history"])[: int(note["history_len"])]
    for k, v in list(attrs.items()):
        if isinstance(v, np.generic):
            attrs[k] = v.item()
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
