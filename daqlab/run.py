"""The run: one ``xarray.Dataset`` shape shared by every part of daqlab.

See ``shared/DESIGN.md`` ("One shape everywhere: the run"). This module builds
runs (:func:`make_run`), checks them (:func:`validate`) and converts between raw
and physical units (:func:`calibrate`, :func:`uncalibrate`).
"""

from __future__ import annotations

import datetime as _dt
import math
import numbers
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from numpy.typing import ArrayLike, NDArray

from daqlab.checks import flag, is_whole
from daqlab.errors import (
    AlreadyCalibratedError,
    ConfigurationError,
    NotCalibratedError,
    ShapeError,
)
from daqlab.model import (
    Calibration,
    Channel,
    ChannelLike,
    Quality,
    to_channels,
    to_datetime64,
    wrapped_outside_ns,
)
from daqlab.schema import (
    CHANNEL_COORDS,
    QUALITY_ATTRS,
    SCHEMA_VERSION,
    check_metadata,
    check_sample_rate,
    validate,
)

__all__ = [
    "CHANNEL_COORDS",
    "QUALITY_ATTRS",
    "SCHEMA_VERSION",
    "assemble_run",
    "calibrate",
    "channels_of",
    "check_metadata",
    "check_sample_rate",
    "coords_in_memory",
    "datetime64_ns",
    "empty_run",
    "flag_quality",
    "iso_utc",
    "make_run",
    "run_attrs",
    "sample_times",
    "uncalibrate",
    "validate",
]

def iso_utc(when: Any = None) -> str:
    """ISO 8601 UTC text with a ``Z`` suffix, microsecond resolution; ``None`` is now.

    >>> iso_utc("2024-01-02T03:04:05.5")
    '2024-01-02T03:04:05.500000Z'
    """
    if when is None:
        when = _dt.datetime.now(_dt.UTC)
    t = pd.Timestamp(to_datetime64(when, what="created_at"))
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def sample_times(start_ns: int, first_index: int, n: int, sample_rate: float) -> NDArray[np.datetime64]:
    """Timestamps of samples ``first_index .. first_index + n - 1`` of a paced stream.

    Sample ``k`` is at ``start + k / sample_rate`` rounded to the nanosecond, so
    consecutive blocks line up exactly.

    >>> sample_times(0, 2, 3, 4.0)
    array(['1970-01-01T00:00:00.500000000', '1970-01-01T00:00:00.750000000',
           '1970-01-01T00:00:01.000000000'], dtype='datetime64[ns]')
    """
    step = 1e9 / sample_rate
    if step.is_integer():  # exact integer arithmetic, and cheap on the push path
        k = np.arange(first_index, first_index + n, dtype=np.int64)
        offsets = k * np.int64(step)
    else:
        kf = np.arange(first_index, first_index + n, dtype=np.float64)
        offsets = np.rint(kf * 1e9 / sample_rate).astype(np.int64)
    return (np.int64(start_ns) + offsets).view("datetime64[ns]")


_NS_RANGE = "1677-09-21T00:12:43.145224193 to 2262-04-11T23:47:16.854775807"


def datetime64_ns(arr: NDArray[np.datetime64], *, what: str = "times") -> NDArray[np.datetime64]:
    """``arr`` (any ``datetime64`` unit) as ``datetime64[ns]``; ShapeError where a date does not fit.

    >>> datetime64_ns(np.array(["2024-01-01"], "datetime64[D]"))
    array(['2024-01-01T00:00:00.000000000'], dtype='datetime64[ns]')
    """
    ns, outside = wrapped_outside_ns(arr)
    if outside.any():
        i = int(np.argmax(outside))
        raise ShapeError(
            f"{what} hold {int(outside.sum())} value(s) outside the range of datetime64[ns] "
            f"({_NS_RANGE}), the first {arr.flat[i]} at index {i}; daqlab stamps samples "
            "in nanoseconds. Check the dates (a wrong unit or epoch?)."
        )
    result: NDArray[np.datetime64] = ns
    return result


