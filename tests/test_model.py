"""Channel, Calibration, Quality and channel-name rules, with their error messages."""

from __future__ import annotations

import math
import re
from typing import Any, cast

import numpy as np
import pytest

import daqlab as dl
from daqlab.model import check_channel_name, to_channels

# --------------------------------------------------------------------------- Quality


def test_quality_values_and_cf_meanings() -> None:
    assert [int(q) for q in dl.Quality] == [0, 1, 2, 3]
    assert [q.name for q in dl.Quality] == ["GOOD", "SUSPECT", "BAD", "INTERPOLATED"]
    assert dl.Quality.meanings() == "good suspect bad interpolated"
    assert dl.Quality(2) is dl.Quality.BAD


# --------------------------------------------------------------------------- channel names


@pytest.mark.parametrize(
    "name",
    ["ai0", "Temperatur Kühlwasser", "T sensor (°C)", "温度", "a.b", "x-y_z", "...", "é"],
    ids=["plain", "umlaut-and-space", "degree-sign", "cjk", "inner-dot", "punctuation",
         "three-dots", "single-accent"],
)
def test_check_channel_name_accepts(name: str) -> None:
    assert check_channel_name(name) == name
    assert dl.Channel(name).name == name


@pytest.mark.parametrize(
    ("name", "fragments"),
    [
        ("", ["empty", "such as 'ai0'"]),
        ("a/b", ["'a/b'", "contains '/'", "Replace it"]),
        ("a\x00b", [re.escape(repr("a\x00b")), "U\\+0000", "Remove them"]),
        ("line\n", [re.escape(repr("line\n")), "U\\+000A", "Remove them"]),
        ("\tcol", [re.escape(repr("\tcol")), "U\\+0009", "Remove them"]),
        ("zero\u200bwidth", ["U\\+200B", "Remove them"]),
        (" ai0", ["' ai0'", "leading or trailing whitespace", "Use 'ai0'"]),
        ("ai0 ", ["'ai0 '", "leading or trailing whitespace", "Use 'ai0'"]),
        (".", ["'\\.'", "reserved", "Choose another"]),
        ("..", ["'\\.\\.'", "reserved", "Choose another"]),
    ],
    ids=["empty", "slash", "nul", "newline", "tab", "zero-width-space", "leading-space",
         "trailing-space", "dot", "dotdot"],
)
def test_bad_channel_names_say_what_and_how(name: str, fragments: list[str]) -> None:
    for make in (check_channel_name, dl.Channel):
        with pytest.raises(dl.ChannelError) as info:
            make(name)
        assert isinstance(info.value, ValueError)
        assert isinstance(info.value, dl.DaqlabError)
        for frag in fragments:
            assert re.search(frag, str(info.value)), (frag, str(info.value))


@pytest.mark.parametrize("name", [5, None, b"ai0"], ids=["int", "none", "bytes"])
def test_channel_name_must_be_str(name: object) -> None:
    with pytest.raises(dl.ChannelError, match=r"must be a str; got .*e\.g\. 'ai0'"):
        check_channel_name(name)


# --------------------------------------------------------------------------- Channel


def test_channel_defaults_and_normalisation() -> None:
    ch = dl.Channel("ai0")
    assert ch.unit == ""
    assert ch.calibration == dl.Calibration()
    assert math.isnan(ch.range_min)
    assert math.isnan(ch.range_max)
    ch = dl.Channel("ai0", "V", range=(-10, 10))
    assert ch.range == (-10.0, 10.0)
    assert all(type(v) is float for v in ch.range)


@pytest.mark.parametrize(
    ("rng", "lo", "hi"),
    [((None, 5), math.nan, 5.0), ((0, None), 0.0, math.nan), ((None, None), math.nan, math.nan),
     ((math.nan, 1.0), math.nan, 1.0), ((-math.inf, 0.0), -math.inf, 0.0),
     ((np.float32(-1), np.int64(3)), -1.0, 3.0)],
    ids=["open-min", "open-max", "both-open", "nan-min", "minus-inf-min", "numpy-scalars"],
)
def test_channel_range_open_ends(rng: Any, lo: float, hi: float) -> None:
    ch = dl.Channel("a", range=rng)
    np.testing.assert_equal([ch.range_min, ch.range_max], [lo, hi])


