"""Reading the seed's HDF5 layout (see :mod:`daqlab.io._seed`): its names, the channels and
their time axes (aligned, gaps flagged BAD), and the run attributes of daqlab's own files or,
for the Rust application's, their defaults. The rules: docs/formats/seed-hdf5.md.
"""

from __future__ import annotations

import itertools
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import xarray as xr
from numpy.typing import NDArray

from daqlab.errors import FormatError, SchemaError
from daqlab.io._codec import from_hdf5_attrs, from_json, note_types
from daqlab.io._foreign import foreign_defaults
from daqlab.io._records import (
    SCHEMA_ATTR,
    channel_from_record,
    check_schema_version,
    parse_time,
)
from daqlab.model import Channel, Quality, check_channel_name
from daqlab.run import (
    assemble_run,
    check_metadata,
    check_sample_rate,
    flag_quality,
    iso_utc,
    validate,
)

__all__ = ["CHANNEL_ATTRS", "EPOCH_UNITS_NS", "EPOCH_UNITS_S", "NOTE_ATTR", "ORDER_ATTR", "RAW_ATTR",
           "RESERVED", "VAR_ATTRS_ATTR", "VERSION_ATTR", "read_seed"]

VERSION_ATTR = "daqlab_version"
NOTE_ATTR = "daqlab_attrs"
VAR_ATTRS_ATTR = "daqlab_variable_attrs"
RAW_ATTR = "daqlab_raw_variable"
ORDER_ATTR = "daqlab_channels"
RESERVED = {SCHEMA_ATTR, VERSION_ATTR, NOTE_ATTR, VAR_ATTRS_ATTR, RAW_ATTR}
CHANNEL_ATTRS = ("range_min", "range_max", "cal_slope", "cal_offset", "cal_date")
EPOCH_UNITS_S = "seconds since 1970-01-01T00:00:00Z"
EPOCH_UNITS_NS = "nanoseconds since 1970-01-01T00:00:00Z"
_MAX_SECONDS = 9.2e9  # |t| beyond this does not fit datetime64[ns]
_STALE_TOLERANCE_S = 1e-6
_SURROGATE = re.compile("[\ud800-\udfff]")

_ALIASES: dict[str, tuple[str, ...]] = {
    "id": ("id", "uuid", "run_id"),
    "name": ("name",),
    "description": ("description",),
    "created_at": ("created_at", "created", "start_time"),
    "sample_rate": ("sample_rate", "sample_rate_hz", "sampling_rate", "rate", "fs"),
}


