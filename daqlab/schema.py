"""What a run must be: the schema's constants and :func:`validate`.

See ``shared/DESIGN.md`` ("One shape everywhere: the run"). :mod:`daqlab.run`
builds runs and re-exports these names.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from numpy.typing import NDArray

from daqlab.checks import as_float, is_real, shown
from daqlab.errors import ConfigurationError, SchemaError
from daqlab.model import Quality, check_channel_name, is_utf8, to_datetime64

__all__ = [
    "CHANNEL_COORDS",
    "QUALITY_ATTRS",
    "RUN_ATTRS",
    "SCHEMA_VERSION",
    "check_metadata",
    "check_sample_rate",
    "validate",
]

SCHEMA_VERSION = 2
"""Version of the run schema; files record it, and newer ones are refused.

2: attributes through one codec (daqlab/io/_codec.py: tagged values, strict JSON in the CSV
sidecar and the recording manifest); daqlab 0.1.0 (version 1) would misread them, so it
refuses these files. Files of version 1 still open."""

CHANNEL_COORDS = ("unit", "range_min", "range_max", "cal_slope", "cal_offset", "cal_date")
"""Per-channel coordinates every run carries, besides ``channel`` itself."""

QUALITY_ATTRS: dict[str, Any] = {
    "long_name": "sample quality flag",
    "flag_values": np.array([q.value for q in Quality], dtype=np.int8),
    "flag_meanings": Quality.meanings(),
}
"""CF attributes of the ``quality`` variable."""

RUN_ATTRS = ("id", "name", "description", "created_at", "sample_rate", "metadata", "calibrated")
"""The attributes every run has (DESIGN.md), in the order runs list them."""


def check_sample_rate(sample_rate: object) -> float:
    """Return ``sample_rate`` as a float if it is finite and > 0, else raise."""
    if not is_real(sample_rate):
        raise ConfigurationError(
            f"sample_rate must be a number of samples per second; got {sample_rate!r} "
            f"({type(sample_rate).__name__}). Pass e.g. sample_rate=1000.0."
        )
    rate = as_float(sample_rate)
    if not math.isfinite(rate) or rate <= 0:
        raise ConfigurationError(
            f"sample_rate must be finite and > 0 Hz; got {shown(sample_rate)}. Pass e.g. 1000.0."
        )
    return rate


def _non_str_keys(obj: object) -> list[object]:
    if isinstance(obj, Mapping):
        bad = [k for k in obj if not isinstance(k, str)]
        for v in obj.values():
            bad += _non_str_keys(v)
        return bad
    if isinstance(obj, (list, tuple)):
        return [k for v in obj for k in _non_str_keys(v)]
    return []


def check_metadata(metadata: object) -> dict[str, Any]:
    """Return a copy of ``metadata`` if it is a dict of JSON values with str keys."""
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise ConfigurationError(
            f"metadata must be a dict of JSON values; got {type(metadata).__name__}. "
            "Pass e.g. metadata={'operator': 'Ada'}."
        )
    bad_keys = _non_str_keys(metadata)
    if bad_keys:
        raise ConfigurationError(
            f"metadata keys must be str (JSON objects have text keys); got {bad_keys[:5]}. "
            "Convert them, e.g. {str(k): v for k, v in metadata.items()}."
        )
    try:
        text = json.dumps(dict(metadata), allow_nan=True)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(
            f"metadata must hold only JSON values (str keys; str, numbers, bool, None, "
            f"lists, dicts); {exc}. Convert other objects first, e.g. str(x) or x.tolist()."
        ) from None
    loaded: dict[str, Any] = json.loads(text)
    return loaded


# --------------------------------------------------------------------------- validate


def _is_str_array(arr: NDArray[Any]) -> bool:
    return arr.dtype.kind == "U" or (
        arr.dtype.kind == "O" and all(isinstance(x, str) for x in arr.tolist())
    )


def _check_coords(run: xr.Dataset, problems: list[str]) -> None:
    if "channel" not in run.coords:
        problems.append("coordinate 'channel' is missing.")
    else:
        names = run["channel"].values
        if not _is_str_array(names):
            problems.append(f"coordinate 'channel' must hold str; has dtype {names.dtype}.")
        else:
            listed = names.tolist()
            dups = sorted({n for n in listed if listed.count(n) > 1})
            if dups:
                problems.append(f"channel names must be unique; duplicated: {dups}.")
            for n in dict.fromkeys(listed):
                try:
                    check_channel_name(n)
                except ValueError as exc:
                    problems.append(str(exc))
    if "time" not in run.coords:
        problems.append("coordinate 'time' is missing.")
    else:
        t = run["time"].values
        if t.dtype != np.dtype("datetime64[ns]"):
            problems.append(f"coordinate 'time' must be datetime64[ns] (UTC); has dtype {t.dtype}.")
        elif not _sorted_without_nat(run):
            nat = np.isnat(t)
            if nat.any():
                problems.append(f"coordinate 'time' holds {int(nat.sum())} NaT value(s).")
            ti = t[~nat].view(np.int64) if nat.any() else t.view(np.int64)
            steps = ti[1:] < ti[:-1]  # one pass, no temporary of differences
            if steps.any():
                problems.append(
                    f"coordinate 'time' must be non-decreasing; it steps back "
                    f"{int(steps.sum())} time(s), first after index {int(np.argmax(steps))}."
                )
    kinds = {"unit": "str", "range_min": "f", "range_max": "f", "cal_slope": "f",
             "cal_offset": "f", "cal_date": "M"}
    for coord, kind in kinds.items():
        if coord not in run.coords:
            problems.append(f"per-channel coordinate {coord!r} is missing.")
            continue
        var = run[coord]
        if var.dims != ("channel",):
            problems.append(f"coordinate {coord!r} must have dims ('channel',); has {var.dims}.")
            continue
        arr = var.values
        if kind == "str":
            if not _is_str_array(arr):
                problems.append(f"coordinate {coord!r} must hold str; has dtype {arr.dtype}.")
            elif bad_text := [str(u) for u in arr.tolist() if not is_utf8(str(u))]:
                problems.append(
                    f"coordinate {coord!r} holds {bad_text[:5]}, text with lone surrogates (decoded "
                    "from bytes that were not UTF-8), which no file format stores; decode the "
                    "bytes with their codec (e.g. .decode('latin-1')) and assign_coords again.")
        elif kind == "f" and arr.dtype != np.float64:
            problems.append(f"coordinate {coord!r} must be float64; has dtype {arr.dtype}.")
        elif kind == "M" and arr.dtype != np.dtype("datetime64[ns]"):
            problems.append(f"coordinate {coord!r} must be datetime64[ns]; has dtype {arr.dtype}.")
    if _float_per_channel(run, "range_min") and _float_per_channel(run, "range_max"):
        lo, hi = run["range_min"].values, run["range_max"].values
        with np.errstate(invalid="ignore"):
            bad = np.asarray(lo >= hi)
        for i in np.flatnonzero(bad):
            problems.append(
                f"channel {run['channel'].values[i]!r}: range_min {float(lo[i])} >= range_max "
                f"{float(hi[i])}; give min < max, or NaN for an open end."
            )
    if _float_per_channel(run, "cal_slope"):
        s = run["cal_slope"].values
        for i in np.flatnonzero(~np.isfinite(s) | (s == 0)):
            problems.append(
                f"channel {run['channel'].values[i]!r}: cal_slope must be finite and non-zero; "
                f"is {float(s[i])} (use 1.0 for no calibration)."
            )
    if _float_per_channel(run, "cal_offset"):
        o = run["cal_offset"].values
        for i in np.flatnonzero(~np.isfinite(o)):
            problems.append(
                f"channel {run['channel'].values[i]!r}: cal_offset must be finite; is {float(o[i])} "
                "(use 0.0 for no offset)."
            )


def _float_per_channel(run: xr.Dataset, coord: str) -> bool:
    """Whether ``coord`` is a float64 per-channel coordinate, so its values can be checked
    (its wrong kind or shape was reported already)."""
    return coord in run.coords and run[coord].dims == ("channel",) and run[coord].dtype == np.float64


def _sorted_without_nat(run: xr.Dataset) -> bool:
    """Whether the time index is sorted and has no NaT, by pandas, which caches both answers."""
    index = run.indexes.get("time")
    return bool(isinstance(index, pd.DatetimeIndex) and not index.hasnans and index.is_monotonic_increasing)


def _check_vars(run: xr.Dataset, problems: list[str], check_data: bool) -> None:
    before = len(problems)
    expected = {"value": np.dtype(np.float64), "quality": np.dtype(np.int8)}
    if run.attrs.get("calibrated") is True and "raw" in run.data_vars:
        expected["raw"] = np.dtype(np.float64)
    for var, dtype in expected.items():
        if var not in run.data_vars:
            problems.append(f"data variable {var!r} is missing.")
            continue
        da = run[var]
        if da.dims != ("channel", "time"):
            problems.append(f"data variable {var!r} must have dims ('channel', 'time'); has {da.dims}.")
        if da.dtype != dtype:
            problems.append(f"data variable {var!r} must be {dtype}; has dtype {da.dtype}.")
    extra = sorted(set(map(str, run.data_vars)) - set(expected))
    if extra:
        problems.append(
            f"unexpected data variable(s) {extra}; a run holds only 'value' and 'quality' "
            "(and 'raw' once calibrated). Keep other results in another Dataset."
        )
    if not check_data or len(problems) > before or "channel" not in run.coords:
        return  # the data checks need value and quality as the schema has them
    q = np.asarray(run["quality"].values)
    v = np.asarray(run["value"].values)
    allowed = np.array([int(x) for x in Quality], dtype=np.int8)
    if q.size and not np.isin(q, allowed).all():
        found = sorted(set(np.unique(q).tolist()) - set(allowed.tolist()))
        problems.append(f"quality holds values {found[:5]} outside {allowed.tolist()} (daqlab.Quality).")
    hidden = ~np.isfinite(v) & (q == Quality.GOOD)
    for i in np.flatnonzero(hidden.any(axis=1)):
        problems.append(
            f"channel {run['channel'].values[i]!r}: {int(hidden[i].sum())} NaN/inf value(s) are "
            "flagged GOOD; non-finite values must be flagged (BAD)."
        )


def _check_attrs(run: xr.Dataset, problems: list[str]) -> None:
    a = run.attrs
    missing = [k for k in RUN_ATTRS if k not in a]
    if missing:
        problems.append(f"attribute(s) {missing} missing.")
    if "id" in a:
        try:
            uuid.UUID(str(a["id"]))
        except ValueError:
            problems.append(f"attribute 'id' must be a UUID; is {a['id']!r}.")
    for k in ("name", "description"):
        if k in a and not isinstance(a[k], str):
            problems.append(f"attribute {k!r} must be a str; is {type(a[k]).__name__}.")
    if "created_at" in a:
        try:
            to_datetime64(a["created_at"])
            if not isinstance(a["created_at"], str):
                raise ValueError
        except ValueError:
            problems.append(f"attribute 'created_at' must be ISO 8601 UTC text; is {a['created_at']!r}.")
    if "sample_rate" in a:
        try:
            check_sample_rate(a["sample_rate"])
        except ValueError as exc:
            problems.append(f"attribute {exc}")
    if "metadata" in a:
        try:
            check_metadata(a["metadata"])
        except ValueError as exc:
            problems.append(f"attribute {exc}")
    if "calibrated" in a and not isinstance(a["calibrated"], (bool, np.bool_)):
        problems.append(f"attribute 'calibrated' must be a bool; is {a['calibrated']!r}.")
    if a.get("calibrated") is not True and "raw" in run.data_vars:
        problems.append("data variable 'raw' is only allowed on a calibrated run.")


def validate(run: object, *, check_data: bool = True) -> xr.Dataset:
    """Check that ``run`` follows the run schema; return it unchanged, or raise.

    Every problem found is reported at once in one :class:`~daqlab.SchemaError`
    (its ``problems`` attribute lists them). ``check_data=False`` skips the
    checks that read sample values (useful on large lazy runs).

    >>> run = dl.make_run([[1.0]], ["a"], sample_rate=1.0)
    >>> validate(run) is run
    True
    >>> validate(run.drop_vars("quality").assign_attrs(sample_rate=-1.0))
    Traceback (most recent call last):
    ...
    daqlab.errors.SchemaError: this run does not follow the daqlab run schema (2 problems):
      - data variable 'quality' is missing.
      - attribute sample_rate must be finite and > 0 Hz; got -1.0. Pass e.g. 1000.0.
    Build runs with daqlab.make_run(...) or fix the items above.
    """
    if not isinstance(run, xr.Dataset):
        raise SchemaError(
            [f"a run must be an xarray.Dataset; got {type(run).__name__}. "
             "Build one with daqlab.make_run(values, channels, sample_rate=...)."]
        )
    problems: list[str] = []
    dims = dict(run.sizes)
    if set(dims) != {"channel", "time"}:
        problems.append(f"dimensions must be exactly ('channel', 'time'); are {tuple(dims)}.")
    _check_coords(run, problems)
    _check_vars(run, problems, check_data)
    _check_attrs(run, problems)
    if problems:
        raise SchemaError(problems)
    return run