@pytest.mark.parametrize(
    ("rng", "fragments"),
    [
        ((1.0, 0.0), ["'c'", r"min >= max \(1\.0 >= 0\.0\)", "min < max"]),
        ((2.5, 2.5), ["'c'", r"min >= max \(2\.5 >= 2\.5\)", "min < max"]),
        (("low", 1), ["'c'", "numbers or None", r"\('low', 1\)"]),
        ((1.0,), ["'c'", r"\(min, max\) pair", r"got \(1\.0,\)", r"range=\(-10\.0, 10\.0\)"]),
        (5, ["'c'", r"\(min, max\) pair", "got 5", "None for no range"]),
        ((math.inf, 1.0), ["'c'", r"\(inf, 1\.0\)", r"\+inf"]),
        ((0.0, -math.inf), ["'c'", r"\(0\.0, -inf\)", "-inf"]),
    ],
    ids=["min-above-max", "min-equals-max", "non-numeric", "one-element", "scalar",
         "min-plus-inf", "max-minus-inf"],
)
def test_bad_channel_range(rng: Any, fragments: list[str]) -> None:
    with pytest.raises(dl.ChannelError) as info:
        dl.Channel("c", range=rng)
    assert isinstance(info.value, ValueError)
    for frag in fragments:
        assert re.search(frag, str(info.value)), (frag, str(info.value))


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"unit": 3}, r"unit of channel 'a' must be a str; got 3.*Use '' for no unit"),
        ({"unit": "V\n"}, r"unit 'V\\n' of channel 'a' contains control characters"),
        ({"unit": "\udcb0C"}, r"unit '\\udcb0C' of channel 'a' contains control characters or lone "
                              r"surrogates \(text decoded from bytes that were not UTF-8\)"),
        ({"calibration": 2.0}, r"calibration of channel 'a' must be a daqlab\.Calibration; "
                               r"got 2\.0.*Calibration\(slope, offset\)"),
    ],
    ids=["unit-not-str", "unit-control-char", "unit-surrogate", "calibration-not-calibration"],
)
def test_bad_channel_fields(kwargs: dict[str, Any], pattern: str) -> None:
    with pytest.raises(dl.ChannelError, match=pattern):
        dl.Channel("a", **kwargs)


def test_channel_is_frozen_and_equal_by_value() -> None:
    ch = dl.Channel("a", "V", range=(0, 1))
    with pytest.raises(AttributeError):
        ch.name = "b"  # type: ignore[misc]
    assert ch == dl.Channel("a", "V", range=(0.0, 1.0))
    assert ch != dl.Channel("a", "V", range=(0.0, 2.0))


@pytest.mark.parametrize(
    ("left", "right"),
    [((None, 1.0), (float("nan"), 1.0)), (None, (np.nan, np.nan)), ((0.0, None), (0.0, None))],
    ids=["none-vs-nan-min", "none-vs-numpy-nan", "same-open-max"],
)
def test_channel_equality_treats_every_open_end_alike(left: Any, right: Any) -> None:
    # NaN stands for "no bound"; two channels with the same open ends are the same
    # channel, however the NaN was spelled (runs hand back fresh NaN floats).
    assert dl.Channel("a", range=left) == dl.Channel("a", range=right)


# --------------------------------------------------------------------------- Calibration


def test_calibration_apply_invert_and_date() -> None:
    cal = dl.Calibration(slope=2.0, offset=1.0, reference_date=cast(Any, "2024-05-01T12:00:00Z"))
    assert cal.reference_date == np.datetime64("2024-05-01T12:00:00", "ns")
    raw = np.array([0.0, 1.0, -3.5])
    np.testing.assert_array_equal(cal.apply(raw), [1.0, 3.0, -6.0])
    np.testing.assert_array_equal(cal.invert(cal.apply(raw)), raw)
    assert not cal.is_identity
    assert dl.Calibration().is_identity
    assert dl.Calibration(reference_date=None).reference_date is None
    assert dl.Calibration(reference_date=np.datetime64("NaT")).reference_date is None


