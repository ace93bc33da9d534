"""The run schema: building, flagging, timestamps, validation, calibration, the accessor."""

from __future__ import annotations

import datetime as dt
import re
import uuid
import warnings
from collections.abc import Callable
from typing import Any, cast

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.typing import NDArray

import daqlab as dl

GOOD, SUSPECT, BAD, INTERP = (int(q) for q in dl.Quality)
RUN_ID = "4b3a0e0e-6f0e-4f5e-9a39-1c0e8a4f3e21"
START = "2024-01-01T00:00:00Z"


def base_run(n: int = 5) -> xr.Dataset:
    """A valid two-channel run with fixed attributes."""
    chans = [dl.Channel("a", "V", range=(-10.0, 10.0),
                        calibration=dl.Calibration(2.0, 1.0, cast(Any, "2024-05-01"))),
             dl.Channel("b", "degC")]
    values = np.arange(2.0 * n).reshape(2, n)
    return dl.make_run(values, chans, sample_rate=10.0, start=START, id=RUN_ID,
                       created_at="2024-01-02T03:04:05Z", name="base",
                       metadata={"operator": "Ada"})


# --------------------------------------------------------------------------- make_run basics


def test_make_run_follows_the_schema() -> None:
    run = base_run()
    assert dl.validate(run) is run
    assert run.daq.validate() is run
    assert dict(run.sizes) == {"channel": 2, "time": 5}
    assert run["value"].dims == ("channel", "time")
    assert run["value"].dtype == np.float64
    assert run["quality"].dtype == np.int8
    assert run["time"].dtype == np.dtype("datetime64[ns]")
    for coord in dl.run.CHANNEL_COORDS:
        assert run[coord].dims == ("channel",)
    assert run["cal_date"].dtype == np.dtype("datetime64[ns]")
    assert run["value"].attrs["ancillary_variables"] == "quality"
    np.testing.assert_array_equal(run["quality"].attrs["flag_values"], [0, 1, 2, 3])
    assert run["quality"].attrs["flag_meanings"] == "good suspect bad interpolated"
    assert run.attrs == {
        "id": RUN_ID, "name": "base", "description": "",
        "created_at": "2024-01-02T03:04:05.000000Z", "sample_rate": 10.0,
        "metadata": {"operator": "Ada"}, "calibrated": False,
    }


def test_make_run_default_attributes() -> None:
    before = pd.Timestamp.now(tz="UTC").tz_localize(None)
    run = dl.make_run([[1.0, 2.0]], ["a"], sample_rate=5.0)
    after = pd.Timestamp.now(tz="UTC").tz_localize(None)
    assert uuid.UUID(run.attrs["id"]).version == 4
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", run.attrs["created_at"])
    created = pd.Timestamp(run.attrs["created_at"][:-1])
    assert before.floor("us") <= created <= after
    t0 = pd.Timestamp(run["time"].values[0])
    assert before <= t0 <= after
    assert run.attrs["metadata"] == {}
    assert run.attrs["calibrated"] is False
    assert run.attrs["name"] == run.attrs["description"] == ""
    assert dl.make_run([[1.0]], ["a"], sample_rate=1.0).attrs["id"] != run.attrs["id"]


def test_make_run_copies_values() -> None:
    values = np.zeros((1, 3))
    run = dl.make_run(values, ["a"], sample_rate=1.0)
    values[0, 0] = 99.0
    assert run["value"].values[0, 0] == 0.0


def test_make_run_with_no_samples() -> None:
    run = dl.make_run(np.empty((2, 0)), ["a", "b"], sample_rate=100.0, start=START)
    dl.validate(run)
    assert dict(run.sizes) == {"channel": 2, "time": 0}
    run = dl.make_run(np.empty((1, 0)), ["a"], sample_rate=1.0,
                      times=np.array([], dtype="datetime64[ns]"))
    dl.validate(run)


def test_empty_run_is_valid() -> None:
    run = dl.empty_run(["a", "b"], sample_rate=100.0, name="nothing yet")
    dl.validate(run)
    assert dict(run.sizes) == {"channel": 2, "time": 0}
    assert run.attrs["name"] == "nothing yet"
    assert run.daq.duration == 0.0
    assert run.daq.quality_counts() == {
        "a": {"GOOD": 0, "SUSPECT": 0, "BAD": 0, "INTERPOLATED": 0},
        "b": {"GOOD": 0, "SUSPECT": 0, "BAD": 0, "INTERPOLATED": 0},
    }


# --------------------------------------------------------------------------- quality flags


