"""Runs as CF-1.8 NetCDF4/HDF5 files: the writer (through h5netcdf, checked by reading back)
and the reader, which takes the fast h5py path (:mod:`daqlab.io._h5read`) for files as daqlab
writes them and xarray's h5netcdf reader for anything else. Time coding: :mod:`daqlab.io._cftime`.
"""

from __future__ import annotations

import errno
import warnings
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import xarray as xr
from h5netcdf.utils import CompatibilityError

from daqlab._version import __version__
from daqlab.errors import ConfigurationError, DaqlabError, FormatError, SchemaError, StorageError
from daqlab.io._atomic import atomic_path
from daqlab.io._cftime import decode_time, decode_times, encode_time
from daqlab.io._codec import dumps, from_hdf5_attrs, loads, note_types, plain, to_hdf5_attrs
from daqlab.io._h5read import H5Variable, close_all, read_plain, refuse_non_netcdf4, through_h5py
from daqlab.io._records import SCHEMA_ATTR, check_schema_version
from daqlab.io._summary import SUMMARY_ATTR, write_summaries
from daqlab.model import Quality
from daqlab.run import (
    SCHEMA_VERSION,
    check_chunks,
    chunk_samples,
    coords_in_memory,
    iso_utc,
    validate,
)

__all__ = ["ENCODING_ATTR", "decode_disk_attrs", "from_disk", "open_netcdf", "refuse_non_netcdf4",
           "save_netcdf", "to_disk"]



ENCODING_ATTR = "daqlab_attrs"
"""JSON note of how attributes were encoded, so that opening restores them exactly."""


def to_disk(run: xr.Dataset) -> xr.Dataset:
    """Encode the run's attributes for netCDF (the one codec, :mod:`daqlab.io._codec`) and add
    provenance.

    Every attribute comes back as it was through :func:`from_disk`; the
    attributes CF wants (``title``, ``history``, ``Conventions``) are added and
    removed again unless the run had its own.
    """
    reserved = sorted({"daqlab_version", SCHEMA_ATTR, ENCODING_ATTR, SUMMARY_ATTR, "_FillValue",
                       "coordinates"}
                      & set(map(str, run.attrs)))
    if reserved:
        raise FormatError(
            f"run attribute {reserved[0]!r} is reserved in NetCDF (by daqlab's own notes, or by "
            "the netCDF/CF conventions for variables); it would not come back as it is. Rename it."
        )
    try:
        attrs, types = to_hdf5_attrs(run.attrs)
    except ConfigurationError as exc:  # a FormatError, as what h5netcdf refuses
        raise FormatError(f"NetCDF {exc}") from None
    note: dict[str, Any] = {"types": types, "added": [], "history_len": None}
    line = f"{iso_utc()} written by daqlab {__version__}"
    if "history" not in attrs:
        attrs["history"] = line
        note["added"].append("history")
    elif "history" not in types and isinstance(attrs["history"], str):
        # the run's own text: the line is appended (any other history is kept as it is)
        note["history_len"] = len(attrs["history"])
        attrs["history"] = f"{attrs['history']}\n{line}"
    title = str(run.attrs.get("name") or "daqlab run").encode("utf-8", "backslashreplace").decode()
    for k, default in (("title", title), ("Conventions", "CF-1.8")):
        if k not in attrs:
            attrs[k] = default
            note["added"].append(k)
    attrs["daqlab_version"] = __version__
    attrs[SCHEMA_ATTR] = np.int32(SCHEMA_VERSION)
    attrs[ENCODING_ATTR] = dumps(note)
    out = run.copy(deep=False)
    out.attrs = attrs
    return out


def from_disk(ds: xr.Dataset, source: Path) -> xr.Dataset:
    """Decode :func:`to_disk`'s encoding; refuse files from a newer schema."""
    out = ds.copy(deep=False)
    out.attrs = decode_disk_attrs(ds.attrs, source)
    return out