def _as_times(times: ArrayLike, n: int) -> NDArray[np.datetime64]:
    arr = np.asarray(times)
    if arr.size == 0 and arr.ndim == 1:
        arr = np.empty(0, dtype="datetime64[ns]")
    if arr.dtype.kind != "M":
        why = ""
        try:
            # utc=True converts every offset (also ones changing at DST) and takes naive as UTC
            # numbers are refused as the numeric dtypes are (pandas would guess their unit)
            text_like = arr.dtype.kind == "U" or (
                arr.dtype.kind == "O" and not any(isinstance(x, numbers.Number) for x in arr.flat))
            idx = pd.to_datetime(arr, utc=True, format="ISO8601") if text_like else None
        except (TypeError, ValueError) as exc:  # OutOfBoundsDatetime is a ValueError
            idx, why = None, f" ({exc}; datetime64[ns] holds {_NS_RANGE})"
        if idx is None:
            raise ShapeError(
                f"times must be datetime-like (datetime64, datetime objects, ISO text); got "
                f"dtype {arr.dtype}{why}. Convert, e.g. np.asarray(t_seconds * 1e9, 'int64')"
                ".view('datetime64[ns]'), or pass start=... and let daqlab stamp them."
            )
        arr = pd.DatetimeIndex(idx).tz_localize(None).to_numpy()
    arr = datetime64_ns(arr)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ShapeError(
            f"times must be 1-D with one timestamp per sample ({n}); got shape {arr.shape}."
        )
    if n and np.isnat(arr).any():
        raise ShapeError(
            f"times hold {int(np.isnat(arr).sum())} NaT value(s); every sample needs a timestamp."
        )
    if n > 1:
        ti = arr.view(np.int64)
        back = ti[1:] < ti[:-1]  # compared, not subtracted: a difference can overflow int64
        if back.any():
            i = int(np.argmax(back))
            raise ShapeError(
                f"times must be non-decreasing; sample {i + 1} ({arr[i + 1]}) is before "
                f"sample {i} ({arr[i]}). Sort the samples by time first."
            )
    return arr


def flag_quality(
    values: NDArray[np.float64],
    channels: Iterable[Channel],
    *,
    calibrated: bool,
    quality: NDArray[np.int8] | None = None,
) -> NDArray[np.int8]:
    """Quality flags for ``values`` (channels x samples): NaN/inf BAD, out of range SUSPECT.

    Existing flags are kept unless a rule asks for a worse one; nothing is dropped.

    >>> flag_quality(np.array([[0.0, np.nan, 20.0]]), [Channel("a", range=(0, 10))],
    ...              calibrated=True)
    array([[0, 2, 1]], dtype=int8)
    """
    q = np.zeros(values.shape, dtype=np.int8) if quality is None else quality.copy()
    q[~np.isfinite(values)] = Quality.BAD
    for i, ch in enumerate(channels):
        lo, hi = ch.range_min, ch.range_max
        if math.isnan(lo) and math.isnan(hi):
            continue
        with np.errstate(over="ignore", invalid="ignore"):  # overflow to inf is out of range
            row = values[i] if calibrated else ch.calibration.apply(values[i])
        with np.errstate(invalid="ignore", over="ignore"):
            out = np.zeros(row.shape, dtype=bool)
            if not math.isnan(lo):
                out |= row < lo
            if not math.isnan(hi):
                out |= row > hi
        q[i, out & (q[i] == Quality.GOOD)] = Quality.SUSPECT
    return q


def _channel_coords(channels: tuple[Channel, ...]) -> dict[str, Any]:
    cal_dates = np.array(
        [
            c.calibration.reference_date
            if c.calibration.reference_date is not None
            else np.datetime64("NaT", "ns")
            for c in channels
        ],
        dtype="datetime64[ns]",
    )
    return {
        "channel": ("channel", np.array([c.name for c in channels], dtype=object)),
        "unit": ("channel", np.array([c.unit for c in channels], dtype=object)),
        "range_min": ("channel", np.array([c.range_min for c in channels], dtype=np.float64)),
        "range_max": ("channel", np.array([c.range_max for c in channels], dtype=np.float64)),
        "cal_slope": ("channel", np.array([c.calibration.slope for c in channels], np.float64)),
        "cal_offset": ("channel", np.array([c.calibration.offset for c in channels], np.float64)),
        "cal_date": ("channel", cal_dates),
    }


