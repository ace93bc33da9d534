"""What every daqlab file says of the run schema: its version (a newer one is refused) and its
channels, each as one record.

A channel record is a dict with the names of the run's per-channel coordinates::

    {"name": "ai0", "unit": "V", "range_min": -10.0, "range_max": 10.0,
     "cal_slope": 2.0, "cal_offset": 0.0, "cal_date": "2024-05-01T00:00:00.000000000Z"}

``range_min``/``range_max`` are ``None`` at an open end, ``cal_date`` ISO 8601 UTC text to the
nanosecond or ``None``. JSON files store it through :func:`daqlab.io._codec.to_json` (an
infinite range end is a tagged float); the seed's HDF5 layout stores it as the attributes of
the channel's group. :func:`channel_from_record` also reads the spellings files of daqlab
0.1.0 used: recordings' ``range`` pair, ``slope``, ``offset`` and ``reference_date``, NaN
range ends, and ``""`` for no date.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from daqlab._version import __version__
from daqlab.errors import FormatError
from daqlab.io._codec import from_json
from daqlab.model import Calibration, Channel
from daqlab.run import SCHEMA_VERSION

__all__ = ["SCHEMA_ATTR", "channel_from_record", "channel_record", "check_schema_version", "parse_time",
           "record_cal_date"]

SCHEMA_ATTR = "daqlab_schema_version"
"""The HDF5 attribute (NetCDF root, the seed's /metadata) that holds the run schema version."""

_MAX_SECONDS = 9.2e9  # |t| beyond this does not fit datetime64[ns]


def check_schema_version(version: object, *, source: object, where: object = None,
                         written_by: object = None) -> int:
    """The run schema version a file records, as an int; a FormatError when it is not a whole
    number (``where``: the entry that holds it, ``source`` by default) or is newer than this
    daqlab reads (``source``: the file to name; ``written_by``: the daqlab version it records).

    >>> check_schema_version(SCHEMA_VERSION, source="run.nc") == SCHEMA_VERSION
    True
    >>> check_schema_version("1", source="run.nc", where="run.nc: /metadata")
    Traceback (most recent call last):
    ...
    daqlab.errors.FormatError: run.nc: /metadata is damaged: schema_version '1' is not a whole number.
    """
    if isinstance(version, np.ndarray) and version.size == 1:
        version = version.ravel()[0]  # HDF5 attributes may be one-element arrays
    if isinstance(version, (bool, np.bool_)) or not isinstance(version, (int, np.integer)):
        raise FormatError(f"{where or source} is damaged: schema_version {version!r} is not a "
                          "whole number.")
    if version > SCHEMA_VERSION:
        raise FormatError(
            f"{source} was written with run schema version {int(version)} by daqlab "
            f"{written_by or '?'}; this daqlab ({__version__}) reads up to version "
            f"{SCHEMA_VERSION}. Upgrade daqlab to open it."
        )
    return int(version)


def parse_time(value: Any) -> np.datetime64 | None:
    """ISO 8601 text (any offset) or seconds since the epoch as datetime64[ns]; None if unusable."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or abs(value) > _MAX_SECONDS:
            return None
        us: np.datetime64 = np.datetime64(round(value * 1e6), "us").astype("datetime64[ns]")
        return us
    if not isinstance(value, str) or not value.strip() or value.strip().lower() in ("now", "today", "nat"):
        return None
    try:
        ts: Any = pd.Timestamp(value.strip())  # NaT for some texts, whatever the stubs say
    except (ValueError, TypeError, OverflowError):
        return None
    if pd.isna(ts):
        return None
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    out: np.datetime64 = np.datetime64(int(ts.as_unit("ns").value), "ns")
    return out


def channel_record(channel: Channel, cal_date: Any = None) -> dict[str, Any]:
    """``channel`` as a record (see the module docstring). ``cal_date``: the exact calibration
    date, when the run's coordinate holds more than the microseconds a Calibration keeps."""
    given = channel.calibration.reference_date if cal_date is None else cal_date
    date = np.datetime64("NaT", "ns") if given is None else np.asarray(given).astype("datetime64[ns]")[()]
    return {
        "name": channel.name,
        "unit": channel.unit,
        "range_min": None if math.isnan(channel.range_min) else channel.range_min,
        "range_max": None if math.isnan(channel.range_max) else channel.range_max,
        "cal_slope": channel.calibration.slope,
        "cal_offset": channel.calibration.offset,
        "cal_date": None if np.isnat(date) else f"{np.datetime_as_string(date, unit='ns')}Z",
    }


def _number(record: Mapping[str, Any], key: str, default: float) -> float:
    value = record.get(key, default)
    if value is None and key.startswith("range"):
        return math.nan  # an open end
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{key} is {value!r}, not a number")
    return float(value)


def record_cal_date(record: Mapping[str, Any]) -> np.datetime64:
    """The record's calibration date, exact (NaT where it has none)."""
    text = record.get("cal_date", record.get("reference_date"))
    if text in ("", None, "NaT"):
        return np.datetime64("NaT", "ns")
    date = parse_time(text)
    if date is None:
        raise ValueError(f"cal_date {text!r} is not a date")
    return date


def channel_from_record(record: Mapping[str, Any]) -> Channel:
    """The channel a record describes (any spelling daqlab wrote; missing entries default:
    unit ``""``, no range, identity calibration). Raises ValueError saying what is wrong."""
    if not isinstance(record, Mapping):
        raise ValueError(f"channel record {record!r:.80} is not an object")
    record = {str(k): from_json(v) for k, v in record.items()}
    if "range" in record:  # recordings of daqlab 0.1.0
        lo, hi = record.pop("range")
        record.update(range_min=lo, range_max=hi)
    for old, new in (("slope", "cal_slope"), ("offset", "cal_offset")):
        if old in record:
            record.setdefault(new, record.pop(old))
    date = record_cal_date(record)
    return Channel(
        record["name"], record.get("unit", ""),
        range=(_number(record, "range_min", math.nan), _number(record, "range_max", math.nan)),
        calibration=Calibration(_number(record, "cal_slope", 1.0), _number(record, "cal_offset", 0.0),
                                None if np.isnat(date) else date),
    )