def test_non_finite_values_are_kept_and_flagged_bad() -> None:
    run = dl.make_run([[0.0, np.nan, np.inf, -np.inf, 1.0]], ["a"], sample_rate=1.0)
    np.testing.assert_array_equal(run["value"].values, [[0.0, np.nan, np.inf, -np.inf, 1.0]])
    assert run["quality"].values.tolist() == [[GOOD, BAD, BAD, BAD, GOOD]]


def test_out_of_range_is_suspect_in_physical_units_on_a_calibrated_run() -> None:
    ch = dl.Channel("a", range=(0.0, 10.0), calibration=dl.Calibration(slope=10.0))
    run = dl.make_run([[-0.1, 0.0, 5.0, 10.0, 10.5, np.nan]], [ch], sample_rate=1.0,
                      calibrated=True)
    # values are physical already: compared with the range as they are; the ends count as in.
    assert run["quality"].values.tolist() == [[SUSPECT, GOOD, GOOD, GOOD, SUSPECT, BAD]]


def test_out_of_range_is_checked_after_calibration_on_a_raw_run() -> None:
    # physical = 10 * raw + 10; range (0, 10) in physical units means raw in [-1, 0].
    ch = dl.Channel("a", range=(0.0, 10.0), calibration=dl.Calibration(slope=10.0, offset=10.0))
    raw = [[-0.5, 0.0, 0.5, 5.0, -1.0, -1.5]]
    run = dl.make_run(raw, [ch], sample_rate=1.0)
    assert run["quality"].values.tolist() == [[GOOD, GOOD, SUSPECT, SUSPECT, GOOD, SUSPECT]]
    np.testing.assert_array_equal(run["value"].values, raw)


def test_half_open_ranges() -> None:
    chans = [dl.Channel("lo", range=(0.0, None)), dl.Channel("hi", range=(None, 0.0))]
    run = dl.make_run([[-1.0, 1e300], [-1e300, 1.0]], chans, sample_rate=1.0)
    assert run["quality"].values.tolist() == [[SUSPECT, GOOD], [GOOD, SUSPECT]]


def test_given_quality_kept_unless_worse() -> None:
    ch = dl.Channel("a", range=(0.0, 1.0))
    values = [[0.5, 0.5, 0.5, np.nan, np.nan, 5.0, 5.0, 5.0, np.nan]]
    given_q = [[GOOD, SUSPECT, INTERP, GOOD, SUSPECT, GOOD, SUSPECT, BAD, BAD]]
    run = dl.make_run(values, [ch], sample_rate=1.0, quality=given_q)
    assert run["quality"].values.tolist() == [
        [GOOD, SUSPECT, INTERP, BAD, BAD, SUSPECT, SUSPECT, BAD, BAD]
    ]
    assert run["quality"].dtype == np.int8


def test_given_quality_array_is_not_modified() -> None:
    q = np.zeros((1, 2), dtype=np.int8)
    dl.make_run([[np.nan, 1.0]], ["a"], sample_rate=1.0, quality=q)
    assert q.tolist() == [[0, 0]]


# --------------------------------------------------------------------------- timestamps


@pytest.mark.parametrize(
    ("rate", "expected_ns"),
    [(4.0, [0, 250_000_000, 500_000_000, 750_000_000, 1_000_000_000]),
     (3.0, [0, 333_333_333, 666_666_667, 1_000_000_000, 1_333_333_333]),
     (1e9, [0, 1, 2, 3, 4]),
     (0.5, [0, 2_000_000_000, 4_000_000_000, 6_000_000_000, 8_000_000_000])],
    ids=["4Hz", "3Hz-rounded", "1GHz", "half-Hz"],
)
def test_default_times_are_start_plus_k_over_rate(rate: float, expected_ns: list[int]) -> None:
    run = dl.make_run(np.zeros((1, 5)), ["a"], sample_rate=rate, start="2024-03-01T12:00:00Z")
    t0 = np.datetime64("2024-03-01T12:00:00", "ns")
    offsets = (run["time"].values - t0).astype(np.int64)
    assert offsets.tolist() == expected_ns


def test_start_may_be_an_aware_datetime() -> None:
    tz = dt.timezone(dt.timedelta(hours=-5))
    run = dl.make_run([[1.0, 2.0]], ["a"], sample_rate=1.0,
                      start=dt.datetime(2024, 1, 1, 7, 0, tzinfo=tz))
    assert str(run["time"].values[0]) == "2024-01-01T12:00:00.000000000"


EXPECTED_TIMES = np.array(["2024-01-01T00:00:00", "2024-01-01T00:00:00.5",
                           "2024-01-01T00:00:01"], dtype="datetime64[ns]")


