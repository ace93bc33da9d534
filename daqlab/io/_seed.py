"""Runs in the seed's HDF5 layout, so that files of the Rust DAQ application open as runs.

:func:`save_seed` writes a run as one group per channel under ``/data`` (float and exact
integer timestamps, raw values, quality flags, physical values when calibrated) and its
attributes under ``/metadata``, through :mod:`daqlab.io._codec`; :func:`open_seed` reads that
layout, and the application's own files with defaults for what they lack (aligning channels
of different time axes, gaps flagged BAD).

The layout and the reading rules: docs/formats/seed-hdf5.md.
"""

from __future__ import annotations

import errno
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import xarray as xr
from numpy.typing import NDArray

from daqlab._version import __version__
from daqlab.errors import ConfigurationError, DaqlabError, FormatError, StorageError
from daqlab.io._atomic import atomic_path
from daqlab.io._codec import attrs_to_json, dumps, to_hdf5_attrs
from daqlab.io._records import (
    SCHEMA_ATTR,
    channel_record,
)
from daqlab.io._seed_read import (
    EPOCH_UNITS_NS,
    EPOCH_UNITS_S,
    NOTE_ATTR,
    ORDER_ATTR,
    RAW_ATTR,
    RESERVED,
    VAR_ATTRS_ATTR,
    VERSION_ATTR,
    read_seed,
)
from daqlab.model import Quality
from daqlab.run import (
    CHANNEL_COORDS,
    SCHEMA_VERSION,
    channels_of,
    chunk_samples,
    validate,
)

__all__ = ["is_seed_file", "is_seed_hdf5", "open_seed", "save_seed"]

_LIBVER = ("earliest", "v110")  # readable by Debian's netCDF-C / HDF5 tools (FACTS.md)
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
# --------------------------------------------------------------------------- attributes


def _encode_attrs(attrs: Mapping[Any, Any]) -> dict[str, Any]:
    """The run's attributes as HDF5 attribute values, plus the note that decodes them."""
    reserved = sorted(set(attrs) & RESERVED)
    if reserved:
        raise ConfigurationError(
            f"attribute {reserved[0]!r} is reserved by the seed HDF5 layout; rename it."
        )
    out, types = to_hdf5_attrs(attrs)
    out[VERSION_ATTR] = __version__
    out[SCHEMA_ATTR] = np.int32(SCHEMA_VERSION)
    out[NOTE_ATTR] = dumps({"types": types})
    return out


# --------------------------------------------------------------------------- writing


def _variable_attrs(run: xr.Dataset) -> str:
    return dumps({str(name): attrs_to_json(var.attrs, f"variable {name!r}")
                  for name, var in run.variables.items() if var.attrs})


def _channel_attrs(record: dict[str, Any]) -> dict[str, Any]:
    """A channel record (see ``_schema``) as the attributes of its group: HDF5 has no null."""
    return {k: (math.nan if k.startswith("range") else "") if v is None else v
            for k, v in record.items() if k != "name"}


def _verify(tmp: Path, names: list[str], t_ns: NDArray[np.int64], raw: NDArray[np.float64]) -> None:
    """Reopen what was written; compare channels, lengths and the last samples."""
    problems: list[str] = []
    with h5py.File(tmp, "r") as f:
        data = f["data"]
        if sorted(data) != sorted(names):
            problems.append("channel groups differ")
        else:
            tail = slice(max(0, t_ns.size - 1024), None)
            for i, name in enumerate(names):
                g = data[name]
                if g["values"].shape != (t_ns.size,) or g["timestamps_ns"].shape != (t_ns.size,):
                    problems.append(f"length of channel {name!r} differs")
                elif not (np.array_equal(g["timestamps_ns"][tail], t_ns[tail])
                          and np.array_equal(g["values"][tail], raw[i, tail], equal_nan=True)):
                    problems.append(f"last samples of channel {name!r} differ")
    if problems:
        raise StorageError(
            errno.EIO, f"check of the file written for {tmp.name} failed ({'; '.join(problems)}); "
            "it was not renamed into place."
        )


