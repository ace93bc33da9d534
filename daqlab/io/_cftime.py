"""Time in daqlab's NetCDF files: float64 microseconds that every reader decodes exactly.

Written by :func:`encode_time`, read by :func:`decode_time` (and xarray, cftime, netCDF-C
as the docstring of :func:`encode_time` says); ``docs/formats/netcdf.md`` has the rules.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import xarray as xr
from numpy.typing import NDArray

from daqlab.errors import FormatError

__all__ = ["cal_date_variable", "decode_time", "decode_times", "encode_time"]

_TIME_UNITS = re.compile(r"(nanoseconds|microseconds) since (\S+)")
# Spans whose times stay exact to the nanosecond as fractional microseconds: every offset from the
# reference (the middle of the run) below 2**42 us, where float64 microseconds are spaced < 0.5 ns.
_NS_EXACT_HALF_SPAN = 2**42 * 1000
_NS_MIN = -(2**63)  # NaT; datetime64[ns] times are above it


def encode_time(times: NDArray[np.datetime64]) -> tuple[NDArray[np.float64], str]:
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


def decode_time(values: NDArray[Any], units: str, calendar: str, name: str = "time"
                 ) -> NDArray[np.datetime64]:
    """Inverse of :func:`encode_time`, and of the ``nanoseconds since`` it wrote before;
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


def decode_times(ds: xr.Dataset) -> xr.Dataset:
    """Decode ``time`` and ``cal_date`` (opened undecoded: our own decoder is one pass)."""
    return ds.assign_coords(time=time_variable(ds["time"].variable),
                            cal_date=cal_date_variable(ds["cal_date"].variable))


def time_variable(time: xr.Variable) -> xr.Variable:
    attrs = dict(time.attrs)
    units, calendar = attrs.pop("units", None), attrs.pop("calendar", "standard")
    if units is None:
        raise FormatError("coordinate 'time' has no units; it is not a daqlab time axis.")
    return xr.Variable("time", decode_time(np.asarray(time.values), units, calendar), attrs)


def cal_date_variable(cal: xr.Variable) -> xr.Variable:
    attrs = dict(cal.attrs)
    units = attrs.pop("units", "microseconds since 1970-01-01T00:00:00")
    calendar = attrs.pop("calendar", "standard")
    attrs.pop("_FillValue", None)  # NaN, decoded as NaT below
    raw = np.asarray(cal.values, dtype=np.float64)
    dates = np.full(raw.shape, np.datetime64("NaT", "ns"))
    ok = np.isfinite(raw)
    dates[ok] = decode_time(raw[ok], units, calendar, "cal_date")
    return xr.Variable("channel", dates, attrs)