@pytest.mark.parametrize(
    "times",
    [
        EXPECTED_TIMES,
        EXPECTED_TIMES.astype("datetime64[ms]"),
        list(EXPECTED_TIMES),
        pd.DatetimeIndex(EXPECTED_TIMES).tz_localize("UTC").tz_convert("Europe/Berlin"),
        pd.Series(pd.DatetimeIndex(EXPECTED_TIMES).tz_localize("UTC").tz_convert("US/Pacific")),
        ["2024-01-01T00:00:00Z", "2024-01-01T00:00:00.5Z", "2024-01-01T00:00:01Z"],
        ["2024-01-01T01:00:00+01:00", "2024-01-01T01:00:00.5+01:00", "2024-01-01T01:00:01+01:00"],
        ["2024-01-01T00:00:00", "2024-01-01T00:00:00.500", "2024-01-01T00:00:01"],
        [dt.datetime(2024, 1, 1, 0, 0, tzinfo=dt.UTC),
         dt.datetime(2024, 1, 1, 0, 0, 0, 500_000, tzinfo=dt.UTC),
         dt.datetime(2024, 1, 1, 0, 0, 1, tzinfo=dt.UTC)],
    ],
    ids=["datetime64-ns", "datetime64-ms", "list-of-datetime64", "pandas-tz-berlin",
         "pandas-series-tz-pacific", "iso-z", "iso-offset", "iso-naive", "aware-datetimes"],
)
def test_explicit_times(times: Any) -> None:
    run = dl.make_run(np.zeros((1, 3)), ["a"], sample_rate=2.0, times=times)
    dl.validate(run)
    assert run["time"].dtype == np.dtype("datetime64[ns]")
    np.testing.assert_array_equal(run["time"].values, EXPECTED_TIMES)


@pytest.mark.parametrize(
    "times",
    [
        # A DST change in the middle of a local-time series: the offset changes.
        ["2024-03-31T01:59:59+01:00", "2024-03-31T03:00:00+02:00", "2024-03-31T03:00:01+02:00"],
        [dt.datetime(2024, 3, 31, 1, 59, 59, tzinfo=dt.timezone(dt.timedelta(hours=1))),
         dt.datetime(2024, 3, 31, 3, 0, 0, tzinfo=dt.timezone(dt.timedelta(hours=2))),
         dt.datetime(2024, 3, 31, 3, 0, 1, tzinfo=dt.timezone(dt.timedelta(hours=2)))],
    ],
    ids=["iso-text", "aware-datetimes"],
)
def test_explicit_times_with_changing_utc_offset(times: Any) -> None:
    # ISO 8601 text and aware datetimes are accepted with an offset; a change of
    # offset (daylight saving) must still convert each one to UTC.
    run = dl.make_run(np.zeros((1, 3)), ["a"], sample_rate=1.0, times=times)
    expected = np.array(["2024-03-31T00:59:59", "2024-03-31T01:00:00", "2024-03-31T01:00:01"],
                        dtype="datetime64[ns]")
    np.testing.assert_array_equal(run["time"].values, expected)


def test_equal_timestamps_are_allowed() -> None:
    t = np.array(["2024-01-01", "2024-01-01", "2024-01-02"], dtype="datetime64[ns]")
    run = dl.make_run(np.zeros((1, 3)), ["a"], sample_rate=1.0, times=t)
    dl.validate(run)


@pytest.mark.parametrize(
    "times",
    [
        ["1677-09-22", "2000-01-01"],  # the step overflows int64 nanoseconds
        ["1677-09-21T00:12:43.145224193", "2262-04-11T23:47:16.854775807"],  # first and last
        ["1677-09-22", "1677-09-22", "2262-04-10", "2262-04-10"],
    ],
    ids=["overflowing-step", "whole-range", "with-ties"],
)
def test_times_far_apart_are_non_decreasing(times: list[str]) -> None:
    run = dl.make_run(np.zeros((1, len(times))), ["a"], sample_rate=1.0, times=times)
    np.testing.assert_array_equal(run["time"].values, np.array(times, dtype="datetime64[ns]"))
    dl.validate(run)
    with pytest.raises(dl.ShapeError, match=r"sample 1 \(1677-09-22.*is before sample 0 \(2262"):
        dl.make_run(np.zeros((1, 2)), ["a"], sample_rate=1.0, times=["2262-04-10", "1677-09-22"])
    backwards = run.assign_coords(time=run["time"].values[::-1])
    with pytest.raises(dl.SchemaError, match=r"'time' must be non-decreasing; it steps back"):
        dl.validate(backwards)