def assemble_run(
    value: Any,
    quality: Any,
    times: NDArray[np.datetime64],
    channels: tuple[Channel, ...],
    attrs: dict[str, Any],
) -> xr.Dataset:
    """Put already checked arrays (numpy or dask) together into a run, without copying."""
    coords = _channel_coords(channels)
    coords["time"] = ("time", times)
    ds = xr.Dataset(
        {
            "value": (("channel", "time"), value, {"long_name": "sample value",
                                                   "ancillary_variables": "quality"}),
            "quality": (("channel", "time"), quality, dict(QUALITY_ATTRS)),
        },
        coords=coords,
        attrs=attrs,
    )
    return ds


def coords_in_memory(run: xr.Dataset) -> xr.Dataset:
    """The run with ``time`` and the per-channel coordinates as numpy (they are small),
    whatever backs its data variables."""
    names = [n for n in ("channel", "time", *CHANNEL_COORDS) if n in run.coords]
    if not any(run[n].chunks is not None for n in names):
        return run
    return run.assign_coords({n: run[n].load() for n in names})


_CHUNKS_HELP = ("give None (read into memory), {} (the file's own chunks), 'auto', a number of "
                "samples per chunk, or a dict over 'channel' and 'time' of those (or of a byte size "
                "such as '64MiB', or a tuple of chunk lengths), such as {'time': 1_000_000}")


def check_chunks(chunks: Any) -> dict[str, Any] | None:
    """``chunks`` as ``open_run`` takes it (as in xarray), as a dict over the run's dims.

    >>> check_chunks("auto")
    {'channel': 'auto', 'time': 'auto'}
    >>> check_chunks({"time": "64MiB"})
    {'time': '64MiB'}
    >>> check_chunks({"tme": 10})
    Traceback (most recent call last):
    ...
    daqlab.errors.ConfigurationError: chunks={'tme': 10} is not a chunking of a run: ...
    """
    def ok(v: Any, in_dict: bool) -> bool:
        if v is None or (isinstance(v, str) and v == "auto"):
            return True
        if is_whole(v):
            return int(v) > 0 or int(v) == -1
        if in_dict and isinstance(v, str):
            from dask.utils import parse_bytes  # only here: dask costs time to import

            try:
                return parse_bytes(v) > 0
            except ValueError:
                return False
        return in_dict and isinstance(v, tuple) and len(v) > 0 and all(is_whole(n) and n > 0 for n in v)

    if chunks is None:
        return None
    if isinstance(chunks, Mapping):
        if set(chunks) <= {"channel", "time"} and all(ok(v, True) for v in chunks.values()):
            return dict(chunks)
    elif ok(chunks, False):
        return {"channel": chunks, "time": chunks}
    raise ConfigurationError(f"chunks={chunks!r} is not a chunking of a run: {_CHUNKS_HELP}.")


def chunked_variable(var: xr.Variable, chunks: Mapping[str, Any]) -> xr.Variable:
    """``var`` as a dask array in ``chunks`` (a dict from :func:`check_chunks`)."""
    try:
        return var.chunk({d: c for d, c in chunks.items() if d in var.dims})
    except (ValueError, NotImplementedError) as exc:  # e.g. chunk lengths that do not add up
        raise ConfigurationError(
            f"chunks={dict(chunks)!r} do not fit a run of {dict(zip(var.dims, var.shape, strict=True))} "
            f"samples ({exc}); {_CHUNKS_HELP}.") from None


def chunk_samples(run: xr.Dataset, chunks: Any) -> xr.Dataset:
    """``run`` with its data variables as dask arrays in ``chunks`` (as :func:`check_chunks`
    takes them); the coordinates stay numpy (xarray cannot chunk object arrays ``"auto"``)."""
    spec = check_chunks(chunks)
    if spec is None:
        return run
    return run.assign({name: chunked_variable(run[name].variable, spec) for name in run.data_vars})