def decode_disk_attrs(stored: Mapping[Any, Any], source: Path) -> dict[str, Any]:
    """The run attributes :func:`to_disk` encoded as ``stored``; refuse a newer schema."""
    attrs = {str(k): v for k, v in stored.items()}
    version = attrs.pop(SCHEMA_ATTR, None)
    if version is None:
        raise FormatError(
            f"{source} is a NetCDF file but not a daqlab run (no {SCHEMA_ATTR} attribute)."
        )
    check_schema_version(version, source=source, where=f"{source}: attribute {SCHEMA_ATTR!r}",
                         written_by=attrs.get("daqlab_version"))
    attrs.pop("daqlab_version", None)
    attrs.pop(SUMMARY_ATTR, None)  # a cache of the file's contents, not the run's (see _summary)
    try:
        note = loads(plain(attrs.pop(ENCODING_ATTR, "{}")))
        types = note_types(note, legacy_json="json-untagged")
        history_len = note.get("history_len")
        added = [k for k in note.get("added", []) if k in attrs]
    except (ValueError, TypeError, AttributeError) as exc:
        raise FormatError(f"{source}: attribute {ENCODING_ATTR!r} is not a valid note ({exc}).") from None
    for k in added:
        del attrs[k]
    if isinstance(history_len, int) and isinstance(attrs.get("history"), str):
        attrs["history"] = attrs["history"][:history_len]
    try:
        attrs = from_hdf5_attrs(attrs, types)
    except ValueError as exc:
        raise FormatError(f"{source}: {exc}; the file was damaged or edited by another tool.") from None
    return attrs


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


def _cf_dataset(run: xr.Dataset, compression: bool) -> tuple[xr.Dataset, dict[str, dict[str, Any]]]:
    """The run as written: CF attributes on every variable, and the encoding of each."""
    ds = to_disk(coords_in_memory(run))
    for name, attrs in _COORD_ATTRS.items():
        ds[name].attrs.update(attrs)
    ds["quality"].attrs["standard_name"] = _QUALITY_STANDARD_NAME
    n = ds.sizes["time"]
    # time encoded here in one pass (xarray's datetime encoder makes several)
    counts, units = encode_time(run["time"].values)
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