@pytest.mark.parametrize(
    "times",
    [
        np.array(["2024-01-01", "3000-01-01"], dtype="datetime64[D]"),
        np.array(["1000-01-01", "2024-01-01"], dtype="datetime64[s]"),
        ["2024-01-01", "3000-01-01"],
    ],
    ids=["days-after-2262", "seconds-before-1677", "iso-after-2262"],
)
def test_times_outside_the_nanosecond_range_are_refused_not_wrapped(times: Any) -> None:
    with pytest.raises(dl.ShapeError, match=r"1677-09-21T00:12:43\.145224193 to 2262-04-11"):
        dl.make_run(np.zeros((1, 2)), ["a"], sample_rate=1.0, times=times)


@pytest.mark.parametrize(
    ("times", "pattern"),
    [
        (np.array(["2024-01-01T00:00:02", "2024-01-01T00:00:01", "2024-01-01T00:00:03"],
                  dtype="datetime64[ns]"),
         r"non-decreasing; sample 1 \(2024-01-01T00:00:01\.000000000\) is before sample 0 "
         r"\(2024-01-01T00:00:02\.000000000\)\. Sort the samples by time first"),
        (np.array(["2024-01-01", "NaT", "2024-01-02"], dtype="datetime64[ns]"),
         r"1 NaT value\(s\); every sample needs a timestamp"),
        (np.array(["2024-01-01", "2024-01-02"], dtype="datetime64[ns]"),
         r"one timestamp per sample \(3\); got shape \(2,\)"),
        (np.array([0.0, 0.1, 0.2]),
         r"datetime-like.*got dtype float64.*start="),
        (["yesterday", "today", "tomorrow"], r"datetime-like"),
    ],
    ids=["decreasing", "nat", "wrong-length", "float-seconds", "not-dates"],
)
def test_bad_explicit_times(times: Any, pattern: str) -> None:
    with pytest.raises(dl.ShapeError, match=pattern) as info:
        dl.make_run(np.zeros((1, 3)), ["a"], sample_rate=1.0, times=times)
    assert isinstance(info.value, ValueError)


# --------------------------------------------------------------------------- validate


def _set_value(run: xr.Dataset, ch: int, k: int, v: float, q: int | None = None) -> xr.Dataset:
    value = run["value"].values.copy()
    value[ch, k] = v
    out = run.assign(value=run["value"].copy(data=value))
    if q is not None:
        qual = run["quality"].values.copy()
        qual[ch, k] = q
        out = out.assign(quality=run["quality"].copy(data=qual))
    return out


def _with_time(run: xr.Dataset, change: Callable[[NDArray[Any]], NDArray[Any]]) -> xr.Dataset:
    return run.assign_coords(time=change(run["time"].values.copy()))


def _nat(t: NDArray[Any]) -> NDArray[Any]:
    t[2] = np.datetime64("NaT")
    return t


def _no_attrs(run: xr.Dataset) -> xr.Dataset:
    out = run.copy()
    out.attrs = {}
    return out