def make_run(
    values: ArrayLike,
    channels: Iterable[ChannelLike] | int,
    *,
    sample_rate: float,
    times: ArrayLike | None = None,
    start: Any = None,
    quality: ArrayLike | None = None,
    name: str = "",
    description: str = "",
    metadata: Mapping[str, Any] | None = None,
    id: str | uuid.UUID | None = None,
    created_at: Any = None,
    calibrated: bool = False,
) -> xr.Dataset:
    """Build a run from arrays, channels and attributes.

    Parameters
    ----------
    values
        ``(channels, samples)`` array of raw values (physical if ``calibrated``).
    channels
        Names, :class:`~daqlab.Channel` objects, or a count.
    sample_rate
        Nominal rate in Hz (> 0).
    times
        One timestamp per sample (UTC, non-decreasing). When omitted, sample ``k``
        is stamped ``start + k / sample_rate``.
    start
        First timestamp when ``times`` is omitted; default: now (UTC).
    quality
        Initial flags; NaN/inf are then flagged BAD and out-of-range SUSPECT.
    name, description, metadata, id, created_at, calibrated
        The run's attributes (``id`` and ``created_at`` default to new ones).

    Examples
    --------
    >>> run = make_run([[0.0, 1.0, np.nan]], ["ai0"], sample_rate=10.0,
    ...                start="2024-01-01", id="4b3a0e0e-6f0e-4f5e-9a39-1c0e8a4f3e21")
    >>> run.quality.values.tolist()
    [[0, 0, 2]]
    >>> str(run.time.values[1])
    '2024-01-01T00:00:00.100000000'
    """
    chans = to_channels(channels)
    rate = check_sample_rate(sample_rate)
    try:
        vals = np.array(values, dtype=np.float64, copy=True)
    except (TypeError, ValueError, OverflowError) as exc:  # OverflowError: an int beyond float64
        raise ShapeError(f"values must be numeric; could not convert them to float64: {exc}") from None
    c = len(chans)
    if vals.ndim != 2 or vals.shape[0] != c:
        hint = ""
        if vals.ndim == 2 and vals.shape[1] == c:
            hint = " It looks transposed: pass values.T."
        elif vals.ndim == 1:
            hint = " For one channel pass values[np.newaxis, :]."
        raise ShapeError(
            f"values must have shape (channels, samples) = ({c}, N) for {c} channel(s); "
            f"got shape {vals.shape}.{hint}"
        )
    n = vals.shape[1]
    if times is None:
        t0 = to_datetime64(start if start is not None else _dt.datetime.now(_dt.UTC), what="start")
        t = sample_times(int(t0.astype(np.int64)), 0, n, rate)
    else:
        if start is not None:
            raise ConfigurationError("give either times or start, not both.")
        t = _as_times(times, n)
    q_in: NDArray[np.int8] | None = None
    if quality is not None:
        q_arr = np.asarray(quality)
        if q_arr.shape != vals.shape:
            raise ShapeError(
                f"quality must have the same shape as values {vals.shape}; got {q_arr.shape}."
            )
        allowed = [int(q) for q in Quality]
        if q_arr.size and not np.isin(q_arr, allowed).all():
            raise ShapeError(
                f"quality values must be in {allowed} (daqlab.Quality); got "
                f"{sorted(set(np.unique(q_arr).tolist()) - set(allowed))[:5]}."
            )
        q_in = q_arr.astype(np.int8)
    q = flag_quality(vals, chans, calibrated=bool(calibrated), quality=q_in)
    attrs = run_attrs(
        id=id, name=name, description=description, created_at=created_at,
        sample_rate=rate, metadata=metadata, calibrated=calibrated,
    )
    return assemble_run(vals, q, t, chans, attrs)


def run_attrs(
    *,
    id: str | uuid.UUID | None,
    name: str,
    description: str,
    created_at: Any,
    sample_rate: float,
    metadata: Mapping[str, Any] | None,
    calibrated: bool,
) -> dict[str, Any]:
    if id is None:
        run_id = str(uuid.uuid4())
    else:
        try:
            run_id = str(uuid.UUID(str(id)))
        except ValueError:
            raise ConfigurationError(
                f"id must be a UUID; got {id!r}. Leave it out to get a new uuid4."
            ) from None
    for label, text in (("name", name), ("description", description)):
        if not isinstance(text, str):
            raise ConfigurationError(f"{label} must be a str; got {text!r}.")
    flag(calibrated, "calibrated")
    return {
        "id": run_id,
        "name": name,
        "description": description,
        "created_at": iso_utc(created_at),
        "sample_rate": sample_rate,
        "metadata": check_metadata(metadata),
        "calibrated": bool(calibrated),
    }