def _loads_or(text: str, default: Any) -> Any:
    """``text`` parsed as JSON, or ``default`` when it is not JSON (files from elsewhere
    store plain text where daqlab stores JSON)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return default


# --------------------------------------------------------------------------- reading helpers


def _py(v: Any) -> Any:
    """An HDF5 attribute or dataset value as plain JSON-like Python values."""
    if isinstance(v, (bytes, np.bytes_)):  # as h5py decodes text attributes: nothing lost
        return bytes(v).decode("utf-8", errors="surrogateescape")
    if isinstance(v, str):
        return str(v)
    if isinstance(v, Mapping):  # a subgroup, read by _read_group
        return {str(k): _py(x) for k, x in v.items()}
    if isinstance(v, np.ndarray):
        if v.ndim == 0:
            return _py(v[()])
        return [_py(x) for x in v.tolist()]
    if isinstance(v, (list, tuple)):
        return [_py(x) for x in v]
    if isinstance(v, (np.bool_, bool)):
        return bool(v)
    if isinstance(v, (np.integer, int)):
        return int(v)
    if isinstance(v, (np.floating, float)):
        return float(v)
    if isinstance(v, h5py.Empty) or v is None:
        return None
    return str(v)


def _read_group(g: Any) -> dict[str, Any]:
    """Attributes, then datasets and subgroups (as dicts) of an HDF5 group, raw values.

    A dataset or subgroup named like an attribute of the group is kept as ``"<name> (dataset)"``
    or ``"<name> (group)"`` (HDF5 allows both; a dict holds one)."""
    out: dict[str, Any] = {}
    for k in g.attrs:
        try:
            out[k] = g.attrs[k]
        except (OSError, TypeError, ValueError) as exc:
            out[k] = f"<unreadable attribute: {exc}>"
    for k in g:
        obj = g.get(k)
        kind = "group" if isinstance(obj, h5py.Group) else "dataset"
        key = k if k not in out else next(
            name for n in itertools.count(1)
            if (name := f"{k} ({kind})" + (f" {n}" if n > 1 else "")) not in out)
        if isinstance(obj, h5py.Group):
            out[key] = _py(_read_group(obj))
        elif isinstance(obj, h5py.Dataset):
            try:
                out[key] = obj[()]
            except (OSError, TypeError, ValueError) as exc:
                out[key] = f"<unreadable dataset: {exc}>"
    return out


def _read_metadata(f: Any, path: Path) -> dict[str, Any]:
    obj = f.get("metadata")
    if obj is None:
        return {}
    if isinstance(obj, h5py.Group):
        return _read_group(obj)
    if isinstance(obj, h5py.Dataset):  # e.g. one JSON text
        value = _py(obj[()])
        if isinstance(value, str):
            loaded = _loads_or(value, None)
            if isinstance(loaded, dict):
                return loaded
        return {"metadata": value}
    raise FormatError(f"{path}: /metadata is neither a group nor a dataset.")


@dataclass
class _Chan:
    name: str
    times: NDArray[np.int64]
    values: NDArray[np.float64]
    quality: NDArray[np.int8] | None
    physical: NDArray[np.float64] | None
    attrs: dict[str, Any]
    values_attrs: dict[str, Any]


def _read_1d(g: Any, key: str, where: str, kinds: str) -> NDArray[Any]:
    obj = g.get(key)
    if not isinstance(obj, h5py.Dataset):
        raise FormatError(f"{where}: {key!r} is not a dataset.")
    if obj.shape is None or len(obj.shape) != 1:
        raise FormatError(f"{where}: {key!r} must be a 1-D dataset; has shape {obj.shape}.")
    if obj.dtype.kind not in kinds:
        wanted = "integers" if set(kinds) <= set("iu") else "numbers"
        raise FormatError(f"{where}: {key!r} holds {obj.dtype}; daqlab reads {wanted} there.")
    arr: NDArray[Any] = np.asarray(obj[()])
    return arr


_EXACT_FLOAT_INT = 2**53  # float64 holds every integer up to this magnitude, not all beyond


def _as_float64(arr: NDArray[Any], where: str, key: str) -> NDArray[np.float64]:
    """``arr`` as float64, refusing what would be rounded: 64-bit integers beyond 2**53 and
    floats wider than float64 (narrower numbers convert exactly)."""
    out = arr.astype(np.float64)
    if arr.dtype.kind in "iu" and arr.dtype.itemsize == 8 and arr.size:
        big = max(abs(int(arr.min())), abs(int(arr.max())))  # Python ints: exact
        if big > _EXACT_FLOAT_INT:
            raise FormatError(
                f"{where}: {key!r} holds {arr.dtype} integers up to {big} in magnitude; a run's "
                f"values are float64, which holds integers exactly only up to 2**53 "
                f"({_EXACT_FLOAT_INT}), so opening it would round them. Read the dataset with h5py "
                "and scale or offset it into that range (or store it as float64), then build the "
                "run with daqlab.make_run(...)."
            )
    elif arr.dtype.kind == "f" and arr.dtype.itemsize > 8 and not np.array_equal(
            out.astype(arr.dtype), arr, equal_nan=True):
        raise FormatError(
            f"{where}: {key!r} holds {arr.dtype} values that float64 (a run's values) cannot hold "
            "exactly; opening it would round them. Read the dataset with h5py and convert it as "
            "you see fit, then build the run with daqlab.make_run(...)."
        )
    return out


def _seconds_to_ns(t: NDArray[Any], where: str) -> NDArray[np.int64]:
    """Seconds since the epoch to int64 ns: floats rounded to the microsecond, ints exact."""
    if t.dtype.kind in "iu":
        bad = np.abs(t.astype(np.float64)) > _MAX_SECONDS
        if bad.any():
            i = int(np.argmax(bad))
            raise FormatError(
                f"{where}: timestamp {i} is {int(t[i])} s, outside datetime64[ns] (years 1678-2262)."
            )
        return t.astype(np.int64) * np.int64(1_000_000_000)
    tf = t.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        bad = ~np.isfinite(tf) | (np.abs(tf) > _MAX_SECONDS)
    if bad.any():
        i = int(np.argmax(bad))
        raise FormatError(
            f"{where}: timestamp {i} is {float(tf[i])!r} s ({int(bad.sum())} bad in all); timestamps must be "
            "finite seconds since 1970-01-01 within datetime64[ns] (years 1678-2262)."
        )
    micro = np.rint(tf * 1e6).astype(np.int64)
    return micro * np.int64(1000)


def _exact_ns(t: NDArray[Any], where: str) -> NDArray[np.int64]:
    if t.dtype.kind == "u" and t.size and t.max() > np.iinfo(np.int64).max:
        raise FormatError(f"{where}: 'timestamps_ns' holds values beyond int64.")
    out = t.astype(np.int64)
    if (out == np.iinfo(np.int64).min).any():
        raise FormatError(f"{where}: 'timestamps_ns' holds NaT (-2**63).")
    return out


def _read_channel(data: Any, name: str, path: Path) -> _Chan:
    where = f"{path}: channel {name!r} (/data/{name})"
    try:
        check_channel_name(name)
    except ValueError as exc:
        raise FormatError(f"{path}: channel {name!r} cannot be used: {exc}") from None
    g = data.get(name)
    if not isinstance(g, h5py.Group):
        kind = type(g).__name__ if g is not None else "broken link"
        raise FormatError(
            f"{where} is a {kind}, not a channel group holding 'timestamps' and 'values'."
        )
    if "values" not in g:
        raise FormatError(f"{where} has no 'values' dataset; it has {sorted(g)}.")
    if "timestamps" not in g and "timestamps_ns" not in g:
        raise FormatError(f"{where} has no 'timestamps' dataset; it has {sorted(g)}.")
    values = _as_float64(_read_1d(g, "values", where, "biuf"), where, "values")
    t_float = _read_1d(g, "timestamps", where, "iuf") if "timestamps" in g else None
    t_exact = (_exact_ns(_read_1d(g, "timestamps_ns", where, "iu"), where)
               if "timestamps_ns" in g else None)
    times: NDArray[np.int64]
    if t_exact is not None and (t_float is None or _agrees(t_float, t_exact)):
        times = t_exact
    else:
        assert t_float is not None
        times = _seconds_to_ns(t_float, where)
    n = values.shape[0]
    if times.shape[0] != n:
        raise FormatError(
            f"{where} has {times.shape[0]} timestamps but {n} values; every sample needs exactly "
            "one timestamp. The file is truncated or damaged."
        )
    quality: NDArray[np.int8] | None = None
    if "quality" in g:
        q = _read_1d(g, "quality", where, "iu")
        if q.shape[0] != n:
            raise FormatError(f"{where} has {q.shape[0]} quality flags but {n} values.")
        allowed = [int(x) for x in Quality]
        if q.size and not np.isin(q, allowed).all():
            found = sorted(set(np.unique(q).tolist()) - set(allowed))[:5]
            raise FormatError(f"{where}: quality holds {found}, outside {allowed} (daqlab.Quality).")
        quality = q.astype(np.int8)
    physical: NDArray[np.float64] | None = None
    if "physical" in g:
        physical = _as_float64(_read_1d(g, "physical", where, "biuf"), where, "physical")
        if physical.shape[0] != n:
            raise FormatError(f"{where} has {physical.shape[0]} physical values but {n} values.")
    if n > 1 and (np.diff(times) < 0).any():
        order = np.argsort(times, kind="stable")
        times, values = times[order], values[order]
        quality = None if quality is None else quality[order]
        physical = None if physical is None else physical[order]
    attrs = {k: _py(v) for k, v in _read_group_attrs(g).items()}
    values_attrs = {k: _py(v) for k, v in _read_group_attrs(g["values"]).items()}
    return _Chan(name, times, values, quality, physical, attrs, values_attrs)


def _read_group_attrs(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k in obj.attrs:
        try:
            out[k] = obj.attrs[k]
        except (OSError, TypeError, ValueError):
            continue
    return out


def _agrees(t_float: NDArray[Any], t_exact: NDArray[np.int64]) -> bool:
    """True when the exact ns copy still describes the float seconds (not stale)."""
    if t_float.shape != t_exact.shape:
        return False
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(t_float.astype(np.float64) - t_exact / 1e9)
    return bool(np.all(diff <= _STALE_TOLERANCE_S))


def _channel_order(data: Any, path: Path) -> list[str]:
    names = [str(k) for k in data]
    stored = data.attrs.get(ORDER_ATTR)
    if stored is not None:
        try:
            order = json.loads(_py(stored))
        except (json.JSONDecodeError, TypeError):
            order = None
        if isinstance(order, list) and sorted(map(str, order)) == sorted(names):
            return [str(n) for n in order]
    return names


# --------------------------------------------------------------------------- alignment


def _union_axis(times: Sequence[NDArray[np.int64]]) -> NDArray[np.int64]:
    """Sorted union of sorted timestamp arrays; a value repeated k times in one channel appears k times."""
    uniq, counts = [], []
    for t in times:
        u, c = np.unique(t, return_counts=True)
        uniq.append(u)
        counts.append(c)
    allu = np.concatenate(uniq) if uniq else np.empty(0, np.int64)
    allc = np.concatenate(counts) if counts else np.empty(0, np.int64)
    if allu.size == 0:
        return np.empty(0, dtype=np.int64)
    order = np.argsort(allu, kind="stable")
    allu, allc = allu[order], allc[order]
    starts = np.flatnonzero(np.r_[True, allu[1:] != allu[:-1]])
    return np.repeat(allu[starts], np.maximum.reduceat(allc, starts)).astype(np.int64)


def _positions(axis: NDArray[np.int64], t: NDArray[np.int64]) -> NDArray[np.intp]:
    """Index in ``axis`` of each sample of sorted ``t`` (the k-th repeat to the k-th slot)."""
    occurrence = np.arange(t.size) - np.searchsorted(t, t, side="left")
    pos: NDArray[np.intp] = np.searchsorted(axis, t, side="left") + occurrence
    return pos


def _common_axis(chans: list[_Chan]) -> tuple[NDArray[np.int64], bool]:
    """The run's time axis, and whether every channel has exactly that axis."""
    same = bool(chans) and all(np.array_equal(ch.times, chans[0].times) for ch in chans[1:])
    return (chans[0].times if same else _union_axis([ch.times for ch in chans])), same