BROKEN: list[tuple[Callable[[xr.Dataset], xr.Dataset], str, int]] = [
    (lambda r: r.drop_vars("value"), r"data variable 'value' is missing\.", 1),
    (lambda r: r.drop_vars("quality"), r"data variable 'quality' is missing\.", 1),
    (lambda r: r.assign(value=r["value"].astype(np.float32)),
     r"data variable 'value' must be float64; has dtype float32\.", 1),
    (lambda r: r.assign(quality=r["quality"].astype(np.int64)),
     r"data variable 'quality' must be int8; has dtype int64\.", 1),
    (lambda r: r.assign(value=r["value"].transpose()),
     r"data variable 'value' must have dims \('channel', 'time'\); has \('time', 'channel'\)\.",
     1),
    (lambda r: r.assign_coords(channel=["a", "a"]),
     r"channel names must be unique; duplicated: \['a'\]\.", 1),
    (lambda r: r.assign_coords(channel=["a", "b/c"]), r"channel name 'b/c' contains '/'", 1),
    (lambda r: r.assign_coords(channel=["a", " b"]), r"leading or trailing whitespace", 1),
    (lambda r: r.assign_coords(time=np.arange(5.0)),
     r"coordinate 'time' must be datetime64\[ns\] \(UTC\); has dtype float64\.", 1),
    (lambda r: _with_time(r, lambda t: t[::-1]),
     r"coordinate 'time' must be non-decreasing; it steps back 4 time\(s\), first after index 0\.",
     1),
    (lambda r: _with_time(r, _nat), r"coordinate 'time' holds 1 NaT value\(s\)\.", 1),
    (lambda r: r.drop_vars("cal_date"), r"per-channel coordinate 'cal_date' is missing\.", 1),
    (lambda r: r.drop_vars("unit"), r"per-channel coordinate 'unit' is missing\.", 1),
    (lambda r: r.assign_coords(range_min=("channel", [5.0, 0.0]),
                               range_max=("channel", [5.0, np.nan])),
     r"channel 'a': range_min 5\.0 >= range_max 5\.0; give min < max", 1),
    (lambda r: r.assign_coords(cal_slope=("channel", [1.0, 0.0])),
     r"channel 'b': cal_slope must be finite and non-zero; is 0\.0 \(use 1\.0", 1),
    (lambda r: r.assign_coords(cal_offset=("channel", [np.inf, 0.0])),
     r"channel 'a': cal_offset must be finite; is inf \(use 0\.0", 1),
    (lambda r: r.assign_attrs(id="run-42"), r"attribute 'id' must be a UUID; is 'run-42'\.", 1),
    (lambda r: r.assign_attrs(created_at="last tuesday"),
     r"attribute 'created_at' must be ISO 8601 UTC text; is 'last tuesday'\.", 1),
    (lambda r: r.assign_attrs(created_at=1704067200),
     r"attribute 'created_at' must be ISO 8601 UTC text; is 1704067200\.", 1),
    (lambda r: r.assign_attrs(sample_rate=0.0),
     r"attribute sample_rate must be finite and > 0 Hz; got 0\.0", 1),
    (lambda r: r.assign_attrs(sample_rate=-10.0),
     r"attribute sample_rate must be finite and > 0 Hz; got -10\.0", 1),
    (lambda r: r.assign_attrs(metadata={"tags": {"x", "y"}}),
     r"attribute metadata must hold only JSON values.*set is not JSON serializable", 1),
    (lambda r: r.assign_attrs(metadata='{"a": 1}'),
     r"attribute metadata must be a dict of JSON values; got str", 1),
    (lambda r: r.assign_attrs(calibrated="false"),
     r"attribute 'calibrated' must be a bool; is 'false'\.", 1),
    (lambda r: r.assign_attrs(calibrated=np.int8(0)),
     r"attribute 'calibrated' must be a bool; is", 1),
    (lambda r: _set_value(r, 1, 3, np.nan, GOOD),
     r"channel 'b': 1 NaN/inf value\(s\) are flagged GOOD; non-finite values must be flagged",
     1),
    (lambda r: _set_value(r, 0, 0, 1.0, 7),
     r"quality holds values \[7\] outside \[0, 1, 2, 3\] \(daqlab\.Quality\)\.", 1),
    (lambda r: r.assign(extra=r["value"] * 2),
     r"unexpected data variable\(s\) \['extra'\]; a run holds only 'value' and 'quality'", 1),
    (lambda r: r.assign(raw=r["value"]),
     r"data variable 'raw' is only allowed on a calibrated run\.", 2),
    (_no_attrs,
     r"attribute\(s\) \['id', 'name', 'description', 'created_at', 'sample_rate', 'metadata', "
     r"'calibrated'\] missing\.", 1),
    (lambda r: r.assign_attrs(name=5), r"attribute 'name' must be a str; is int\.", 1),
    (lambda r: r.expand_dims(extra=1),
     r"dimensions must be exactly \('channel', 'time'\)", 3),
]
BROKEN_IDS = [
    "missing-value", "missing-quality", "value-float32", "quality-int64", "value-dims-swapped",
    "duplicate-channels", "channel-name-slash", "channel-name-space", "time-not-datetime64",
    "time-decreasing", "time-nat", "missing-cal_date", "missing-unit", "range-min-ge-max",
    "zero-cal-slope", "inf-cal-offset", "bad-id", "created-at-not-iso", "created-at-number",
    "sample-rate-zero", "sample-rate-negative", "metadata-not-json", "metadata-str",
    "calibrated-str", "calibrated-int8", "nan-flagged-good", "quality-seven",
    "extra-data-variable", "raw-on-uncalibrated", "attrs-missing", "name-not-str",
    "extra-dimension",
]


@pytest.mark.parametrize(("breaker", "pattern", "count"), BROKEN, ids=BROKEN_IDS)
def test_validate_reports_each_kind_of_problem(
    breaker: Callable[[xr.Dataset], xr.Dataset], pattern: str, count: int
) -> None:
    run = base_run()
    broken = breaker(run)
    with pytest.raises(dl.SchemaError) as info:
        dl.validate(broken)
    err = info.value
    assert isinstance(err, ValueError)
    assert any(re.search(pattern, p) for p in err.problems), err.problems
    assert len(err.problems) == count, err.problems
    assert "Build runs with daqlab.make_run" in str(err)
    for p in err.problems:
        assert p in str(err)