def test_calibration_aware_reference_date_becomes_utc() -> None:
    import datetime as dt

    tz = dt.timezone(dt.timedelta(hours=2))
    cal = dl.Calibration(reference_date=cast(Any, dt.datetime(2024, 5, 1, 2, 0, tzinfo=tz)))
    assert cal.reference_date == np.datetime64("2024-05-01T00:00:00", "ns")


def test_calibration_int_slope_is_float() -> None:
    cal = dl.Calibration(slope=3, offset=cast(Any, np.int32(-2)))
    assert type(cal.slope) is float
    assert type(cal.offset) is float
    assert (cal.slope, cal.offset) == (3.0, -2.0)


@pytest.mark.parametrize(
    ("slope", "offset", "pattern"),
    [
        (math.nan, 0.0, r"slope must be finite and non-zero; got nan.*slope=1\.0"),
        (0.0, 0.0, r"slope must be finite and non-zero; got 0\.0.*slope=1\.0"),
        (0, 0.0, r"slope must be finite and non-zero; got 0\b.*slope=1\.0"),
        (math.inf, 0.0, r"slope must be finite and non-zero; got inf.*slope=1\.0"),
        (-math.inf, 0.0, r"slope must be finite and non-zero; got -inf.*slope=1\.0"),
        (1.0, math.inf, r"offset must be finite; got inf.*offset=0\.0"),
        (1.0, math.nan, r"offset must be finite; got nan.*offset=0\.0"),
        ("2", 0.0, r"slope must be a real number; got '2' \(str\).*such as 1\.0"),
        (True, 0.0, r"slope must be a real number; got True \(bool\)"),
        (1.0, None, r"offset must be a real number; got None"),
    ],
    ids=["nan-slope", "zero-slope", "int-zero-slope", "inf-slope", "minus-inf-slope",
         "inf-offset", "nan-offset", "str-slope", "bool-slope", "none-offset"],
)
def test_bad_calibration(slope: Any, offset: Any, pattern: str) -> None:
    with pytest.raises(dl.CalibrationError, match=pattern) as info:
        dl.Calibration(slope=slope, offset=offset)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, dl.DaqlabError)


def test_bad_calibration_reference_date() -> None:
    with pytest.raises(dl.CalibrationError, match=r"reference_date.*got 'soon'.*2024-05-01"):
        dl.Calibration(reference_date=cast(Any, "soon"))


# --------------------------------------------------------------------------- to_channels


def test_to_channels_mixes_names_and_objects() -> None:
    chans = to_channels(["a", dl.Channel("b", "V")])
    assert [c.name for c in chans] == ["a", "b"]
    assert chans[1].unit == "V"
    assert all(isinstance(c, dl.Channel) for c in chans)


def test_to_channels_count_and_single() -> None:
    assert [c.name for c in to_channels(3)] == ["ch0", "ch1", "ch2"]
    assert [c.name for c in to_channels(cast(Any, np.int64(2)))] == ["ch0", "ch1"]
    assert [c.name for c in to_channels("solo")] == ["solo"]
    assert [c.name for c in to_channels(cast(Any, dl.Channel("x")))] == ["x"]
    assert [c.name for c in to_channels(iter(["p", "q"]))] == ["p", "q"]


@pytest.mark.parametrize(
    ("channels", "pattern"),
    [
        (["a", "b", "a", "b"], r"duplicate names \['a', 'b'\].*must be unique.*Rename"),
        (["a", dl.Channel("a", "V")], r"duplicate names \['a'\]"),
        ([], r"is empty; give at least one channel, e\.g\. \['ai0'\]"),
        (0, r"count must be >= 1; got 0\. Pass e\.g\. 8"),
        (-2, r"count must be >= 1; got -2"),
        (True, r"got a bool"),
        ([1.5], r"channel names \(str\) or daqlab\.Channel objects; got 1\.5 \(float\)"),
        (["ok", ""], r"channel name is empty"),
    ],
    ids=["duplicates", "duplicate-name-and-channel", "empty-list", "zero-count",
         "negative-count", "bool", "float-item", "empty-name-inside"],
)
def test_bad_channels(channels: Any, pattern: str) -> None:
    with pytest.raises(dl.ChannelError, match=pattern) as info:
        to_channels(channels)
    assert isinstance(info.value, ValueError)