def empty_run(
    channels: Iterable[ChannelLike] | int, *, sample_rate: float, **attrs: Any
) -> xr.Dataset:
    """A run with the given channels and no samples."""
    chans = to_channels(channels)
    return make_run(np.empty((len(chans), 0)), chans, sample_rate=sample_rate, times=[], **attrs)


def channels_of(run: xr.Dataset) -> tuple[Channel, ...]:
    """The run's channels as :class:`~daqlab.Channel` objects, read from its coordinates."""
    out = []
    for i, name in enumerate(run["channel"].values.tolist()):
        date = run["cal_date"].values[i]
        out.append(
            Channel(
                str(name),
                str(run["unit"].values[i]),
                range=(float(run["range_min"].values[i]), float(run["range_max"].values[i])),
                calibration=Calibration(
                    float(run["cal_slope"].values[i]),
                    float(run["cal_offset"].values[i]),
                    None if np.isnat(date) else date,
                ),
            )
        )
    return tuple(out)


# --------------------------------------------------------------------------- calibration


def _cal_arrays(run: xr.Dataset) -> tuple[xr.DataArray, xr.DataArray]:
    return run["cal_slope"].reset_coords(drop=True), run["cal_offset"].reset_coords(drop=True)


def calibrate(run: xr.Dataset) -> xr.Dataset:
    """Physical values ``cal_slope * value + cal_offset`` per channel; lazy on dask runs.

    The raw values are kept in a ``raw`` variable so that :func:`uncalibrate`
    gives them back exactly. A finite raw value that overflows to inf is
    flagged BAD (and stays flagged after ``uncalibrate``). Calibrating a
    calibrated run raises :class:`~daqlab.AlreadyCalibratedError`.

    >>> ch = Channel("t", "degC", calibration=Calibration(slope=100.0, offset=-50.0))
    >>> run = calibrate(make_run([[0.5, 1.0]], [ch], sample_rate=1.0))
    >>> run.value.values.tolist(), run.attrs["calibrated"]
    ([[0.0, 50.0]], True)
    """
    validate(run, check_data=False)
    if run.attrs["calibrated"]:
        raise AlreadyCalibratedError(
            f"run {run.attrs.get('name') or run.attrs.get('id')!r} is calibrated already "
            "(attrs['calibrated'] is True); applying the calibration twice would corrupt it. "
            "Use the run as it is, or daqlab.uncalibrate(run) to get raw values back."
        )
    slope, offset = _cal_arrays(run)
    raw = run["value"]
    physical = (raw * slope + offset).assign_attrs(raw.attrs)
    # a finite raw value can overflow to inf: flag it, as make_run would have
    quality = run["quality"].where(
        np.isfinite(physical) | (run["quality"] != Quality.GOOD), np.int8(Quality.BAD)
    ).astype(np.int8)
    out = run.assign(value=physical, quality=quality.assign_attrs(run["quality"].attrs))
    out["raw"] = raw.assign_attrs(
        long_name="raw sample value as acquired",
        comment="kept by daqlab.calibrate so that uncalibrate is exact",
    )
    out.attrs = {**run.attrs, "calibrated": True}
    return out


def uncalibrate(run: xr.Dataset) -> xr.Dataset:
    """Undo :func:`calibrate`: raw values back (exactly, when ``raw`` was kept).

    Without a ``raw`` variable (a run processed after calibration), the values
    are converted back arithmetically: ``(value - cal_offset) / cal_slope``.
    """
    validate(run, check_data=False)
    if not run.attrs["calibrated"]:
        raise NotCalibratedError(
            f"run {run.attrs.get('name') or run.attrs.get('id')!r} is not calibrated "
            "(attrs['calibrated'] is False); its values are raw already."
        )
    if "raw" in run.data_vars:
        value = run["raw"].copy(deep=False)
        value.attrs = dict(run["value"].attrs)
    else:
        slope, offset = _cal_arrays(run)
        value = ((run["value"] - offset) / slope).assign_attrs(run["value"].attrs)
    out = run.drop_vars("raw", errors="ignore").assign(value=value)
    out.attrs = {**run.attrs, "calibrated": False}
    return out