def _fill(
    chans: list[_Chan], axis: NDArray[np.int64], same: bool, calibrated: bool
) -> tuple[NDArray[np.float64], NDArray[np.float64] | None, NDArray[np.int8], NDArray[np.bool_]]:
    """Values (physical when calibrated), raw, quality and which channels had stored quality.

    Positions a channel has no sample for stay NaN, flagged BAD.
    """
    c, n = len(chans), axis.size
    value = np.full((c, n), np.nan)
    raw = np.full((c, n), np.nan) if calibrated else None
    quality = np.full((c, n), np.int8(Quality.BAD), dtype=np.int8)
    stored = np.array([ch.quality is not None for ch in chans], dtype=bool)
    for i, ch in enumerate(chans):
        pos: slice | NDArray[np.intp] = slice(None) if same else _positions(axis, ch.times)
        if calibrated:
            assert raw is not None
            assert ch.physical is not None
            value[i, pos] = ch.physical
            raw[i, pos] = ch.values
        else:
            value[i, pos] = ch.values
        quality[i, pos] = ch.quality if ch.quality is not None else np.int8(Quality.GOOD)
    return value, raw, quality, stored


# --------------------------------------------------------------------------- attributes on read


def _as_uuid(v: Any) -> str | None:
    if not isinstance(v, str):
        return None
    try:
        return str(uuid.UUID(v))
    except ValueError:
        return None