def test_validate_refuses_non_datasets() -> None:
    with pytest.raises(dl.SchemaError, match=r"must be an xarray\.Dataset; got DataArray"):
        dl.validate(base_run()["value"])


def test_validate_check_data_false_skips_value_checks() -> None:
    broken = _set_value(base_run(), 0, 1, np.nan, GOOD)
    assert dl.validate(broken, check_data=False) is broken
    with pytest.raises(dl.SchemaError):
        dl.validate(broken)


def test_validate_reports_all_problems_at_once() -> None:
    run = base_run()
    broken = (
        run.assign(value=run["value"].astype(np.float32))
        .assign_coords(channel=["x", "x"], cal_slope=("channel", [np.nan, 1.0]))
        .drop_vars("unit")
        .assign_attrs(id="nope", sample_rate=-1.0, calibrated="no")
    )
    with pytest.raises(dl.SchemaError) as info:
        dl.validate(broken)
    problems = info.value.problems
    expected = [
        r"duplicated: \['x'\]",
        r"'unit' is missing",
        r"cal_slope must be finite and non-zero",
        r"'value' must be float64",
        r"'id' must be a UUID",
        r"sample_rate must be finite and > 0",
        r"'calibrated' must be a bool",
    ]
    for pattern in expected:
        assert any(re.search(pattern, p) for p in problems), (pattern, problems)
    assert len(problems) == len(expected), problems
    assert f"({len(expected)} problems)" in str(info.value)


def test_validate_reports_data_problems_alongside_attribute_problems() -> None:
    broken = _set_value(base_run(), 0, 1, np.nan, GOOD).assign_attrs(id="nope")
    with pytest.raises(dl.SchemaError) as info:
        dl.validate(broken)
    problems = info.value.problems
    assert len(problems) == 2, problems
    assert any("'id' must be a UUID" in p for p in problems), problems
    assert any("flagged GOOD" in p for p in problems), problems


def test_validate_reports_data_problems_alongside_coordinate_problems() -> None:
    # One error lists every problem found: a bad calibration offset (a per-channel
    # coordinate, unrelated to the samples) must not hide the NaN flagged GOOD nor
    # the quality value 7 found in the data.
    broken = _set_value(_set_value(base_run(), 0, 1, np.nan, GOOD), 1, 1, 1.0, 7)
    broken = broken.assign_coords(cal_offset=("channel", [0.0, np.inf]))
    with pytest.raises(dl.SchemaError) as info:
        dl.validate(broken)
    problems = info.value.problems
    assert any("cal_offset must be finite" in p for p in problems), problems
    assert any("flagged GOOD" in p for p in problems), problems
    assert any("outside [0, 1, 2, 3]" in p for p in problems), problems


# --------------------------------------------------------------------------- calibration


def _cal_run(values: NDArray[np.float64], slopes: list[float], offsets: list[float]) -> xr.Dataset:
    chans = [dl.Channel(f"c{i}", calibration=dl.Calibration(s, o, cast(Any, "2023-06-01")))
             for i, (s, o) in enumerate(zip(slopes, offsets, strict=True))]
    return dl.make_run(values, chans, sample_rate=50.0, start=START, id=RUN_ID,
                       created_at=START, metadata={"k": [1, 2]})


_magnitudes = st.floats(min_value=1e-100, max_value=1e100)
_slopes = st.tuples(_magnitudes, st.booleans()).map(lambda p: -p[0] if p[1] else p[0])
_offsets = st.floats(min_value=-1e100, max_value=1e100)
_values = st.one_of(st.floats(min_value=-1e100, max_value=1e100),
                    st.sampled_from([np.nan, np.inf, -np.inf, 0.0, -0.0]))


@st.composite
def _cal_cases(draw: st.DrawFn) -> tuple[NDArray[np.float64], list[float], list[float]]:
    c = draw(st.integers(1, 3))
    n = draw(st.integers(0, 12))
    values = draw(hnp.arrays(np.float64, (c, n), elements=_values))
    slopes = draw(st.lists(_slopes, min_size=c, max_size=c))
    offsets = draw(st.lists(_offsets, min_size=c, max_size=c))
    return values, slopes, offsets


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(_cal_cases())
def test_uncalibrate_undoes_calibrate_exactly(
    case: tuple[NDArray[np.float64], list[float], list[float]],
) -> None:
    values, slopes, offsets = case
    run = _cal_run(values, slopes, offsets)
    cal = dl.calibrate(run)
    dl.validate(cal)
    assert cal.attrs["calibrated"] is True
    expected = values * np.array(slopes)[:, None] + np.array(offsets)[:, None]
    np.testing.assert_array_equal(cal["value"].values, expected)
    np.testing.assert_array_equal(cal["raw"].values, values)
    back = dl.uncalibrate(cal)
    # bit for bit, signed zeros and NaN payloads included
    np.testing.assert_array_equal(back["value"].values.view(np.int64), values.view(np.int64))
    xr.testing.assert_identical(back, run)
    xr.testing.assert_identical(cal.daq.uncalibrate(), run)


