"""The fast read path of daqlab's NetCDF files: straight through h5py.

xarray's h5netcdf reader spends milliseconds of bookkeeping per variable and per read; a
file as daqlab writes it is read here whole (:func:`read_plain`) or chunk by chunk for dask
(:class:`H5Variable`), with the same result. Anything else in the file (another tool added
a variable, packed the data) goes to xarray's reader, in :mod:`daqlab.io._netcdf`. Also
:func:`refuse_non_netcdf4`: what an HDF5 file that is not netCDF-4 holds, in an error.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, NoReturn

import dask.array
import dask.base
import h5py
import numpy as np
import pandas as pd
import xarray as xr
from numpy.typing import NDArray

from daqlab.errors import DaqlabError, FormatError
from daqlab.io._cftime import cal_date_variable, time_variable
from daqlab.io._records import SCHEMA_ATTR
from daqlab.run import chunked_variable

__all__ = ["PACKING", "H5Variable", "close_all", "read_plain", "refuse_non_netcdf4", "through_h5py"]

def close_all(opened: list[H5Variable], ds: xr.Dataset | None) -> None:
    """Close the files a lazy run reads (dask reopens them should it be computed again)."""
    for var in opened:
        var.file.close()
    if ds is not None:
        ds.close()


class H5Variable:
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


def through_h5py(ds: xr.Dataset, path: Path, chunks: dict[str, Any],
                  opened: list[H5Variable], group: str = "/") -> xr.Dataset:
    """``ds`` (opened lazily by xarray in the file's chunks) with its sample variables read
    straight through h5py in ``chunks`` (``{}``: the file's), where nothing but reading is
    needed to decode them."""
    for name in ("value", "quality", "raw"):
        var = ds.variables.get(name)
        if var is None or var.chunks is None or any(k in var.attrs or k in var.encoding for k in PACKING):
            continue
        ds[name] = _lazy_samples(path, _in(group, name), var, chunks, opened)
    return ds


def _lazy_samples(path: Path, name: str, var: xr.Variable, chunks: dict[str, Any],
                  opened: list[H5Variable]) -> xr.Variable:
    """``var`` (the file's variable ``name``, in its stored chunks) as a dask array that reads
    it through h5py in ``chunks`` (``{}``: as stored); its reader is appended to ``opened``."""
    path = path.resolve()  # read later, maybe from another folder or on another machine
    st = path.stat()
    asked = chunked_variable(var, chunks).chunks if chunks else var.chunks
    # the same file, variable and chunks: the same dask keys (anything else must differ)
    token = dask.base.tokenize(str(path), st.st_ino, st.st_size, st.st_mtime_ns, name, asked)
    reader = H5Variable(path, name, var.shape, var.dtype, (st.st_size, st.st_mtime_ns))
    opened.append(reader)
    data = dask.array.from_array(  # type: ignore[no-untyped-call]
        reader,
        chunks=asked, name=f"daqlab-read-{name}-{token}",
        lock=False, asarray=True, meta=np.empty((0,) * var.ndim, var.dtype))
    return var.copy(deep=False, data=data)


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
PACKING = ("_FillValue", "missing_value", "scale_factor", "add_offset", "_Unsigned")


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


def _check_layout(f: h5py.Group, path: Path, group: str = "/") -> None:
    """Refuse a file (or group) that is not a daqlab run, or whose variables are missing or of
    the wrong shape or kind, naming the variable (xarray would fail deep inside, or open a wrong
    run)."""
    if group.strip("/"):
        path = Path(f"{path} (group {group!r})")
    if SCHEMA_ATTR not in f.attrs:
        raise FormatError(
            f"{path} is a NetCDF file but not a daqlab run (no {SCHEMA_ATTR} attribute): it has "
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


def _in(group: str, name: str) -> str:
    """The HDF5 path of variable ``name`` in netCDF group ``group`` (``"/"``: the root)."""
    return name if group.strip("/") == "" else f"{group.strip('/')}/{name}"


def read_plain(path: Path, chunks: dict[str, Any] | None = None,
                opened: list[H5Variable] | None = None, group: str = "/") -> xr.Dataset | None:
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
        with h5py.File(path, "r") as root:
            refuse_non_netcdf4(root, path)
            f = root[group] if group.strip("/") else root
            _check_layout(f, path, group)
            found = [k for k in f if not (isinstance(f[k], h5py.Dataset) and bytes(
                f[k].attrs.get("NAME", b"")).startswith(_BARE_DIMENSION))]
            if not {"time", "cal_date"} <= set(found) <= _PLAIN_DIMS.keys() or any(
                    k in f[v].attrs for v in ("value", "quality", "raw") if v in f for k in PACKING):
                return None
            with ThreadPoolExecutor(1, thread_name_prefix="daqlab-read") as pool:
                variables = _read_variables(f, found, pool, path, chunks,
                                            [] if opened is None else opened, group)
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
        variables["cal_date"] = cal_date_variable(variables["cal_date"])
        index = xr.indexes.PandasIndex(pd.DatetimeIndex(time.values, copy=False), "time")
        ds = xr.Dataset(variables, xr.Coordinates.from_xindex(index), attrs)
        ds.variables["time"].attrs.update(time.attrs)
        return xr.decode_cf(ds, decode_times=False)
    except (ValueError, TypeError, KeyError):
        return None


def _read_variables(f: h5py.Group, names: list[str], pool: ThreadPoolExecutor, path: Path,
                    chunks: dict[str, Any] | None, opened: list[H5Variable], group: str = "/"
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
            read[name] = submit(time_variable, xr.Variable(dims, d[()], _attrs(d)))
        elif chunks is not None and name in ("value", "quality", "raw"):
            # (only the chunks of this placeholder count)
            stored = dask.array.empty(d.shape, dtype=d.dtype, chunks=d.chunks or d.shape)
            read[name] = _lazy_samples(path, _in(group, name), xr.Variable(dims, stored, _attrs(d)),
                                       chunks, opened)
        else:
            read[name] = xr.Variable(dims, d[()], _attrs(d))
    if deflated is not None:
        dims, attrs = read["quality"]
        read["quality"] = xr.Variable(dims, _assemble(f["quality"], deflated, inflating.result()), attrs)
    read["time"] = read["time"].result()
    return read


def _dim_names(d: h5py.Dataset) -> tuple[str, ...]:
    """The names of a dataset's netCDF dimensions (its HDF5 dimension scales)."""
    return tuple(dim[0].name.rsplit("/", 1)[-1] if len(dim) else "" for dim in d.dims)


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
