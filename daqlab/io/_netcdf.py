"""Runs as NetCDF4/HDF5 files, written and read through h5netcdf."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import xarray as xr
from numpy.typing import NDArray

from daqlab._version import __version__
from daqlab.errors import FormatError, StorageError
from daqlab.io._atomic import atomic_path
from daqlab.run import SCHEMA_VERSION, coords_in_memory, iso_utc, validate

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


_TIME_UNITS = re.compile(r"(nanoseconds|microseconds) since (\S+)")


def _encode_time(times: NDArray[np.datetime64]) -> tuple[NDArray[np.float64], str]:
    """``times`` as float64 counts since the first sample, exactly, and their CF units.

    int64 is not a CF-1.8 type, so time is a float64 count of nanoseconds since
    the first sample: exact for every whole number below 2**53 ns (104 days).
    Longer runs use microseconds (exact to the microsecond for 285 years).
    """
    t = times.view(np.int64)
    if t.size == 0:
        return np.empty(0), "nanoseconds since 1970-01-01T00:00:00"
    ref = np.datetime_as_string(times[0], unit="ns")
    offsets = t - t[0]
    if int(offsets[-1]) < 2**53:
        return offsets.astype(np.float64), f"nanoseconds since {ref}"
    return np.rint(offsets / 1000.0), f"microseconds since {ref}"


def _decode_time(values: NDArray[Any], units: str, calendar: str) -> NDArray[np.datetime64]:
    """Inverse of :func:`_encode_time`; other CF units go through xarray's decoder."""
    m = _TIME_UNITS.fullmatch(units.strip())
    if m is None:
        decoded = np.asarray(xr.coding.times.decode_cf_datetime(values, units, calendar))
        return decoded.astype("datetime64[ns]")
    t0 = np.datetime64(m.group(2), "ns").view(np.int64)
    counts = np.rint(values).astype(np.int64)
    if m.group(1) == "microseconds":
        counts *= 1000
    out: NDArray[np.datetime64] = (t0 + counts).view("datetime64[ns]")
    return out


def _cf_dataset(run: xr.Dataset, compression: bool) -> tuple[xr.Dataset, dict[str, dict[str, Any]]]:
    """The run as written: CF attributes on every variable, and the encoding of each."""
    ds = to_disk(coords_in_memory(run))
    for name, attrs in _COORD_ATTRS.items():
        ds[name].attrs.update(attrs)
    ds["quality"].attrs["standard_name"] = _QUALITY_STANDARD_NAME
    n = ds.sizes["time"]
    # time encoded here in one pass (xarray's datetime encoder makes several)
    counts, units = _encode_time(run["time"].values)
    ds = ds.assign_coords(time=("time", counts, {**ds["time"].attrs, "units": units,
                                                 "calendar": "proleptic_gregorian"}))
    enc: dict[str, dict[str, Any]] = {
        "time": {"dtype": "float64", "_FillValue": None},
        # microseconds: a calibration date is kept to the microsecond (Calibration rounds so)
        "cal_date": {"units": "microseconds since 1970-01-01T00:00:00", "dtype": "float64",
                     "calendar": "proleptic_gregorian"},
        # fixed-length char arrays: CF checkers choke on variable-length string coordinates
        "channel": {"dtype": "S1"},
        "unit": {"dtype": "S1"},
    }
    # no _FillValue: NaN values stay NaN on their own, and reading skips a masking pass
    for name in ("cal_slope", "cal_offset", "value", "raw"):
        if name in ds.variables:
            enc[name] = {"_FillValue": None}
    for name in ("value", "quality", "raw"):
        if name not in ds.data_vars or n == 0:
            continue
        e: dict[str, Any] = {**enc.get(name, {}), "chunksizes": (1, min(n, _CHUNK_SAMPLES))}
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
    """Reopen what was written (plain h5py: cheap) and compare shape, time span and (for a run in
    memory) the last samples."""
    n = run.sizes["time"]
    problems = []
    try:
        with h5py.File(tmp, "r") as f:
            shape = f["value"].shape
            if shape != (run.sizes["channel"], n):
                problems.append(f"value has shape {shape}, expected {(run.sizes['channel'], n)}")
            elif n:
                t = f["time"]
                ends = _decode_time(np.array([t[0], t[-1]]), _text(t.attrs["units"]),
                                    _text(t.attrs.get("calendar", b"standard")))
                if not np.array_equal(ends, run["time"].values[[0, -1]]):
                    problems.append("time span differs")
                tail = slice(max(0, n - 1024), n)
                # a lazy run is not computed twice (a pipeline's last samples may need all of it)
                lazy = run["value"].chunks is not None
                if not lazy and not np.array_equal(f["value"][:, tail], run["value"][:, tail].values,
                                                   equal_nan=True):
                    problems.append("last samples differ")
    except (OSError, KeyError) as exc:
        problems.append(f"unreadable: {exc}")
    if problems:
        raise StorageError(5, f"check of the file written for {tmp.name} failed ({'; '.join(problems)}); "
                           "it was not renamed into place.")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def save_netcdf(
    run: xr.Dataset, path: Path, *, overwrite: bool = False, compression: bool = False
) -> Path:
    """Write ``run`` as CF-1.8 NetCDF4 through h5netcdf, atomically, and check it."""
    validate(run, check_data=False)
    ds, encoding = _cf_dataset(run, compression)
    nbytes = sum(v.size * v.dtype.itemsize for v in ds.variables.values())
    with atomic_path(path, overwrite=overwrite, expected_bytes=nbytes) as tmp:
        try:
            ds.to_netcdf(tmp, engine="h5netcdf", encoding=encoding)
        except (TypeError, ValueError) as exc:  # h5netcdf/xarray refusing a value
            raise FormatError(f"cannot write {path.name} as NetCDF: {exc}") from exc
        _verify(tmp, run)
    return path