def test_calibrate_keeps_everything_but_value() -> None:
    run = base_run()
    cal = dl.calibrate(run)
    assert cal.attrs == {**run.attrs, "calibrated": True}
    assert run.attrs["calibrated"] is False  # the input is not modified
    xr.testing.assert_identical(cal["quality"], run["quality"])
    assert set(cal.coords) == set(run.coords)
    for name in run.coords:
        xr.testing.assert_identical(cal[name], run[name])
    np.testing.assert_array_equal(cal["value"].values[0], 2.0 * run["value"].values[0] + 1.0)
    np.testing.assert_array_equal(cal["value"].values[1], run["value"].values[1])
    np.testing.assert_array_equal(cal["raw"].values, run["value"].values)
    assert cal["value"].attrs == run["value"].attrs
    xr.testing.assert_identical(run.daq.calibrate(), cal)


def test_calibrate_twice_is_an_error() -> None:
    cal = dl.calibrate(base_run())
    with pytest.raises(dl.AlreadyCalibratedError,
                       match=r"run 'base' is calibrated already.*daqlab\.uncalibrate") as info:
        dl.calibrate(cal)
    assert isinstance(info.value, dl.CalibrationError)
    assert isinstance(info.value, ValueError)
    with pytest.raises(dl.AlreadyCalibratedError):
        cal.daq.calibrate()


def test_calibrate_refuses_a_run_made_calibrated() -> None:
    run = dl.make_run([[1.0]], ["a"], sample_rate=1.0, calibrated=True)
    with pytest.raises(dl.AlreadyCalibratedError):
        dl.calibrate(run)


def test_uncalibrate_a_raw_run_is_an_error() -> None:
    run = base_run()
    with pytest.raises(dl.NotCalibratedError, match=r"run 'base' is not calibrated") as info:
        dl.uncalibrate(run)
    assert isinstance(info.value, dl.CalibrationError)
    with pytest.raises(dl.NotCalibratedError):
        run.daq.uncalibrate()


def test_calibrate_refuses_an_invalid_run() -> None:
    with pytest.raises(dl.SchemaError, match="'id' must be a UUID"):
        dl.calibrate(base_run().assign_attrs(id="x"))


def test_uncalibrate_restores_value_attributes() -> None:
    run = base_run()
    back = dl.uncalibrate(dl.calibrate(run))
    assert back["value"].attrs == run["value"].attrs
    assert back["value"].attrs == {"long_name": "sample value", "ancillary_variables": "quality"}


def test_uncalibrate_without_raw_inverts_arithmetically() -> None:
    run = _cal_run(np.array([[0.0, 1.0, -2.0, np.nan], [4.0, 8.0, 16.0, np.inf]]),
                   [4.0, 0.5], [1.0, -3.0])
    processed = dl.calibrate(run).drop_vars("raw")
    back = dl.uncalibrate(processed)
    assert back.attrs["calibrated"] is False
    assert "raw" not in back
    xr.testing.assert_identical(back, run)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_calibration_overflow_is_flagged_not_hidden() -> None:
    # A finite raw value whose physical value overflows to inf is not silently
    # good: the calibrated run must still follow the schema (non-finite -> BAD).
    run = _cal_run(np.array([[1e308, 1.0]]), [10.0], [0.0])
    cal = dl.calibrate(run)
    assert np.isinf(cal["value"].values[0, 0])
    assert cal["quality"].values[0, 0] == BAD
    dl.validate(cal)


