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
from daqlab.run import CHANNEL_COORDS, SCHEMA_VERSION, iso_utc, validate

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

# CF attributes daqlab puts on coordinates on disk and takes off again on open.
_COORD_ATTRS: dict[str, dict[str, str]] = {
    "time": {"standard_name": "time", "long_name": "time of sample (UTC)", "axis": "T"},
    "channel": {"long_name": "channel name", "cf_role": "timeseries_id"},
    "unit": {"long_name": "physical unit of the channel after calibration"},
    "range_min": {"long_name": "lower end of the valid physical range"},
    "range_max": {"long_name": "upper end of the valid physical range"},
    "cal_slope": {"long_name": "calibration slope: physical = cal_slope * raw + cal_offset"},
    "cal_offset": {"long_name": "calibration offset: physical = cal_slope * raw + cal_offset"},
    "cal_date": {"long_name": "calibration reference date (UTC)"},
}
_QUALITY_STANDARD_NAME = "status_flag"


def _time_units(times: np.ndarray[Any, Any]) -> tuple[str, str]:
    """Units and dtype that store ``times`` exactly in a CF-1.8 type.

    int64 is not a CF-1.8 type, so time is a float64 count of nanoseconds since
    the first sample: exact for every whole number below 2**53 ns (104 days).
    Longer runs use microseconds (exact to the microsecond for 285 years).
    """
    if times.size == 0:
        return "nanoseconds since 1970-01-01T00:00:00", "float64"
    t0 = times[0]
    span = int((times[-1] - t0).astype("timedelta64[ns]").astype(np.int64))
    ref = np.datetime_as_string(t0, unit="ns")
    if span < 2**53:
        return f"nanoseconds since {ref}", "float64"
    return f"microseconds since {ref}", "float64"


def _cf_dataset(run: xr.Dataset, compression: bool) -> tuple[xr.Dataset, dict[str, dict[str, Any]]]:
    """The run as written: CF attributes on every variable, and the encoding of each."""
    ds = to_disk(run)
    for name, attrs in _COORD_ATTRS.items():
        ds[name].attrs.update(attrs)
    ds["quality"].attrs["standard_name"] = _QUALITY_STANDARD_NAME
    n = ds.sizes["time"]
    units, dtype = _time_units(run["time"].values)
    enc: dict[str, dict[str, Any]] = {
        "time": {"units": units, "dtype": dtype, "calendar": "proleptic_gregorian",
                 "_FillValue": None},
        # microseconds: a calibration date is kept to the microsecond (Calibration rounds so)
        "cal_date": {"units": "microseconds since 1970-01-01T00:00:00", "dtype": "float64",
                     "calendar": "proleptic_gregorian"},
        # fixed-length char arrays: CF checkers choke on variable-length string coordinates
        "channel": {"dtype": "S1"},
        "unit": {"dtype": "S1"},
    }
    for name in ("cal_slope", "cal_offset"):
        enc[name] = {"_FillValue": None}
    for name in ("value", "quality", "raw"):
        if name not in ds.data_vars or n == 0:
            continue
        e: dict[str, Any] = {"chunksizes": (1, min(n, _CHUNK_SAMPLES))}
        # quality flags are mostly zeros: zlib makes them ~100x smaller at little cost
        if compression or name == "quality":
            e.update(zlib=True, complevel=1, shuffle=True)
        enc[name] = e
    return ds, enc


def _strip_cf(ds: xr.Dataset) -> xr.Dataset:
    """Take off the attributes :func:`_cf_dataset` added, so a round trip is identical."""
    for name, attrs in _COORD_ATTRS.items():
        if name in ds.variables:
            for k, v in attrs.items():
                if ds[name].attrs.get(k) == v:
                    del ds[name].attrs[k]
    if ds["quality"].attrs.get("standard_name") == _QUALITY_STANDARD_NAME:
        del ds["quality"].attrs["standard_name"]
    return ds


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
    """Write ``run`` as CF-1.8 NetCDF4 through h5netcdf, atomically, and check it."""
    validate(run, check_data=False)
    ds, encoding = _cf_dataset(run, compression)
    with atomic_path(path, overwrite=overwrite) as tmp:
        try:
            ds.to_netcdf(tmp, engine="h5netcdf", encoding=encoding)
        except (TypeError, ValueError) as exc:  # h5netcdf/xarray refusing a value
            raise FormatError(f"cannot write {path.name} as NetCDF: {exc}") from exc
        _verify(tmp, run)
    return path


def open_netcdf(path: Path, chunks: Any = None) -> xr.Dataset:
    """Open a daqlab NetCDF run (lazily with ``chunks``); refuse foreign and newer files."""
    try:
        ds = xr.open_dataset(path, engine="h5netcdf", chunks=chunks)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FormatError(f"{path} could not be read as NetCDF4/HDF5: {exc}") from exc
    try:
        run = _strip_cf(from_disk(ds, path))
        if chunks is None:
            run = run.load()
    except BaseException:
        ds.close()
        raise
    if chunks is None:
        ds.close()
    # per-channel coordinates are tiny: always in memory, names as Python str
    run = run.assign_coords({name: run[name].load() for name in (*CHANNEL_COORDS, "time")})
    for name in ("channel", "unit"):
        run[name] = run[name].astype(object)
    return validate(run, check_data=False)