def _verify(tmp: Path, run: xr.Dataset, group: str = "/") -> None:
    """Reopen what was written (plain h5py: cheap) and compare shape, time span and (for a run in
    memory) the last samples, of the run at ``group``."""
    n = run.sizes["time"]
    problems = []
    try:
        with h5py.File(tmp, "r") as file:
            f = file[group] if group.strip("/") else file
            shape = f["value"].shape
            if shape != (run.sizes["channel"], n):
                problems.append(f"value has shape {shape}, expected {(run.sizes['channel'], n)}")
            elif n:
                t = f["time"]
                ends = decode_time(np.array([t[0], t[-1]]), _text(t.attrs["units"]),
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
        raise StorageError(errno.EIO, f"check of the file written for {tmp.name} failed "
                           f"({'; '.join(problems)}); it was not renamed into place.")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _value_bytes(v: Any) -> int:
    return int(v.nbytes) if isinstance(v, np.ndarray) else len(str(v).encode("utf-8", "replace"))


def _attrs_bytes(attrs: dict[Any, Any]) -> int:
    return sum(len(str(k)) + _value_bytes(v) for k, v in attrs.items())


def _disk_bytes(ds: xr.Dataset) -> int:
    """An upper estimate of the file ``ds`` makes: its numbers, its text as the fixed-length char
    arrays written, and its attributes (the metadata can outweigh a short run). A write must
    never run into a full disk (see ``ensure_space``)."""
    # three times: HDF5's heaps, and again when _char_attributes rewrites text attributes
    total = 3 * _attrs_bytes(ds.attrs)
    for v in ds.variables.values():
        total += 3 * _attrs_bytes(v.attrs)
        if v.dtype.kind in "OSU":
            texts = [str(x).encode("utf-8", "replace") for x in np.ravel(v.values)]
            total += v.size * max([len(t) for t in texts] + [1])
        else:
            total += v.size * v.dtype.itemsize
    return total


def save_netcdf(
    run: xr.Dataset, path: Path, *, overwrite: bool = False, compression: bool = False
) -> Path:
    """Write ``run`` as CF-1.8 NetCDF4 through h5netcdf, atomically, and check it."""
    validate(run, check_data=False)
    try:
        ds, encoding = _cf_dataset(run, compression)
    except DaqlabError:
        raise
    except ValueError as exc:
        raise FormatError(f"cannot write {path.name} as NetCDF: {exc}.") from None
    with atomic_path(path, overwrite=overwrite, expected_bytes=_disk_bytes(ds)) as tmp:
        try:
            ds.to_netcdf(tmp, engine="h5netcdf", encoding=encoding)
        except (TypeError, ValueError, CompatibilityError) as exc:  # h5netcdf/xarray refusing a value
            raise FormatError(
                f"cannot write {path.name} as NetCDF: {exc}. Variable attributes go to NetCDF as "
                "they are (CF reads them): give numbers or text, or save as CSV or seed-hdf5, which "
                "encode any attribute") from exc
        _char_attributes(tmp)
        write_summaries(tmp, {"/": run})
        _verify(tmp, run)
    return path


def _char_attributes(tmp: Path) -> None:
    """Store text attributes as netCDF's NC_CHAR (fixed-length UTF-8 in HDF5), as CF wants.

    h5netcdf writes them as variable-length strings (NC_STRING), which NCO reports as a CF
    violation and then ignores (``coordinates`` among them); xarray reads both kinds alike.
    """
    def fix(obj: Any) -> None:
        for name in list(obj.attrs):
            info = h5py.check_string_dtype(obj.attrs.get_id(name).dtype)
            if info is None or info.length is not None:
                continue  # not text, or fixed-length already
            value = obj.attrs[name]
            if not isinstance(value, str):
                continue  # an array of text: NC_STRING is the only netCDF type for it
            try:
                data = value.encode("utf-8")
            except UnicodeEncodeError:
                continue  # not text (lone surrogates): kept as it is
            obj.attrs.create(name, np.array(data, dtype=h5py.string_dtype("utf-8", max(len(data), 1))))

    with h5py.File(tmp, "r+") as f:
        fix(f)
        f.visititems(lambda _, obj: fix(obj))


def open_netcdf(path: Path, chunks: Any = None, group: str = "/") -> xr.Dataset:
    """Open a daqlab NetCDF run (lazily with ``chunks``); refuse foreign and newer files.

    A damaged file (a variable missing, or of the wrong shape or kind) is a FormatError naming
    the variable. Read eagerly, quality flags outside :class:`~daqlab.Quality` are a FormatError
    too; read lazily they are left to :func:`daqlab.validate` (which reads every sample).
    ``run.close()`` on a lazy run closes the files it reads. ``group``: the netCDF group that
    holds the run (a node of a tree, :mod:`daqlab.io._nctree`).
    """
    chunks = check_chunks(chunks)
    opened: list[H5Variable] = []  # what a lazy run reads through, closed by run.close()
    ds = read_plain(path, chunks, opened, group)
    plain = ds is not None
    if ds is None:
        try:
            with warnings.catch_warnings():
                # h5netcdf's notes on dimensions (phony_dims...): the layout was checked already
                warnings.simplefilter("ignore", UserWarning)
                # lazily in the file's own chunks; the samples are then read in the chunks asked for
                ds = xr.open_dataset(path, engine="h5netcdf", chunks=None if chunks is None else {},
                                     decode_times=False, group=None if group == "/" else group)
            if chunks is not None:
                ds = chunk_samples(through_h5py(ds, path, chunks, opened, group), chunks)
        except DaqlabError:
            raise
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise FormatError(f"{path} could not be read as NetCDF4/HDF5: {exc}") from exc
    try:
        run = from_disk(ds, path)
        run = _strip_cf(run if plain else decode_times(run))
        if chunks is None:
            run = run.load()
    except DaqlabError:
        raise
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:  # e.g. text not UTF-8
        raise FormatError(f"{path} could not be read as a daqlab run: {type(exc).__name__}: {exc}") from exc
    finally:
        if chunks is None:
            ds.close()
    run = coords_in_memory(run)
    for name in ("channel", "unit"):
        # a char array without _Encoding (another tool wrote it) decodes to bytes
        text = [v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else v
                for v in run[name].values.tolist()]
        run[name] = run[name].copy(data=np.array(text, dtype=object))
    try:
        validate(run, check_data=False)
    except SchemaError as exc:
        problems = "\n".join(f"  - {p}" for p in exc.problems)
        raise FormatError(
            f"{path} does not hold a valid daqlab run:\n{problems}\nThe file was damaged or edited "
            "by another tool; save the run again from its source.") from None
    if chunks is None:
        _check_flags(run, path)
    else:
        run.set_close(partial(close_all, opened, None if plain else ds))
    return run


def _check_flags(run: xr.Dataset, path: Path) -> None:
    """Refuse quality flags outside :class:`~daqlab.Quality` (a lazy open leaves that to
    ``validate``, which would otherwise read every sample)."""
    q = run["quality"].values
    # the flags are 0..3: as unsigned bytes every other value, negatives too, is above 3
    bad = q.view(np.uint8) > int(max(Quality))
    if not bad.any():
        return
    found = np.unique(q[bad]).tolist()
    i, k = (int(x[0]) for x in np.nonzero(bad))
    allowed = [int(x) for x in Quality]
    raise FormatError(
        f"{path}: variable 'quality' holds {int(bad.sum())} flag(s) outside daqlab.Quality's "
        f"{allowed}: {found[:5]} (the first for channel {run['channel'].values[i]!r} at "
        f"{run['time'].values[k]}); the file was damaged or written by another tool. Open it "
        "lazily (daqlab.open_run(path, chunks={})) to inspect or repair the flags: "
        "daqlab.validate(run) lists them.")