def _use(key: str, v: Any) -> Any:
    """A /metadata value for run attribute ``key``, or None when it cannot be used."""
    if key in ("name", "description"):
        return v if isinstance(v, str) else (str(v) if isinstance(v, (int, float)) else None)
    if key == "created_at":
        t = parse_time(v)
        return None if t is None else iso_utc(t)
    if key == "sample_rate":
        try:
            return check_sample_rate(v)
        except ValueError:
            return None
    if key == "id":
        return _as_uuid(v)
    raise KeyError(key)


def _foreign_attrs(meta_raw: dict[str, Any], path: Path, times: list[NDArray[np.int64]]
                   ) -> tuple[dict[str, Any], Any]:
    """Run attributes of a file daqlab did not write; also returns the /metadata units entry."""
    meta = {k: _py(v) for k, v in meta_raw.items()}
    given: dict[str, Any] = {}
    for key, aliases in _ALIASES.items():
        for alias in aliases:
            if alias in meta:
                used = _use(key, meta[alias])
                if used is not None:
                    given[key] = used
                    del meta[alias]
                    break
    units = None
    for k in ("units", "unit"):
        if k in meta:
            units = meta.pop(k)
            break
    inner = meta.get("metadata")
    if isinstance(inner, str):
        loaded = _loads_or(inner, None)
        if isinstance(loaded, dict):
            del meta["metadata"]
            meta = {**{str(k): v for k, v in loaded.items()}, **meta}
    try:
        given["metadata"] = check_metadata(meta)
    except ValueError as exc:
        raise FormatError(f"{path}: /metadata cannot be kept as run metadata: {exc}") from None
    given["calibrated"] = False
    return foreign_defaults(path, times, given), units