def open_netcdf(path: Path, chunks: Any = None) -> xr.Dataset:
    """Open a daqlab NetCDF run (lazily with ``chunks``); refuse foreign and newer files."""
    try:
        # chunks that cut the file's own ones: open in those, then rechunk (xarray warns otherwise)
        given = chunks if not isinstance(chunks, dict) or not chunks else {}
        ds = xr.open_dataset(path, engine="h5netcdf", chunks=given, decode_times=False)
        if given is not chunks:
            ds = ds.chunk(chunks)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FormatError(f"{path} could not be read as NetCDF4/HDF5: {exc}") from exc
    try:
        run = _strip_cf(_decode_times(from_disk(ds, path)))
        if chunks is None:
            run = _load(run, path)
    except BaseException:
        ds.close()
        raise
    if chunks is None:
        ds.close()
    run = coords_in_memory(run)
    for name in ("channel", "unit"):
        run[name] = run[name].astype(object)
    return validate(run, check_data=False)


def _decode_times(ds: xr.Dataset) -> xr.Dataset:
    """Decode ``time`` and ``cal_date`` (opened undecoded: our own decoder is one pass)."""
    time = ds["time"]
    attrs = dict(time.attrs)
    units, calendar = attrs.pop("units", None), attrs.pop("calendar", "standard")
    if units is None:
        raise FormatError("coordinate 'time' has no units; it is not a daqlab time axis.")
    ds = ds.assign_coords(time=("time", _decode_time(np.asarray(time.values), units, calendar), attrs))
    cal = ds["cal_date"]
    cal_attrs = dict(cal.attrs)
    cal_units = cal_attrs.pop("units", "microseconds since 1970-01-01T00:00:00")
    cal_calendar = cal_attrs.pop("calendar", "standard")
    raw = np.asarray(cal.values, dtype=np.float64)
    dates = np.full(raw.shape, np.datetime64("NaT", "ns"))
    ok = np.isfinite(raw)
    dates[ok] = _decode_time(raw[ok], cal_units, cal_calendar)
    return ds.assign_coords(cal_date=("channel", dates, cal_attrs))


def _load(run: xr.Dataset, path: Path) -> xr.Dataset:
    """Load everything; the large variables straight through h5py (xarray's lazy
    indexing path reads them at about a third of the speed)."""
    big = [n for n in ("value", "quality", "raw") if n in run.data_vars and not run[n].attrs.get(
        "_FillValue") and "_FillValue" not in run[n].encoding]
    with h5py.File(path, "r") as f:
        arrays = {n: np.asarray(f[n][...]) for n in big if f[n].shape == run[n].shape}
    for n, arr in arrays.items():
        run[n] = (run[n].dims, arr, run[n].attrs)
    return run.load()