def test_duplicate_channels_in_make_run() -> None:
    with pytest.raises(dl.ChannelError, match=r"duplicate names \['x'\]"):
        dl.make_run(np.zeros((2, 3)), ["x", "x"], sample_rate=1.0)


# --------------------------------------------------------------------------- sample rate


@pytest.mark.parametrize(
    ("rate", "pattern"),
    [
        (0, r"finite and > 0 Hz; got 0\. Pass e\.g\. 1000\.0"),
        (-5.0, r"finite and > 0 Hz; got -5\.0\. Pass e\.g\. 1000\.0"),
        (math.nan, r"finite and > 0 Hz; got nan"),
        (math.inf, r"finite and > 0 Hz; got inf"),
        (True, r"number of samples per second; got True \(bool\).*sample_rate=1000\.0"),
        ("1000", r"number of samples per second; got '1000' \(str\)"),
        (None, r"number of samples per second; got None"),
    ],
    ids=["zero", "negative", "nan", "inf", "bool", "str", "none"],
)
def test_bad_sample_rate(rate: Any, pattern: str) -> None:
    with pytest.raises(dl.ConfigurationError, match=pattern) as info:
        dl.make_run([[1.0]], ["a"], sample_rate=rate)
    assert isinstance(info.value, ValueError)
    with pytest.raises(dl.ConfigurationError, match=pattern):
        dl.RingBuffer(["a"], 16, sample_rate=rate)


def test_sample_rate_numpy_scalar_is_fine() -> None:
    run = dl.make_run([[1.0]], ["a"], sample_rate=cast(Any, np.float32(250.0)))
    assert run.attrs["sample_rate"] == 250.0
    assert type(run.attrs["sample_rate"]) is float


# --------------------------------------------------------------------------- make_run inputs


@pytest.mark.parametrize(
    ("values", "channels", "pattern"),
    [
        (np.zeros(5), ["a", "b"], r"= \(2, N\) for 2 channel\(s\); got shape \(5,\)"),
        (np.zeros(5), ["a"], r"got shape \(5,\)\. For one channel pass values\[np\.newaxis, :\]"),
        (np.zeros((5, 2)), ["a", "b"], r"got shape \(5, 2\)\. It looks transposed: pass values\.T"),
        (np.zeros((7, 1)), ["a"], r"got shape \(7, 1\)\. It looks transposed"),
        (np.zeros((3, 5)), ["a", "b"], r"= \(2, N\) for 2 channel\(s\); got shape \(3, 5\)\.$"),
        (np.zeros((2, 3, 4)), ["a", "b"], r"got shape \(2, 3, 4\)"),
        ([["x", "y"]], ["a"], r"values must be numeric.*'x'"),
    ],
    ids=["1d-two-channels", "1d-one-channel", "transposed", "transposed-one-channel",
         "wrong-channel-count", "3d", "non-numeric"],
)
def test_make_run_bad_values(values: Any, channels: list[str], pattern: str) -> None:
    with pytest.raises(dl.ShapeError, match=pattern) as info:
        dl.make_run(values, channels, sample_rate=10.0)
    assert isinstance(info.value, ValueError)


def test_make_run_transposed_message_says_transposed() -> None:
    values = np.zeros((100, 3))
    with pytest.raises(dl.ShapeError) as info:
        dl.make_run(values, ["a", "b", "c"], sample_rate=10.0)
    assert "transposed" in str(info.value)
    assert "(100, 3)" in str(info.value)