def _daqlab_attrs(meta_raw: dict[str, Any], path: Path, times: list[NDArray[np.int64]]
                  ) -> tuple[dict[str, Any], bool]:
    """Run attributes of a file save_seed wrote: decoded; what is missing filled in."""
    stored = dict(meta_raw)
    for k in (SCHEMA_ATTR, VERSION_ATTR, VAR_ATTRS_ATTR):
        stored.pop(k, None)
    has_raw = bool(_py(stored.pop(RAW_ATTR, 0)))
    try:
        types = note_types(json.loads(_py(stored.pop(NOTE_ATTR, "{}"))))
    except (json.JSONDecodeError, TypeError, AttributeError) as exc:
        raise FormatError(
            f"{path}: /metadata attribute {NOTE_ATTR!r} is not a valid note ({exc})."
        ) from None
    try:
        attrs = from_hdf5_attrs(stored, types)
    except ValueError as exc:
        raise FormatError(
            f"{path}: /metadata {exc}; the file was damaged or edited by another tool."
        ) from None
    return foreign_defaults(path, times, attrs), has_raw


# --------------------------------------------------------------------------- channels on read


def _valid_text(text: str) -> str:
    """``text`` with the bytes h5py could not decode as UTF-8 (U+DC80-U+DCFF) read as Latin-1.

    For units: a run's coordinates hold only valid text. Other lone surrogates become U+FFFD.
    """
    return _SURROGATE.sub(
        lambda m: chr(ord(m[0]) - 0xDC00) if "\udc80" <= m[0] <= "\udcff" else "\ufffd", text)


