"""Runs as NetCDF4/HDF5 files, written and read through h5netcdf."""

from __future__ import annotations

import errno
import os
import re
import warnings
import zlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, NoReturn

import dask.array
import dask.base
import h5py
import numpy as np
import pandas as pd
import xarray as xr
from numpy.typing import NDArray

from daqlab._version import __version__
from daqlab.errors import ConfigurationError, DaqlabError, FormatError, SchemaError, StorageError
from daqlab.io._atomic import atomic_path
from daqlab.io._codec import dumps, from_hdf5_attrs, loads, note_types, plain, to_hdf5_attrs
from daqlab.io._records import check_schema_version
from daqlab.model import Quality
from daqlab.run import (
    SCHEMA_VERSION,
    check_chunks,
    chunk_samples,
    chunked_variable,
    coords_in_memory,
    iso_utc,
    validate,
)

__all__ = ["from_disk", "open_netcdf", "refuse_non_netcdf4", "save_netcdf", "to_disk"]

_SCHEMA_ATTR = "daqlab_schema_version"


_ENCODING_ATTR = "daqlab_attrs"
"""JSON note of how attributes were encoded, so that opening restores them exactly."""


def to_disk(run: xr.Dataset) -> xr.Dataset:
    """Encode the run's attributes for netCDF (the one codec, :mod:`daqlab.io._codec`) and add
    provenance.

    Every attribute comes back as it was through :func:`from_disk`; the
    attributes CF wants (``title``, ``history``, ``Conventions``) are added and
    removed again unless the run had its own.
    """
    try:
        attrs, types = to_hdf5_attrs(run.attrs)
    except ConfigurationError as exc:  # a FormatError, as what h5netcdf refuses
        raise FormatError(f"NetCDF {exc}") from None
    note: dict[str, Any] = {"types": types, "added": [], "history_len": None}
    line = f"{iso_utc()} written by daqlab {__version__}"
    if "history" not in attrs:
        attrs["history"] = line
        note["added"].append("history")
    elif "history" not in types:  # the run's own text: the line is appended
        note["history_len"] = len(attrs["history"])
        attrs["history"] = f"{attrs['history']}\n{line}"
    title = str(run.attrs.get("name") or "daqlab run").encode("utf-8", "backslashreplace").decode()
    for k, default in (("title", title), ("Conventions", "CF-1.8")):
        if k not in attrs:
            attrs[k] = default
            note["added"].append(k)
    attrs["daqlab_version"] = __version__
    attrs[_SCHEMA_ATTR] = np.int32(SCHEMA_VERSION)
    attrs[_ENCODING_ATTR] = dumps(note)
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
    check_schema_version(version, source=source, where=f"{source}: attribute {_SCHEMA_ATTR!r}",
                         written_by=attrs.get("daqlab_version"))
    attrs.pop("daqlab_version", None)
    try:
        note = loads(plain(attrs.pop(_ENCODING_ATTR, "{}")))
        types = note_types(note, legacy_json="json-untagged")
        history_len = note.get("history_len")
        added = [k for k in note.get("added", []) if k in attrs]
    except (ValueError, TypeError, AttributeError) as exc:
        raise FormatError(f"{source}: attribute {_ENCODING_ATTR!r} is not a valid note ({exc}).") from None
    for k in added:
        del attrs[k]
    if isinstance(history_len, int) and isinstance(attrs.get("history"), str):
        attrs["history"] = attrs["history"][:history_len]
    try:
        attrs = from_hdf5_attrs(attrs, types)
    except ValueError as exc:
        raise FormatError(f"{source}: {exc}; the file was damaged or edited by another tool.") from None
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
# Spans whose times stay exact to the nanosecond as fractional microseconds: every offset from the
# reference (the middle of the run) below 2**42 us, where float64 microseconds are spaced < 0.5 ns.
_NS_EXACT_HALF_SPAN = 2**42 * 1000
_NS_MIN = -(2**63)  # NaT; datetime64[ns] times are above it