def save_seed(run: xr.Dataset, path: Path, *, overwrite: bool = False) -> Path:
    """Write ``run`` in the seed's HDF5 layout (docs/formats/seed-hdf5.md); return ``path``.

    Written under a hidden temporary name, checked, then renamed into place; an
    existing file is kept unless ``overwrite=True``.

    >>> import tempfile, pathlib, daqlab as dl
    >>> run = dl.make_run([[1.0, np.nan]], [dl.Channel("T (°C)", "degC")], sample_rate=10.0,
    ...                   start="2024-01-01T00:00:00.000000001Z")
    >>> with tempfile.TemporaryDirectory() as d:
    ...     p = save_seed(run, pathlib.Path(d) / "run.h5")
    ...     back = open_seed(p)
    >>> back.identical(run), str(back.time.values[0])
    (True, '2024-01-01T00:00:00.000000001')
    """
    path = Path(path)
    validate(run)
    extra = sorted(set(map(str, run.coords)) - {"channel", "time", *CHANNEL_COORDS})
    if extra:
        raise ConfigurationError(
            f"the seed HDF5 layout stores only the run schema's coordinates; this run also has "
            f"{extra}. Drop them first (run.drop_vars({extra!r})) or save as NetCDF."
        )
    run = run.compute()
    calibrated = bool(run.attrs["calibrated"])
    has_raw = calibrated and "raw" in run.data_vars
    chans = channels_of(run)
    names = [c.name for c in chans]
    t_ns = np.ascontiguousarray(run["time"].values).view(np.int64)
    t_s = t_ns / 1e9
    value = np.asarray(run["value"].values, dtype=np.float64)
    quality = np.asarray(run["quality"].values, dtype=np.int8)
    if not calibrated:
        raw = value
    elif has_raw:
        raw = np.asarray(run["raw"].values, dtype=np.float64)
    else:
        slope = run["cal_slope"].values[:, np.newaxis]
        offset = run["cal_offset"].values[:, np.newaxis]
        with np.errstate(all="ignore"):
            raw = (value - offset) / slope
    meta = _encode_attrs(run.attrs)
    meta[RAW_ATTR] = np.int8(has_raw)
    meta[VAR_ATTRS_ATTR] = _variable_attrs(run)
    flag_values = np.array([int(q) for q in Quality], dtype=np.int8)
    # per channel and sample: value, raw/physical, float and int64 times, quality
    estimate = value.size * (8 * 4 + 1 + (8 if calibrated else 0))
    with atomic_path(path, overwrite=overwrite, expected_bytes=estimate) as tmp:
        with h5py.File(tmp, "w", libver=_LIBVER) as f:
            data = f.create_group("data", track_order=True)
            data.attrs[ORDER_ATTR] = dumps(names)
            for i, ch in enumerate(chans):
                g = data.create_group(ch.name)
                g.attrs.update(_channel_attrs(channel_record(ch, run["cal_date"].values[i])))
                ds = g.create_dataset("timestamps", data=t_s)
                ds.attrs["units"] = EPOCH_UNITS_S
                ds = g.create_dataset("timestamps_ns", data=t_ns)
                ds.attrs["units"] = EPOCH_UNITS_NS
                ds.attrs["comment"] = "exact timestamps; daqlab prefers them to the float seconds"
                ds = g.create_dataset("values", data=raw[i])
                ds.attrs["long_name"] = "raw sample value as acquired"
                ds = g.create_dataset("quality", data=quality[i])
                ds.attrs["flag_values"] = flag_values
                ds.attrs["flag_meanings"] = Quality.meanings()
                if calibrated:
                    ds = g.create_dataset("physical", data=value[i])
                    ds.attrs["long_name"] = "calibrated value: cal_slope * values + cal_offset"
                    ds.attrs["units"] = ch.unit
            md = f.create_group("metadata")
            for k, v in meta.items():
                md.attrs[k] = v
        _verify(tmp, names, t_ns, raw)
    return path


# --------------------------------------------------------------------------- open


def open_seed(path: Path, chunks: Any = None) -> xr.Dataset:
    """Open a file in the seed's HDF5 layout as a run (rules in docs/formats/seed-hdf5.md).

    The samples are read into memory; ``chunks`` (as in xarray) then returns the
    run chunked with dask.
    """
    path = Path(path)
    if not path.exists():
        raise StorageError(errno.ENOENT, f"{path} does not exist; check the path (cwd is {Path.cwd()}).")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise FormatError(
            f"{path} could not be read as HDF5 (seed layout): it is not an HDF5 file, or it is "
            f"truncated or damaged ({exc})."
        ) from exc
    try:
        with f:
            run = read_seed(f, path)
    except DaqlabError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError, IndexError, OverflowError) as exc:
        raise FormatError(
            f"{path} could not be read as a seed HDF5 run; it is truncated or damaged "
            f"({type(exc).__name__}: {exc})."
        ) from exc
    return chunk_samples(run, chunks)


def is_seed_hdf5(f: h5py.File) -> bool:
    """Whether the open HDF5 file ``f`` is for the seed reader: in the seed's layout
    (:func:`is_seed_file`), or a file with a ``/data`` group that is not netCDF-4 (no
    ``_NCProperties``), meant to be in it but damaged (:func:`open_seed` then says what is
    wrong). Never raises."""
    try:
        if SCHEMA_ATTR in f.attrs or not isinstance(f.get("data"), h5py.Group):
            return False
        return "_NCProperties" not in f.attrs or _seed_layout(f)
    except Exception:
        return False


def is_seed_file(path: Path) -> bool:
    """True for an HDF5 file in the seed's layout; never raises.

    That is: a ``/data`` group whose members are all channel groups holding
    ``values`` and ``timestamps`` (or ``timestamps_ns``) datasets (an empty
    ``/data`` counts when a ``/metadata`` is there too), and not a daqlab
    NetCDF run (root attribute ``daqlab_schema_version``).
    """
    try:
        p = Path(path)
        if not p.is_file():
            return False
        with p.open("rb") as fh:
            head = fh.read(8)
        if head != _HDF5_MAGIC and not h5py.is_hdf5(p):
            return False
        with h5py.File(p, "r") as f:
            return SCHEMA_ATTR not in f.attrs and _seed_layout(f)
    except Exception:
        return False


def _seed_layout(f: h5py.File) -> bool:
    """Whether ``f`` has the seed's ``/data`` layout (see :func:`is_seed_file`)."""
    data = f.get("data")
    if not isinstance(data, h5py.Group):
        return False
    names = list(data)
    if not names:
        return f.get("metadata") is not None
    for name in names:
        g = data.get(name)
        if not isinstance(g, h5py.Group) or not isinstance(g.get("values"), h5py.Dataset):
            return False
        if not any(isinstance(g.get(k), h5py.Dataset) for k in ("timestamps", "timestamps_ns")):
            return False
    return True