def _channel(ch: _Chan, units: Any, path: Path) -> Channel:
    unit: Any = ""
    for source in (ch.attrs, ch.values_attrs):
        found = [source[k] for k in ("unit", "units") if k in source]
        if found:
            unit = found[0]
            break
    else:
        if isinstance(units, str):
            units = _loads_or(units, units)
        if isinstance(units, str):
            unit = units
        elif isinstance(units, dict) and isinstance(units.get(ch.name), str):
            unit = units[ch.name]
    unit = _valid_text(unit) if isinstance(unit, str) else str(unit)
    record = {k: ch.attrs[k] for k in CHANNEL_ATTRS if k in ch.attrs}
    try:
        return channel_from_record({**record, "name": ch.name, "unit": unit})
    except (ValueError, TypeError) as exc:
        raise FormatError(f"{path}: channel {ch.name!r} cannot be used: {exc}") from None


def read_seed(f: Any, path: Path) -> xr.Dataset:
    data = f.get("data")
    if not isinstance(data, h5py.Group):
        hint = (" It is a daqlab NetCDF run: open it with daqlab.open_run."
                if SCHEMA_ATTR in f.attrs else "")
        raise FormatError(
            f"{path} has no /data group, so it is not in the seed HDF5 layout "
            f"(/data/<channel>/timestamps and values).{hint}"
        )
    meta_raw = _read_metadata(f, path)
    is_daqlab = SCHEMA_ATTR in meta_raw
    if is_daqlab:
        check_schema_version(meta_raw[SCHEMA_ATTR], source=path, where=f"{path}: /metadata",
                             written_by=_py(meta_raw.get(VERSION_ATTR)))
    chans = [_read_channel(data, name, path) for name in _channel_order(data, path)]
    axis, same = _common_axis(chans)
    times = [ch.times for ch in chans]
    if is_daqlab:
        attrs, has_raw = _daqlab_attrs(meta_raw, path, times)
        units = None
    else:
        attrs, units = _foreign_attrs(meta_raw, path, times)
        has_raw = False
    calibrated = isinstance(attrs["calibrated"], (bool, np.bool_)) and bool(attrs["calibrated"])
    if calibrated:
        missing = [ch.name for ch in chans if ch.physical is None]
        if missing:
            raise FormatError(
                f"{path}: the run is calibrated but channel(s) {missing[:5]} have no 'physical' dataset."
            )
    value, raw, quality, stored = _fill(chans, axis, same, calibrated)
    channels = tuple(_channel(ch, units, path) for ch in chans)
    flagged = ~stored
    if flagged.any():
        idx = np.flatnonzero(flagged)
        quality[idx] = flag_quality(value[idx], [channels[i] for i in idx], calibrated=calibrated,
                                    quality=quality[idx])
    quality[~np.isfinite(value) & (quality == Quality.GOOD)] = Quality.BAD
    run = assemble_run(value, quality, axis.view("datetime64[ns]"), channels, attrs)
    if calibrated and has_raw:
        assert raw is not None
        run["raw"] = (("channel", "time"), raw, {
            "long_name": "raw sample value as acquired",
            "comment": "kept by daqlab.calibrate so that uncalibrate is exact",
        })
    if is_daqlab and VAR_ATTRS_ATTR in meta_raw:
        try:
            var_attrs = from_json(json.loads(_py(meta_raw[VAR_ATTRS_ATTR])))
            for name, var in run.variables.items():
                var.attrs = dict(var_attrs.get(str(name), {}))
        except (TypeError, ValueError, KeyError, IndexError, AttributeError, ArithmeticError) as exc:
            raise FormatError(f"{path}: /metadata {VAR_ATTRS_ATTR} is not valid ({exc}).") from None
    try:
        return validate(run)
    except SchemaError as exc:
        raise FormatError(f"{path} does not hold a valid run: {exc}") from None