def _encode_time(times: NDArray[np.datetime64]) -> tuple[NDArray[np.float64], str]:
    """``times`` as float64 counts of microseconds, exactly, and their CF units.

    int64 is not a CF-1.8 type, and UDUNITS-2 (the NCAS CF checker) cannot parse
    ``nanoseconds`` (it reads "nan"), so time is a float64 count of microseconds
    since a whole second in the middle of the run, with a fraction for the
    nanoseconds. Each count is chosen so that both ways readers decode it,
    rounding (daqlab) and truncating (xarray) ``count * 1000``, give the
    nanosecond back: exact for spans up to 2**43 us (101.8 days, less up to the
    second that makes the reference whole). Longer runs use whole microseconds
    since the whole second before the first sample (exact for 285 years; xarray's
    float product reads those beyond 2**46 us to within 16 ns) when every
    time is a whole microsecond after the first; a longer run with finer times,
    or a span over 285 years, cannot be stored exactly and raises ValueError
    (nothing is rounded).
    """
    t = times.view(np.int64)
    if t.size == 0:
        return np.empty(0), "microseconds since 1970-01-01T00:00:00"
    span = int(t[-1]) - int(t[0])  # Python ints: a span over 292 years overflows int64
    if span >= 2**53 * 1000:
        raise ValueError(
            f"its times span {span / (365.2425 * 86400e9):,.0f} years; NetCDF stores time as float64 "
            "counts (CF-1.8 has no int64), exact to the microsecond for spans up to 285 years. Split "
            "the run into shorter parts"
        )
    # a whole second: tools that read the reference to the microsecond only (cftime) read it exactly
    ref = (int(t[0]) + span // 2) // 10**9 * 10**9
    if ref <= _NS_MIN:  # rounded down below 1677-09-21T00:12:43.145224193, the first datetime64[ns]
        ref += 10**9
    if max(ref - int(t[0]), int(t[-1]) - ref) < _NS_EXACT_HALF_SPAN:
        counts = _exact_microseconds(t - ref)
        if counts is not None:
            return counts, f"microseconds since {np.datetime64(ref // 10**9, 's')}"
    # whole microseconds since a reference, written to the microsecond (cftime reads no further):
    # the whole second before the first sample when that fits, else the first sample
    ref = int(t[0])
    if ref % 1000 == 0 and ref // 10**9 * 10**9 > _NS_MIN and span + 10**9 < 2**53 * 1000:
        ref = ref // 10**9 * 10**9
    micro, rest = np.divmod(t - ref, 1000)
    if rest.any():
        k = int(np.argmax(rest != 0))
        raise ValueError(
            f"its times span {span / 86400e9:,.0f} days and sample {k} ({times[k]}) is not a whole "
            "microsecond after the first; NetCDF stores time as float64 counts (CF-1.8 has no int64), "
            "exact to the nanosecond only for spans up to 101 days. Split the run into parts shorter "
            "than that, save it as CSV (exact to the nanosecond), or round its times to microseconds "
            "(run.assign_coords(time=run.time.dt.round('us')))"
        )
    since = np.datetime64(ref // 1000, "us") if ref % 1000 == 0 else np.datetime64(ref, "ns")
    return micro.astype(np.float64), f"microseconds since {since}"


def _exact_microseconds(ns: NDArray[np.int64]) -> NDArray[np.float64] | None:
    """``ns`` (offsets below 2**42 us) as float64 microseconds that give each nanosecond back when
    multiplied by 1000 and rounded (daqlab) or truncated (xarray); ``None`` if one cannot.

    ``ns / 1000`` is the nearest float, but its product with 1000 may fall just below the whole
    nanosecond, which truncation turns into the one before: a float next to it does not.
    """
    def decoded_exactly(micro: NDArray[np.float64], want: NDArray[np.float64]) -> NDArray[np.bool_]:
        product = micro * 1000.0
        ok: NDArray[np.bool_] = (np.rint(product) == want) & (np.trunc(product) == want)
        return ok

    out = np.empty(ns.shape)
    step = 1 << 16  # blocks that stay in the CPU's cache: about 3x faster than whole arrays
    for start in range(0, ns.size, step):
        exact = ns[start:start + step].astype(np.float64)  # (below 2**53: exact)
        block = np.divide(exact, 1000.0, out=out[start:start + step])
        missed = np.flatnonzero(~decoded_exactly(block, exact))
        for direction in (np.inf, -np.inf):
            if not missed.size:
                break
            other = np.nextafter(block[missed], direction)
            fits = decoded_exactly(other, exact[missed])
            block[missed[fits]] = other[fits]
            missed = missed[~fits]
        if missed.size:
            return None
    return out


def _decode_time(values: NDArray[Any], units: str, calendar: str, name: str = "time"
                 ) -> NDArray[np.datetime64]:
    """Inverse of :func:`_encode_time`, and of the ``nanoseconds since`` it wrote before;
    other CF units go through xarray's decoder."""
    m = _TIME_UNITS.fullmatch(units.strip())
    if m is None:
        decoded = np.asarray(xr.coding.times.decode_cf_datetime(values, units, calendar))
        return decoded.astype("datetime64[ns]")
    t0 = np.datetime64(m.group(2), "ns").view(np.int64)
    scale = 1000 if m.group(1) == "microseconds" else 1
    fractional = False
    if np.size(values):
        lo, hi = float(np.min(values)), float(np.max(values))  # NaN comes out as NaN
        # the counts and the times must fit int64, NaT (its minimum) excluded: checked on the
        # bounds as decoded below (rounded), in Python integers, which do not overflow
        fractional = scale != 1 and max(-lo, hi) < 2.0**42  # see below
        ok = np.isfinite(lo) and np.isfinite(hi)
        if ok:
            first, last = ((round(x * scale) if fractional else round(x) * scale) for x in (lo, hi))
            ok = all(_NS_MIN < n < 2**63 for n in (first, last, first + int(t0), last + int(t0)))
        if not ok:
            raise FormatError(f"variable {name!r} holds NaN, infinite or out-of-range counts "
                              f"(from {lo} to {hi} {units}); the file is damaged.")
    counts = np.empty(np.shape(values), np.int64)  # one pass, no temporaries
    if np.size(values) and fractional:
        # fractional microseconds are only written below 2**42 (see _exact_microseconds), where
        # whole ones times 1000 are exact too
        np.rint(np.multiply(values, scale, dtype=np.float64), out=counts, casting="unsafe")
    else:
        # whole counts (of up to 2**53 us: their product with 1000 would not be exact in float64)
        np.rint(values, out=counts, casting="unsafe")
        if scale != 1:
            counts *= scale
    counts += t0
    out: NDArray[np.datetime64] = counts.view("datetime64[ns]")
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
        except (TypeError, ValueError) as exc:  # h5netcdf/xarray refusing a value
            raise FormatError(f"cannot write {path.name} as NetCDF: {exc}") from exc
        _char_attributes(tmp)
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


def open_netcdf(path: Path, chunks: Any = None) -> xr.Dataset:
    """Open a daqlab NetCDF run (lazily with ``chunks``); refuse foreign and newer files.

    A damaged file (a variable missing, or of the wrong shape or kind) is a FormatError naming
    the variable. Read eagerly, quality flags outside :class:`~daqlab.Quality` are a FormatError
    too; read lazily they are left to :func:`daqlab.validate` (which reads every sample).
    ``run.close()`` on a lazy run closes the files it reads.
    """
    chunks = check_chunks(chunks)
    opened: list[_H5Variable] = []  # what a lazy run reads through, closed by run.close()
    ds = _read_plain(path, chunks, opened)
    plain = ds is not None
    if ds is None:
        try:
            with warnings.catch_warnings():
                # h5netcdf's notes on dimensions (phony_dims...): the layout was checked already
                warnings.simplefilter("ignore", UserWarning)
                # lazily in the file's own chunks; the samples are then read in the chunks asked for
                ds = xr.open_dataset(path, engine="h5netcdf", chunks=None if chunks is None else {},
                                     decode_times=False)
            if chunks is not None:
                ds = chunk_samples(_through_h5py(ds, path, chunks, opened), chunks)
        except DaqlabError:
            raise
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise FormatError(f"{path} could not be read as NetCDF4/HDF5: {exc}") from exc
    try:
        run = from_disk(ds, path)
        run = _strip_cf(run if plain else _decode_times(run))
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
        run.set_close(partial(_close_all, opened, None if plain else ds))
    return run


def _close_all(opened: list[_H5Variable], ds: xr.Dataset | None) -> None:
    """Close the files a lazy run reads (dask reopens them should it be computed again)."""
    for var in opened:
        var.file.close()
    if ds is not None:
        ds.close()


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


class _H5Variable:
    """One variable of a file, for dask to read chunk by chunk through h5py.

    xarray's h5netcdf reader spends ~4 ms of bookkeeping on every read (h5netcdf issue
    #195), longer than reading a 2 MB chunk takes. Pickles as the file's path and the
    variable's name (xarray's CachingFileManager), so dask.distributed workers read it too.
    """

    def __init__(self, path: Path, name: str, shape: tuple[int, ...], dtype: np.dtype[Any],
                 identity: tuple[int, int]) -> None:
        self.path, self.file = path, xr.backends.CachingFileManager(h5py.File, str(path), mode="r")
        self.name, self.shape, self.dtype, self.ndim = name, shape, dtype, len(shape)
        # (size, mtime in ns) of the file opened; not the inode, which differs where a
        # dask.distributed worker sees the same file through another mount
        self.identity = identity

    def __getitem__(self, key: Any) -> NDArray[Any]:
        try:
            with self.file.acquire_context() as f:
                st = os.fstat(f.id.get_vfd_handle())  # the file read, whatever the path names now
                if (st.st_size, st.st_mtime_ns) != self.identity:
                    raise FormatError(
                        f"{self.path} was replaced or changed after this run was opened lazily; its "
                        f"samples ({self.name!r}) are no longer the ones opened. Open it again.")
                out: NDArray[Any] = f[self.name][key]
        except DaqlabError:
            raise
        except (OSError, KeyError, RuntimeError, ValueError) as exc:  # truncated, damaged, replaced
            raise FormatError(f"{self.path}: reading {self.name!r} failed ({type(exc).__name__}: "
                              f"{exc}); the file was damaged or changed after it was opened.") from exc
        return out


def _through_h5py(ds: xr.Dataset, path: Path, chunks: dict[str, Any],
                  opened: list[_H5Variable]) -> xr.Dataset:
    """``ds`` (opened lazily by xarray in the file's chunks) with its sample variables read
    straight through h5py in ``chunks`` (``{}``: the file's), where nothing but reading is
    needed to decode them."""
    for name in ("value", "quality", "raw"):
        var = ds.variables.get(name)
        if var is None or var.chunks is None or any(k in var.attrs or k in var.encoding for k in _PACKING):
            continue
        ds[name] = _lazy_samples(path, name, var, chunks, opened)
    return ds


def _lazy_samples(path: Path, name: str, var: xr.Variable, chunks: dict[str, Any],
                  opened: list[_H5Variable]) -> xr.Variable:
    """``var`` (the file's variable ``name``, in its stored chunks) as a dask array that reads
    it through h5py in ``chunks`` (``{}``: as stored); its reader is appended to ``opened``."""
    path = path.resolve()  # read later, maybe from another folder or on another machine
    st = path.stat()
    asked = chunked_variable(var, chunks).chunks if chunks else var.chunks
    # the same file, variable and chunks: the same dask keys (anything else must differ)
    token = dask.base.tokenize(str(path), st.st_ino, st.st_size, st.st_mtime_ns, name, asked)
    reader = _H5Variable(path, name, var.shape, var.dtype, (st.st_size, st.st_mtime_ns))
    opened.append(reader)
    data = dask.array.from_array(  # type: ignore[no-untyped-call]
        reader,
        chunks=asked, name=f"daqlab-read-{name}-{token}",
        lock=False, asarray=True, meta=np.empty((0,) * var.ndim, var.dtype))
    return var.copy(deep=False, data=data)


def _decode_times(ds: xr.Dataset) -> xr.Dataset:
    """Decode ``time`` and ``cal_date`` (opened undecoded: our own decoder is one pass)."""
    return ds.assign_coords(time=_time_variable(ds["time"].variable),
                            cal_date=_cal_date_variable(ds["cal_date"].variable))


def _time_variable(time: xr.Variable) -> xr.Variable:
    attrs = dict(time.attrs)
    units, calendar = attrs.pop("units", None), attrs.pop("calendar", "standard")
    if units is None:
        raise FormatError("coordinate 'time' has no units; it is not a daqlab time axis.")
    return xr.Variable("time", _decode_time(np.asarray(time.values), units, calendar), attrs)


def _cal_date_variable(cal: xr.Variable) -> xr.Variable:
    attrs = dict(cal.attrs)
    units = attrs.pop("units", "microseconds since 1970-01-01T00:00:00")
    calendar = attrs.pop("calendar", "standard")
    attrs.pop("_FillValue", None)  # NaN, decoded as NaT below
    raw = np.asarray(cal.values, dtype=np.float64)
    dates = np.full(raw.shape, np.datetime64("NaT", "ns"))
    ok = np.isfinite(raw)
    dates[ok] = _decode_time(raw[ok], units, calendar, "cal_date")
    return xr.Variable("channel", dates, attrs)


# What a daqlab file holds, and each variable's dimensions (channel and unit are char arrays,
# with a second, string-length dimension that CF decoding removes).
_PLAIN_DIMS: dict[str, tuple[str, ...]] = {
    "value": ("channel", "time"), "quality": ("channel", "time"), "raw": ("channel", "time"),
    "time": ("time",), "channel": ("channel", "nchar"), "unit": ("channel", "nchar"),
    **{name: ("channel",) for name in ("range_min", "range_max", "cal_slope", "cal_offset", "cal_date")},
}
# HDF5 bookkeeping of netCDF-4 (dimension scales, ids), not attributes of the data;
# h5netcdf hides the same ones
_HDF5_ATTRS = frozenset({"REFERENCE_LIST", "CLASS", "DIMENSION_LIST", "NAME", "_Netcdf4Dimid",
                         "_Netcdf4Coordinates", "_nc3_strict", "_NCProperties"})
_BARE_DIMENSION = b"This is a netCDF dimension but not a netCDF variable"
_PACKING = ("_FillValue", "missing_value", "scale_factor", "add_offset", "_Unsigned")


def _attr_value(value: Any) -> Any:
    """An HDF5 attribute as h5netcdf and xarray give it: text decoded, one-element arrays
    unpacked, string arrays as lists."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "SUO":
            value = [v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else v
                     for v in value.tolist()]
        if len(value) == 1:
            return value[0]
    return value


def _attrs(obj: h5py.HLObject) -> dict[str, Any]:
    # fill values stay as stored (as xarray keeps them)
    return {k: obj.attrs[k] if k in ("_FillValue", "missing_value") else _attr_value(obj.attrs[k])
            for k in obj.attrs if k not in _HDF5_ATTRS}


def _contents(f: h5py.Group) -> str:
    """What an HDF5 group holds at its top, briefly, for an error message."""
    groups = sorted(k for k in f if isinstance(f.get(k), h5py.Group))
    sets = [f"{k} {d.shape} {d.dtype}" for k in sorted(f) if isinstance(d := f.get(k), h5py.Dataset)
            and not bytes(d.attrs.get("NAME", b"")).startswith(_BARE_DIMENSION)]
    parts = [f"{what} {names[:8]}{' ...' if len(names) > 8 else ''}"
             for what, names in (("groups", groups), ("datasets", sets)) if names]
    return " and ".join(parts) or "no groups or datasets"


def _is_netcdf4(f: h5py.File) -> bool:
    """netCDF-C and h5netcdf stamp ``_NCProperties`` on the root; older writers left at least
    the dimension scales of their variables."""
    return "_NCProperties" in f.attrs or any(
        isinstance(d := f.get(k), h5py.Dataset) and ("DIMENSION_LIST" in d.attrs or "CLASS" in d.attrs)
        for k in f)


def refuse_non_netcdf4(f: h5py.File, path: Path) -> None:
    """Refuse the open HDF5 file ``f`` unless it is netCDF-4 (the seed's layout was checked
    before), with an error saying what it holds; a file too damaged to tell is left to
    :func:`open_netcdf`."""
    try:
        if _is_netcdf4(f):
            return
        contents = _contents(f)
    except (OSError, RuntimeError, KeyError, TypeError, ValueError):
        return
    raise FormatError(
        f"{path} is an HDF5 file that is neither a netCDF-4 file nor the seed's layout: it has "
        f"{contents}. daqlab reads its own NetCDF4 runs (daqlab.save), the seed's HDF5 layout "
        "(/data/<channel>/timestamps and values, /metadata), its CSV layouts and recording "
        "folders. Read this file with h5py and build a run with daqlab.make_run(...)."
    )


# Each variable of a daqlab file: its length(s) as a run's channel count C and sample count N,
# the kinds of dtype it may have, and what daqlab writes there.
_LAYOUT: dict[str, tuple[tuple[str, ...], str, str]] = {
    "time": (("N",), "iuf", "a 1-D float64 count of time, one per sample"),
    "channel": (("C",), "SUO", "the channel names as text"),
    "unit": (("C",), "SUO", "the channels' units as text"),
    **{name: (("C",), "iuf", "one float64 per channel") for name in
       ("range_min", "range_max", "cal_slope", "cal_offset", "cal_date")},
    "value": (("C", "N"), "iuf", "float64 samples of shape (channel, time)"),
    "quality": (("C", "N"), "iu", "int8 flags of shape (channel, time)"),
    "raw": (("C", "N"), "iuf", "float64 samples of shape (channel, time)"),
}


def _check_layout(f: h5py.File, path: Path) -> None:
    """Refuse a file that is not a daqlab run, or whose variables are missing or of the wrong
    shape or kind, naming the variable (xarray would fail deep inside, or open a wrong run)."""
    refuse_non_netcdf4(f, path)
    if _SCHEMA_ATTR not in f.attrs:
        raise FormatError(
            f"{path} is a NetCDF file but not a daqlab run (no {_SCHEMA_ATTR} attribute): it has "
            f"{_contents(f)}. daqlab opens the NetCDF files daqlab.save writes; open this one "
            "with xarray.open_dataset."
        )
    sizes: dict[str, int] = {}
    for name, (dims, kinds, written) in _LAYOUT.items():
        d = f.get(name)
        if d is None and name == "raw":
            continue
        if not isinstance(d, h5py.Dataset):
            have = sorted(k for k in f if isinstance(f.get(k), h5py.Dataset))
            what = "is missing" if d is None else f"is a {type(d).__name__}, not a dataset"
            _damaged(path, name, f"{what} (the file has {have})", written)
        shape = d.shape or ()
        # text may be a char array, with one more dimension for the characters
        text = kinds == "SUO" and d.dtype.kind == "S" and len(shape) == len(dims) + 1
        if d.dtype.kind not in kinds or not (len(shape) == len(dims) or text):
            _damaged(path, name, f"has shape {shape} and dtype {d.dtype}", written)
        for dim, n in zip(dims, shape, strict=False):
            if sizes.setdefault(dim, n) != n:
                counts = (f"{sizes.get('C', '?')} channel(s) ('channel') and "
                          f"{sizes.get('N', '?')} sample(s) ('time')")
                _damaged(path, name, f"has shape {shape}, but the file has {counts}", written)


def _damaged(path: Path, name: str, problem: str, written: str) -> NoReturn:
    raise FormatError(
        f"{path} is a damaged daqlab run: variable {name!r} {problem}, where daqlab writes "
        f"{written}. The file was damaged or edited by another tool; save the run again from its "
        f"source, or repair {name!r} (e.g. with h5py)."
    )


def _read_plain(path: Path, chunks: dict[str, Any] | None = None,
                opened: list[_H5Variable] | None = None) -> xr.Dataset | None:
    """A daqlab NetCDF file read whole through h5py, CF-decoded by xarray; ``None`` when the
    file holds anything else (another tool added a variable, packed the data, ...), which
    xarray's h5netcdf reader then opens.

    Same result as that reader, in about half the time: its bookkeeping costs ~5 ms per
    variable, and HDF5 would inflate the quality flags under h5py's lock, one chunk after
    the other, where here zlib inflates them (and numpy decodes the times) in a second
    thread while the samples are read. With ``chunks`` the samples stay on disk, read through
    h5py chunk by chunk (see :func:`_lazy_samples`). A file h5py cannot read is a FormatError.
    """
    try:
        with h5py.File(path, "r") as f:
            _check_layout(f, path)
            found = [k for k in f if not (isinstance(f[k], h5py.Dataset) and bytes(
                f[k].attrs.get("NAME", b"")).startswith(_BARE_DIMENSION))]
            if not {"time", "cal_date"} <= set(found) <= _PLAIN_DIMS.keys() or any(
                    k in f[v].attrs for v in ("value", "quality", "raw") if v in f for k in _PACKING):
                return None
            with ThreadPoolExecutor(1, thread_name_prefix="daqlab-read") as pool:
                variables = _read_variables(f, found, pool, path, chunks,
                                            [] if opened is None else opened)
            attrs = _attrs(f)
    except DaqlabError:
        raise
    except (OSError, RuntimeError, KeyError, TypeError, ValueError, zlib.error) as exc:
        # h5py: KeyError for an object it cannot open, RuntimeError for damaged metadata
        raise FormatError(f"{path} could not be read as NetCDF4/HDF5 ({type(exc).__name__}: {exc}); "
                          "it is truncated or damaged.") from exc
    if variables is None:
        return None
    try:
        # decoded already; indexed without the copy xarray would make of it
        time = variables.pop("time")
        variables["cal_date"] = _cal_date_variable(variables["cal_date"])
        index = xr.indexes.PandasIndex(pd.DatetimeIndex(time.values, copy=False), "time")
        ds = xr.Dataset(variables, xr.Coordinates.from_xindex(index), attrs)
        ds.variables["time"].attrs.update(time.attrs)
        return xr.decode_cf(ds, decode_times=False)
    except (ValueError, TypeError, KeyError):
        return None


def _read_variables(f: h5py.File, names: list[str], pool: ThreadPoolExecutor, path: Path,
                    chunks: dict[str, Any] | None, opened: list[_H5Variable]
                    ) -> dict[str, xr.Variable] | None:
    """Every variable of ``names`` (``None`` if one is not as daqlab writes it). The quality
    flags are inflated and the times decoded in ``pool`` while the samples are read: numpy
    and zlib release the GIL, and so does h5py while it reads."""
    def submit(fn: Callable[..., Any], *args: Any) -> Future[Any]:
        try:
            return pool.submit(fn, *args)
        except RuntimeError:  # the interpreter is shutting down: no new threads, read in this one
            done: Future[Any] = Future()
            done.set_result(fn(*args))
            return done

    for name in ("value", "quality", "raw"):  # stored as (channel, time), not transposed
        if name not in names:
            continue
        try:
            dims = _dim_names(f[name])
        except (RuntimeError, KeyError, ValueError) as exc:  # its dimension scales were deleted
            _damaged(path, name, f"names dimensions that cannot be read ({type(exc).__name__}: {exc}; "
                     "was 'channel' or 'time' replaced?)", _LAYOUT[name][2])
        if dims != _PLAIN_DIMS[name]:
            return None
    deflated = _deflated_chunks(f["quality"]) if "quality" in names and chunks is None else None
    inflating = submit(lambda: [zlib.decompress(b) for _, b in deflated or ()])
    read: dict[str, Any] = {}
    for name in sorted(names, key=lambda n: n != "time"):  # time first: decoded meanwhile
        d = f[name]
        dims = _PLAIN_DIMS[name]
        if not isinstance(d, h5py.Dataset) or d.dtype.kind == "O" or d.ndim not in (
                len(dims), len(dims) - (dims[-1] == "nchar")):
            return None  # (variable-length strings are xarray's to decode)
        dims = (dims[0], f"{name}_nchar") if dims[-1] == "nchar" and d.ndim == 2 else dims[:d.ndim]
        if name == "quality" and deflated is not None:
            read[name] = (dims, _attrs(d))
        elif name == "time":
            read[name] = submit(_time_variable, xr.Variable(dims, d[()], _attrs(d)))
        elif chunks is not None and name in ("value", "quality", "raw"):
            # (only the chunks of this placeholder count)
            stored = dask.array.empty(d.shape, dtype=d.dtype, chunks=d.chunks or d.shape)
            read[name] = _lazy_samples(path, name, xr.Variable(dims, stored, _attrs(d)), chunks, opened)
        else:
            read[name] = xr.Variable(dims, d[()], _attrs(d))
    if deflated is not None:
        dims, attrs = read["quality"]
        read["quality"] = xr.Variable(dims, _assemble(f["quality"], deflated, inflating.result()), attrs)
    read["time"] = read["time"].result()
    return read


def _dim_names(d: h5py.Dataset) -> tuple[str, ...]:
    """The names of a dataset's netCDF dimensions (its HDF5 dimension scales)."""
    return tuple(dim[0].name.lstrip("/") if len(dim) else "" for dim in d.dims)


def _deflated_chunks(d: h5py.Dataset) -> list[tuple[tuple[int, ...], bytes]] | None:
    """A one-byte dataset's chunks as stored (offset, deflated bytes), if deflate (and shuffle,
    a no-op on one-byte items) is all they went through and every chunk is stored."""
    if d.chunks is None or d.dtype.itemsize != 1 or not set(d._filters) <= {"gzip", "shuffle"} or (
            "gzip" not in d._filters):
        return None
    infos: list[Any] = []
    d.id.chunk_iter(infos.append)
    expected = int(np.prod([-(-n // c) for n, c in zip(d.shape, d.chunks, strict=True)]))
    if len(infos) != expected or any(i.filter_mask for i in infos):
        return None
    return [(tuple(i.chunk_offset), d.id.read_direct_chunk(i.chunk_offset)[1]) for i in infos]


def _assemble(d: h5py.Dataset, chunks: list[tuple[tuple[int, ...], bytes]],
              inflated: list[bytes]) -> NDArray[Any]:
    """The dataset from its inflated chunks. (zlib inflates in another thread, without the GIL,
    while h5py reads the samples; the copying in here waits until that read is done, or it
    would stall both.)"""
    out = np.empty(d.shape, d.dtype)
    for (offset, _), raw in zip(chunks, inflated, strict=True):
        block = np.frombuffer(raw, d.dtype).reshape(d.chunks)
        where = tuple(slice(o, min(o + c, n)) for o, c, n in zip(offset, d.chunks, d.shape, strict=True))
        out[where] = block[tuple(slice(0, w.stop - w.start) for w in where)]
    return out