@pytest.mark.parametrize(
    ("quality", "pattern"),
    [
        ([[0, 7, 1]], r"quality values must be in \[0, 1, 2, 3\] \(daqlab\.Quality\); got \[7\]"),
        ([[-1, 0, 0]], r"got \[-1\]"),
        ([[9, 4, 0]], r"got \[4, 9\]"),
        ([[0, 0]], r"same shape as values \(1, 3\); got \(1, 2\)"),
    ],
    ids=["seven", "negative", "several", "wrong-shape"],
)
def test_make_run_bad_quality(quality: Any, pattern: str) -> None:
    with pytest.raises(dl.ShapeError, match=pattern):
        dl.make_run([[1.0, 2.0, 3.0]], ["a"], sample_rate=1.0, quality=quality)


@pytest.mark.parametrize(
    ("metadata", "pattern"),
    [
        ({"a": {1, 2}}, r"only JSON values.*set is not JSON serializable.*Convert"),
        ({"when": object()}, r"only JSON values.*object is not JSON serializable"),
        ({("k",): 1}, r"metadata keys must be str.*got \[\(.k.,\)\].*Convert"),
        ("operator=Ada", r"dict of JSON values; got str.*metadata=\{'operator': 'Ada'\}"),
        ([("a", 1)], r"dict of JSON values; got list"),
    ],
    ids=["set-value", "object-value", "tuple-key", "str", "list"],
)
def test_make_run_bad_metadata(metadata: Any, pattern: str) -> None:
    with pytest.raises(dl.ConfigurationError, match=pattern):
        dl.make_run([[1.0]], ["a"], sample_rate=1.0, metadata=metadata)


def test_make_run_metadata_non_str_key_is_refused() -> None:
    # check_metadata's docstring: "a dict of JSON values with str keys". JSON would
    # silently turn the int key into "1", so the run would not hold what was given.
    with pytest.raises(dl.ConfigurationError, match="key"):
        dl.make_run([[1.0]], ["a"], sample_rate=1.0, metadata=cast(Any, {1: "first"}))


def test_make_run_metadata_is_copied() -> None:
    meta: dict[str, Any] = {"operator": "Ada", "nested": {"list": [1, 2.5, None, True]}}
    run = dl.make_run([[1.0]], ["a"], sample_rate=1.0, metadata=meta)
    assert run.attrs["metadata"] == meta
    meta["nested"]["list"].append("later")
    assert run.attrs["metadata"]["nested"]["list"] == [1, 2.5, None, True]


@pytest.mark.parametrize(
    "bad_id",
    ["abc", "1234", "4b3a0e0e-6f0e-4f5e-9a39-1c0e8a4f3e2", 42],
    ids=["word", "digits", "one-digit-short", "int"],
)
def test_make_run_bad_id(bad_id: Any) -> None:
    with pytest.raises(dl.ConfigurationError, match=rf"id must be a UUID; got {bad_id!r}.*uuid4"):
        dl.make_run([[1.0]], ["a"], sample_rate=1.0, id=bad_id)


def test_make_run_id_accepts_uuid_object_and_text() -> None:
    import uuid

    u = uuid.uuid4()
    assert dl.make_run([[1.0]], ["a"], sample_rate=1.0, id=u).attrs["id"] == str(u)
    assert dl.make_run([[1.0]], ["a"], sample_rate=1.0, id=str(u).upper()).attrs["id"] == str(u)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"name": 3}, r"name must be a str; got 3"),
        ({"description": None}, r"description must be a str; got None"),
        ({"calibrated": "yes"}, r"calibrated must be True or False; got 'yes'"),
        ({"calibrated": 1}, r"calibrated must be True or False; got 1"),
    ],
    ids=["name-int", "description-none", "calibrated-str", "calibrated-int"],
)
def test_make_run_bad_attrs(kwargs: dict[str, Any], pattern: str) -> None:
    with pytest.raises(dl.ConfigurationError, match=pattern):
        dl.make_run([[1.0]], ["a"], sample_rate=1.0, **kwargs)


def test_make_run_times_and_start_together_refused() -> None:
    with pytest.raises(dl.ConfigurationError, match="either times or start"):
        dl.make_run([[1.0]], ["a"], sample_rate=1.0, times=["2024-01-01"], start="2024-01-01")


# --------------------------------------------------------------------------- positives