def test_calibrate_stays_lazy_on_dask() -> None:
    values = np.random.default_rng(3).normal(size=(2, 95))
    run = _cal_run(values, [3.0, -0.25], [0.5, 100.0])
    lazy = run.chunk({"time": 10})
    computed: list[tuple[int, ...]] = []

    def spy(block: NDArray[np.float64]) -> NDArray[np.float64]:
        computed.append(block.shape)
        return block

    spied = lazy["value"].data.map_blocks(spy, dtype=np.float64, meta=np.array((), np.float64))
    lazy = lazy.assign(value=lazy["value"].copy(data=spied))
    cal = dl.calibrate(lazy)
    assert isinstance(cal["value"].data, da.Array)
    assert isinstance(cal["raw"].data, da.Array)
    assert isinstance(cal["quality"].data, da.Array)
    assert cal["value"].data.chunks == ((2,), (10,) * 9 + (5,))
    assert computed == [], "calibrate computed sample blocks"
    np.testing.assert_array_equal(
        cal["value"].values, values * np.array([[3.0], [-0.25]]) + np.array([[0.5], [100.0]])
    )
    assert computed, "the spy never ran: the test did not watch the value blocks"
    back = dl.uncalibrate(cal)
    assert isinstance(back["value"].data, da.Array)
    np.testing.assert_array_equal(back["value"].values, values)


# --------------------------------------------------------------------------- accessor


def test_accessor_channels_round_trip() -> None:
    chans = (
        dl.Channel("ai0", "V", range=(-10.0, 10.0),
                   calibration=dl.Calibration(2.5, -1.0, cast(Any, "2024-05-01T08:30:00Z"))),
        dl.Channel("Temperatur Kühlwasser", "degC", range=(-40.0, 125.0),
                   calibration=dl.Calibration(100.0, -50.0)),
    )
    run = dl.make_run(np.zeros((2, 3)), chans, sample_rate=20.0, start=START)
    got = run.daq.channels
    assert all(isinstance(c, dl.Channel) for c in got)
    assert got == chans
    assert got[0].calibration.reference_date == np.datetime64("2024-05-01T08:30:00", "ns")
    assert got[1].calibration.reference_date is None
    assert run.daq.channel("ai0") == chans[0]
    assert run.daq.channel_names == ["ai0", "Temperatur Kühlwasser"]


def test_accessor_channels_round_trip_with_open_ranges() -> None:
    chans = (
        dl.Channel("a", "V"),
        dl.Channel("b", "V", range=(0.0, None),
                   calibration=dl.Calibration(2.0, 1.0, cast(Any, "2024-05-01"))),
        dl.Channel("c", range=(None, 5.0)),
    )
    run = dl.make_run(np.zeros((3, 2)), chans, sample_rate=1.0, start=START)
    assert run.daq.channels == chans


def test_accessor_numbers() -> None:
    run = dl.make_run(
        [[0.0, np.nan, 20.0, 1.0], [1.0, 1.0, 1.0, 1.0]],
        [dl.Channel("a", range=(0, 10)), "b"],
        sample_rate=4.0, start=START, quality=[[0, 0, 0, 3], [0, 1, 2, 3]],
    )
    assert run.daq.sample_rate == 4.0
    assert run.daq.n_samples == 4
    assert run.daq.duration == pytest.approx(0.75)
    assert run.daq.calibrated is False
    assert dl.calibrate(run).daq.calibrated is True
    assert run.daq.quality_counts() == {
        "a": {"GOOD": 1, "SUSPECT": 1, "BAD": 1, "INTERPOLATED": 1},
        "b": {"GOOD": 1, "SUSPECT": 1, "BAD": 1, "INTERPOLATED": 1},
    }


def test_accessor_duration_of_one_sample() -> None:
    run = dl.make_run([[1.0]], ["a"], sample_rate=1.0, start=START)
    assert run.daq.duration == 0.0
    assert run.daq.n_samples == 1


def test_no_warnings_building_and_validating() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run = dl.make_run([[np.nan, np.inf, 1.0]], [dl.Channel("a", range=(0, 1))],
                          sample_rate=1.0)
        dl.validate(run)


@pytest.mark.parametrize(
    ("coord", "values"),
    [
        pytest.param("range_min", ["low", "low"], id="range-as-text"),
        pytest.param("range_max", [b"x", b"y"], id="range-as-bytes"),
        pytest.param("cal_slope", ["2", "2"], id="slope-as-text"),
        pytest.param("cal_offset", [None, None], id="offset-as-objects"),
    ],
)
def test_validate_reports_per_channel_numbers_of_the_wrong_kind(coord: str, values: list[object]) -> None:
    """A range or calibration of text was a raw numpy UFuncTypeError from inside validate."""
    run = dl.make_run(np.zeros((2, 3)), ["a", "b"], sample_rate=1.0)
    bad = run.assign_coords({coord: ("channel", np.array(values, dtype=object))})
    with pytest.raises(dl.SchemaError) as info:
        dl.validate(bad)
    assert f"coordinate {coord!r} must be float64" in str(info.value)