def test_unicode_and_spaced_names_make_a_valid_run() -> None:
    chans: list[dl.Channel | str] = [
             dl.Channel("Temperatur Kühlwasser", "°C", range=(None, 90.0)),
             dl.Channel("电压 1", "V", range=(-10.0, None)), "Δp (mbar)"]
    run = dl.make_run(np.zeros((3, 4)), chans, sample_rate=2.0, start="2024-01-01")
    dl.validate(run)
    assert run.daq.channel_names == ["Temperatur Kühlwasser", "电压 1", "Δp (mbar)"]
    assert run.daq.channel("电压 1").unit == "V"
    np.testing.assert_array_equal(run["range_min"].values, [np.nan, -10.0, np.nan])
    np.testing.assert_array_equal(run["range_max"].values, [90.0, np.nan, np.nan])


# --------------------------------------------------------------------------- ChannelNotFoundError


def test_channel_not_found_is_plain_keyerror() -> None:
    run = dl.make_run(np.zeros((2, 1)), ["a", "b"], sample_rate=1.0)
    with pytest.raises(dl.ChannelNotFoundError) as info:
        run.daq.channel("x")
    err = info.value
    assert isinstance(err, KeyError)
    assert isinstance(err, dl.DaqlabError)
    assert str(err) == "no channel 'x' in this run; it has ['a', 'b']."
    assert not str(err).startswith(("'", '"'))
    with pytest.raises(KeyError):
        run.daq.channel("x")


_HUGE = 10**400  # a Python int beyond float64's range: float() of it raises OverflowError


@pytest.mark.parametrize("call", [
    lambda r: dl.make_run([[_HUGE]], ["a"], sample_rate=1.0),
    lambda r: dl.make_run([[1.0]], ["a"], sample_rate=_HUGE),
    lambda r: dl.make_run([[1.0]], ["a"], sample_rate=1.0, times=[_HUGE]),
    lambda r: dl.empty_run(["a"], sample_rate=_HUGE),
    lambda r: dl.Calibration(_HUGE, 0.0),
    lambda r: dl.Calibration(1.0, -_HUGE),
    lambda r: dl.RingBuffer(["a"], _HUGE, 1.0),
    lambda r: dl.RingBuffer(["a"], 10, 1.0).push([[_HUGE]]),
    lambda r: dl.sources.Push(["a"], 1.0).feed([[_HUGE]]),
    lambda r: dl.sources.Push(["a"], _HUGE),
    lambda r: dl.sources.Simulated(["a"], sample_rate=_HUGE),
    lambda r: dl.sources.Sine(_HUGE),
    lambda r: dl.sources.Replay(r, speed=_HUGE),
    lambda r: dl.sources.Replay(r, block_duration=_HUGE),
    lambda r: dl.processing.lowpass(r, _HUGE),
    lambda r: dl.processing.lowpass(r, 10.0, order=_HUGE),
    lambda r: dl.processing.moving_average(r, _HUGE),
    lambda r: dl.processing.decimate(r, _HUGE),
    lambda r: dl.processing.resample(r, _HUGE),
])
def test_ints_beyond_float64_get_a_daqlab_error_not_an_overflow(call: Any) -> None:
    run = dl.make_run(np.zeros((1, 64)), ["a"], sample_rate=100.0, start="2024-01-01")
    with pytest.raises(dl.DaqlabError) as info:
        call(run)
    assert len(str(info.value)) < 600  # the 401-digit number is cut in the message


def test_ranges_beyond_float64_are_open_ends() -> None:
    assert dl.Channel("a", range=(-_HUGE, _HUGE)).range == (-math.inf, math.inf)


def test_channels_given_as_numbers_get_a_short_error_that_suspects_swapped_arguments() -> None:
    import numpy as np

    import daqlab as dl

    with pytest.raises(dl.ChannelError) as info:
        dl.make_run(np.ones((2, 1000)), np.ones((2, 1000)), sample_rate=1.0)
    message = str(info.value)
    assert len(message) < 300, message  # not the whole array
    assert "values and channels were swapped" in message
