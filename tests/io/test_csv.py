"""CSV runs (long and wide): exact round trips, the seed's plain CSV, what polars and pandas read
with their defaults, the metadata sidecar, formula safety, refusals."""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import re
import uuid
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dask.array as da
import h5py
import numpy as np
import pandas as pd
import polars as pl
import pyarrow.csv as pacsv
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import daqlab as dl
from daqlab.io import detect_format
from daqlab.io._csv import open_csv, save_csv, sidecar_path, sniff_csv
from tests.helpers import is_valid_channel_name

RUN_ID = "0d6c7a4e-2f8b-4c1d-9e3a-5b7f1a2c3d4e"
START = "2024-01-01T00:00:00Z"
FORMS = pytest.mark.parametrize("wide", [False, True], ids=["long", "wide"])
SEED_HEADER = "timestamp_ms,value,channel,quality"
LONG = ("timestamp_ms", "value", "channel", "quality")


def sample_run(n: int = 6, sample_rate: float = 3.0, channels: int = 3) -> xr.Dataset:
    chans = [
        dl.Channel("Kühlwasser, \"T\"", "°C", range=(0.0, 90.0),
                   calibration=dl.Calibration(2.0, -1.0, "2024-05-01T08:30:15.123456Z")),
        dl.Channel("=SUM(A1:A9)", "+V", range=(None, 5.0)),
        dl.Channel("'quoted", "-"),
        *(dl.Channel(f"ch{i}") for i in range(3, channels)),
    ][:channels]
    values = np.random.default_rng(11).normal(size=(channels, n))
    if n >= 4 and channels >= 3:
        values[0, 1], values[1, 2], values[2, 3] = np.nan, np.inf, -np.inf
    return dl.make_run(
        values, chans, sample_rate=sample_rate, start=START, id=RUN_ID,
        created_at="2024-01-02T03:04:05.678Z", name="@Prüfstand 3",
        description="line one\nline two, with ünïcode; =1+1",
        metadata={"operator": "Ada", "gain": 2.5, "tags": ["a", "ß", "-x"],
                  "nested": {"ok": True, "none": None, "=key": "+1"}, "big": float("inf")},
    )


def ns_run(times_ns: list[int]) -> xr.Dataset:
    times = np.array(times_ns, dtype=np.int64).view("datetime64[ns]")
    return dl.make_run(np.ones((1, len(times_ns))), ["a"], sample_rate=1.0, times=times, id=RUN_ID)


def round_trip(run: xr.Dataset, path: Path, *, wide: bool) -> xr.Dataset:
    assert save_csv(run, path, wide=wide, overwrite=True) == path
    back = open_csv(path)
    xr.testing.assert_identical(back, run)
    assert dl.validate(back) is back
    return back


def data_lines(path: Path) -> list[str]:
    return [ln for ln in path.read_text("utf-8").splitlines() if not ln.startswith("#")]


def sidecar(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(sidecar_path(path).read_text("utf-8"))
    return loaded


def reseal(path: Path) -> None:
    """Record the CSV's current size and checksum in its sidecar (as if daqlab wrote it so)."""
    header = sidecar(path)
    data = path.read_bytes()
    header["csv"] = {"bytes": len(data), "crc32": zlib.crc32(data)}
    sidecar_path(path).write_text(json.dumps(header), "utf-8")


# --------------------------------------------------------------------------- round trips


def _with_extra_attrs(n: int) -> xr.Dataset:
    run = sample_run(n)
    run.attrs.update(operator="-Ada", count=3, ratio=float("nan"), flag=False, nothing=None,
                     coeffs=np.array([1.5, -2.0], np.float32), pair=(1, "=a"), n16=np.int16(-7))
    return run


EXAMPLES: dict[str, Callable[[], xr.Dataset]] = {
    "six-samples": lambda: sample_run(6),
    "one-sample": lambda: sample_run(1),
    "no-samples": lambda: sample_run(0),
    "calibrated-with-raw": lambda: dl.calibrate(sample_run(6)),
    "calibrated-no-samples": lambda: dl.calibrate(sample_run(0)),
    "twelve-channels": lambda: sample_run(50, 1000.0, channels=12),
    "ns-timestamps": lambda: sample_run(40, 7.0),
    "extra-attrs": lambda: _with_extra_attrs(4),
    "pre-1970": lambda: ns_run([-1_500_000, -1, 0, 1]),
}


@FORMS
@pytest.mark.parametrize("make", EXAMPLES.values(), ids=EXAMPLES.keys())
def test_round_trip_is_identical(
    tmp_path: Path, wide: bool, make: Callable[[], xr.Dataset]
) -> None:
    round_trip(make(), tmp_path / "run.csv", wide=wide)


_ODD = st.sampled_from([*"aZ9 ,;\"'=+-@#:|%\\é中Δ€", "\u2028", "\u00a0"])
_NAMES = st.text(_ODD | st.characters(codec="utf-8", categories=["L", "N", "P", "S"]),
                 min_size=1, max_size=6).filter(is_valid_channel_name)
_TEXT = st.text(st.characters(codec="utf-8"), max_size=8) | st.sampled_from(
    ["=1+1", "+x", "-y", "@z", "'q", "''", "\tt", "\rr", "a,=b", "a;=b"])
_UNITS = st.text(st.characters(codec="utf-8", exclude_categories=["Cc"]), max_size=8) | st.sampled_from(
    ["=1+1", "+x", "-y", "@z", "'q", "''", "a,=b", "a;=b"])
_JSON: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _TEXT,
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(_TEXT, kids, max_size=3),
    max_leaves=8,
)
_EXTRA = st.dictionaries(
    st.text(min_size=1, max_size=5).filter(
        lambda k: k not in {"id", "name", "description", "created_at", "sample_rate", "metadata",
                            "calibrated"}),
    st.none() | st.booleans() | st.integers() | st.floats() | _TEXT
    | st.lists(st.integers(-5, 5), max_size=3),
    max_size=3,
)


@st.composite
def _channel(draw: st.DrawFn, name: str) -> dl.Channel:
    lo, hi = sorted(draw(st.lists(st.floats(-1e6, 1e6), min_size=2, max_size=2)))
    rng: tuple[float | None, float | None] | None = draw(
        st.sampled_from([None, (lo, hi) if lo < hi else None, (None, hi), (lo, None)]))
    slope = draw(st.floats(1e-3, 1e3) | st.floats(-1e3, -1e-3))
    offset = draw(st.floats(-1e3, 1e3))
    date = draw(st.none() | st.integers(-10**18, 4 * 10**18).map(lambda x: np.datetime64(x, "ns")))
    return dl.Channel(name, draw(_UNITS), range=rng, calibration=dl.Calibration(slope, offset, date))


@st.composite
def runs(draw: st.DrawFn) -> xr.Dataset:
    names = draw(st.lists(_NAMES, min_size=1, max_size=12, unique=True))
    chans = [draw(_channel(nm)) for nm in names]
    n = draw(st.integers(0, 8))
    unit = draw(st.sampled_from([1_000_000, 1_000, 1]))
    start = draw(st.integers(-10**9, 10**9)) * 10**9 // unit * unit
    steps = draw(st.lists(st.integers(0, 10**6), min_size=n, max_size=n))
    times = (start + np.cumsum(np.array(steps, dtype=np.int64)) * unit).view("datetime64[ns]")
    # finite values up to 1e300 (calibration overflow to inf is run.py's to test), plus specials
    values = draw(hnp.arrays(np.float64, (len(chans), n), elements=st.floats(-1e300, 1e300)
                             | st.sampled_from([np.nan, np.inf, -np.inf, -0.0, 5e-324])))
    quality = draw(hnp.arrays(np.int8, (len(chans), n), elements=st.integers(0, 3)))
    run = dl.make_run(
        values, chans, sample_rate=draw(st.floats(1e-3, 1e7)), times=times, quality=quality,
        name=draw(_TEXT), description=draw(_TEXT), id=uuid.UUID(int=draw(st.integers(0, 2**128 - 1))),
        metadata=draw(st.dictionaries(_TEXT, _JSON, max_size=4)),
        created_at=np.datetime64(draw(st.integers(0, 4 * 10**18)), "ns"),
    )
    run.attrs.update(draw(_EXTRA))
    return dl.calibrate(run) if draw(st.booleans()) else run


@FORMS
@settings(max_examples=35, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(run=runs())
def test_any_run_round_trips_identically(tmp_path: Path, wide: bool, run: xr.Dataset) -> None:
    round_trip(run, tmp_path / "run.csv", wide=wide)


@FORMS
def test_chunks_give_a_dask_backed_run(tmp_path: Path, wide: bool) -> None:
    run = sample_run(10)
    path = save_csv(run, tmp_path / "run.csv", wide=wide)
    back = open_csv(path, chunks={"time": 4})
    assert isinstance(back["value"].data, da.Array)
    assert back["value"].data.chunks == ((3,), (4, 4, 2))
    xr.testing.assert_identical(back.compute(), run)


# --------------------------------------------------------------------------- layout and timestamps


def test_long_form_is_the_seed_layout_with_integer_ms(tmp_path: Path) -> None:
    run = dl.make_run([[0.5, -1.5], [2.0, np.nan]], ["ai0", "ai1"], sample_rate=1000.0, start=START)
    path = save_csv(run, tmp_path / "run.csv")
    assert path.read_text("utf-8").splitlines() == [  # no comment line: the column names first
        SEED_HEADER,
        "1704067200000,0.5,ai0,Good",
        "1704067200000,2.0,ai1,Good",  # was "2": an integer to readers that guess types
        "1704067200001,-1.5,ai0,Good",
        "1704067200001,NaN,ai1,Bad",  # was "nan": text to polars
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.csv", "run.csv.daqlab.json"]
    assert sidecar(path)["time"] == {"encoding": "ms"}


SPECIAL_VALUES = [0.5, 2.0, -0.0, np.nan, np.inf, -np.inf, 1e300, 5e-324, 1e15, -3.0, 2.0**53]


def seed_like_run(n: int = 150) -> xr.Dataset:
    """A run whose first 100+ rows hold whole numbers only (polars guesses types from 100 rows)."""
    values = np.tile(np.arange(n, dtype=np.float64), (2, 1))
    values[0, -len(SPECIAL_VALUES):] = SPECIAL_VALUES
    return dl.make_run(values, ["ai0", "=ai1"], sample_rate=3.0,  # sub-ms times
                       start="2024-01-01T00:00:00.0004Z", id=RUN_ID, metadata={"k": 1})


def _frames(path: Path) -> dict[str, pl.DataFrame]:
    return {"read_csv": pl.read_csv(path), "scan_csv": pl.scan_csv(path).collect()}


@pytest.mark.parametrize("reader", ["read_csv", "scan_csv"])
def test_polars_defaults_read_the_long_form_as_the_seed_expects(tmp_path: Path, reader: str) -> None:
    run = seed_like_run()
    path = save_csv(run, tmp_path / "run.csv")
    frame = _frames(path)[reader]  # was: fails on the '# daqlab-csv' line
    assert frame.columns == list(LONG)
    assert frame.dtypes == [pl.Int64, pl.Float64, pl.String, pl.String]
    ms = run["time"].values.view(np.int64) // 1_000_000
    np.testing.assert_array_equal(frame["timestamp_ms"].to_numpy(), np.repeat(ms, 2))
    np.testing.assert_array_equal(frame["value"].to_numpy(), run["value"].values.T.ravel())
    assert frame["value"].null_count() == 0  # NaN is a float NaN, not a missing cell
    assert frame["channel"].unique(maintain_order=True).to_list() == ["ai0", "'=ai1"]
    assert set(frame["quality"].to_list()) == {"Good", "Bad"}


def test_names_that_need_quotes_leave_the_values_unquoted(tmp_path: Path) -> None:
    run = sample_run(6)  # 'Kühlwasser, "T"' must be quoted; values never are
    path = save_csv(run, tmp_path / "run.csv")
    assert data_lines(path)[1].startswith('1704067200000,-0.4') or ',"Kühlwasser, ""T""",' in (
        data_lines(path)[1])
    assert all(ln.split(",")[1][0] != '"' for ln in data_lines(path)[1:])
    for frame in (*_frames(path).values(), pl.from_pandas(pd.read_csv(path))):
        assert frame.dtypes == [pl.Int64, pl.Float64, pl.String, pl.String]
        assert frame["channel"].unique(maintain_order=True).to_list() == [
            'Kühlwasser, "T"', "'=SUM(A1:A9)", "''quoted"]
        np.testing.assert_array_equal(frame["value"].to_numpy(), run["value"].values.T.ravel())


def test_pandas_defaults_read_the_long_form(tmp_path: Path) -> None:
    run = seed_like_run()
    path = save_csv(run, tmp_path / "run.csv")
    frame = pd.read_csv(path)  # was: 63 columns taken from the comment line
    assert frame.columns.tolist() == list(LONG)
    assert frame["timestamp_ms"].dtype == np.int64
    assert frame["value"].dtype == np.float64
    assert pd.api.types.is_string_dtype(frame["channel"])
    assert pd.api.types.is_string_dtype(frame["quality"])
    np.testing.assert_array_equal(frame["value"].to_numpy(), run["value"].values.T.ravel())
    q = np.array(["Good", "Suspect", "Bad", "Interpolated"])[run["quality"].values.T.ravel()]
    assert frame["quality"].tolist() == q.tolist()


def test_polars_and_pandas_read_the_wide_form(tmp_path: Path) -> None:
    run = dl.calibrate(seed_like_run())
    path = save_csv(run, tmp_path / "run.csv", wide=True)
    expected = ["timestamp_ms"] + [f"{v}:{nm}" for nm in ("ai0", "=ai1")
                                   for v in ("value", "quality", "raw")]
    for name, frame in _frames(path).items():
        assert frame.columns == expected, name
        assert [str(t) for t in frame.dtypes] == ["Int64", *["Float64", "String", "Float64"] * 2]
        np.testing.assert_array_equal(frame["value:ai0"].to_numpy(), run["value"].values[0])
        np.testing.assert_array_equal(frame["raw:ai0"].to_numpy(), run["raw"].values[0])
    table = pd.read_csv(path)
    assert table.columns.tolist() == expected
    assert [table[c].dtype for c in ("timestamp_ms", "value:ai0", "raw:ai0")] == [
        np.int64, np.float64, np.float64]
    assert pd.api.types.is_string_dtype(table["quality:ai0"])


def test_calibrated_long_form_adds_raw_after_the_four(tmp_path: Path) -> None:
    run = dl.calibrate(seed_like_run())
    path = save_csv(run, tmp_path / "run.csv")
    for frame in _frames(path).values():
        assert frame.columns == [*LONG, "raw"]
        assert frame.dtypes == [pl.Int64, pl.Float64, pl.String, pl.String, pl.Float64]
        np.testing.assert_array_equal(frame["raw"].to_numpy(), run["raw"].values.T.ravel())
    xr.testing.assert_identical(open_csv(path), run)


def test_wide_form_columns(tmp_path: Path) -> None:
    run = dl.calibrate(sample_run(2, 1000.0))
    path = save_csv(run, tmp_path / "run.csv", wide=True)
    columns = next(csv.reader([data_lines(path)[0]]))
    names = run["channel"].values.tolist()
    assert columns == ["timestamp_ms"] + [f"{v}:{nm}" for nm in names
                                          for v in ("value", "quality", "raw")]
    assert data_lines(path)[1].startswith("1704067200000,")


@pytest.mark.parametrize(
    ("times_ns", "rate", "cells", "encoding"),
    [
        ([0, 1_000, 2_000], 1.0, ["0", "0", "0"], "sub-ms"),
        ([10**15, 10**15 + 1], 1.0, ["1000000000", "1000000000"], "sub-ms"),
        ([-1_500_000, -1, 0], 1.0, ["-2", "-1", "0"], "sub-ms"),
        ([-3_000_000, 5_000_000], 1.0, ["-3", "5"], "ms"),
        ([500, 333_333_833, 666_667_167], 3.0, ["0", "333", "666"], "grid"),
        ([-1, 999_999, 1_999_999], 1000.0, ["-1", "0", "1"], "grid"),
    ],
    ids=["microseconds", "nanoseconds", "before-1970", "whole-ms-negative", "grid-3Hz",
         "grid-before-1970"],
)
@FORMS
def test_finer_timestamps_are_whole_ms_in_the_csv_and_exact_in_the_sidecar(
    tmp_path: Path, wide: bool, times_ns: list[int], rate: float, cells: list[str], encoding: str
) -> None:
    run = ns_run(times_ns).assign_attrs(sample_rate=rate)
    path = tmp_path / "run.csv"
    back = round_trip(run, path, wide=wide)
    assert [ln.split(",")[0] for ln in data_lines(path)[1:]] == cells  # rounded down
    assert sidecar(path)["time"]["encoding"] == encoding
    np.testing.assert_array_equal(back["time"].values.view(np.int64), times_ns)


def test_irregular_sub_ms_times_of_a_long_run_are_exact_and_compact(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    times = (1_700_000_000 * 10**9 + np.cumsum(rng.integers(1, 10**7, 20_000))).astype(np.int64)
    run = ns_run(times.tolist())
    path = tmp_path / "run.csv"
    round_trip(run, path, wide=False)
    assert sidecar_path(path).stat().st_size < 6 * len(times)  # ~4 bytes a time, base64
    assert sidecar(path)["time"]["encoding"] == "sub-ms"


# --------------------------------------------------------------------------- formula injection


_FORMULA = ("=", "+", "-", "@", "\t", "\r")
_HARMLESS = re.compile(r"^-[\d.eE+-]*(Infinity)?[\]}]*$")  # a JSON number a sheet may see


def executable_cells(text: str) -> list[str]:
    """Cells a spreadsheet could run as a formula, however it splits and trims the lines."""
    found = []
    for delimiter in ",;":
        for row in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter):
            for cell in row:
                for seen in {cell, cell.strip(), cell.strip().strip('"')}:
                    if seen.startswith(_FORMULA) and not _HARMLESS.match(seen):
                        try:
                            float(seen)
                        except ValueError:
                            found.append(seen)
    return found


def _formula_run() -> xr.Dataset:
    chans = [dl.Channel("=HYPERLINK(\"http:x\",\"y\")", "@unit", range=(-1.0, 1.0)),
             dl.Channel("+cmd|' -C calc'!A0", "-V"), dl.Channel("'already", "'"),
             dl.Channel("-2+3", "=1")]
    return dl.make_run(
        [[-1.5, 0.5], [1e-300, -2.0], [3.0, 4.0], [-np.inf, 5.0]], chans, sample_rate=1.0,
        start=START, id=RUN_ID, name="=cmd()", description="@SUM(1), =2;=3\t+4",
        metadata={"=k": "-v", "list": ["+a", "x,=IMPORTXML(a)", "y;@z", "'q"], "n": -1.5},
    ).assign_attrs(extra="\t=tabbed", other="\r+cr")


@FORMS
def test_formula_cells_are_neutralised_and_restored(tmp_path: Path, wide: bool) -> None:
    run = _formula_run()
    path = tmp_path / "run.csv"
    round_trip(run, path, wide=wide)
    text = path.read_text("utf-8")
    assert executable_cells(text) == []
    if not wide:
        assert "'=HYPERLINK(\"\"http:x\"\",\"\"y\"\")" in text
        assert ",\"''already\"," in text or ",''already," in text


def test_executable_cells_finds_raw_formulas() -> None:
    assert executable_cells("a,=1+1\n# x; @cmd\n") == ["=1+1", "@cmd"]
    assert executable_cells("1,-1.5,[1, -2]\n") == []


# --------------------------------------------------------------------------- the seed's plain CSV


SEED_ROWS = [
    "1704067200000,1.5,ai0,Good",
    "1704067200000,NaN,ai1,good",
    "1704067200010,-2.25,ai0,SUSPECT",
    "1704067200010,inf,ai1,Bad",
    "1704067200020,3,ai0,3",
    "1704067200020,-inf,ai1,Interpolated",
]
SEED_FILES = {
    "lf": (SEED_HEADER + "\n" + "\n".join(SEED_ROWS) + "\n").encode(),
    "crlf-no-final-newline": (SEED_HEADER + "\r\n" + "\r\n".join(SEED_ROWS)).encode(),
    "utf8-bom": b"\xef\xbb\xbf" + (SEED_HEADER + "\n" + "\n".join(SEED_ROWS) + "\n").encode(),
    "channel-major-rows": ("quality,channel,value,timestamp_ms\n" + "\n".join(
        ",".join(reversed(r.split(","))) for r in SEED_ROWS[0::2] + SEED_ROWS[1::2]) + "\n").encode(),
}


@pytest.mark.parametrize("content", SEED_FILES.values(), ids=SEED_FILES.keys())
def test_seed_plain_csv_opens_with_stated_defaults(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "rust run.csv"
    path.write_bytes(content)
    assert sniff_csv(content[:4096]) == "csv"
    run = open_csv(path)
    assert dl.validate(run) is run
    assert run["channel"].values.tolist() == ["ai0", "ai1"]
    np.testing.assert_array_equal(run["value"].values, [[1.5, -2.25, 3.0], [np.nan, np.inf, -np.inf]])
    # a NaN the seed flagged Good is flagged Bad; every other flag is kept
    np.testing.assert_array_equal(run["quality"].values, [[0, 1, 3], [2, 2, 3]])
    assert run["time"].values[0] == np.datetime64("2024-01-01T00:00:00", "ns")
    assert run["time"].values[2] == np.datetime64("2024-01-01T00:00:00.020", "ns")
    assert run["unit"].values.tolist() == ["", ""]
    assert np.isnan(run["range_min"].values).all()
    assert np.isnan(run["range_max"].values).all()
    assert run["cal_slope"].values.tolist() == [1.0, 1.0]
    assert run["cal_offset"].values.tolist() == [0.0, 0.0]
    assert np.isnat(run["cal_date"].values).all()
    attrs = dict(run.attrs)
    run_id = attrs.pop("id")
    assert uuid.UUID(run_id).version == 4
    assert open_csv(path).attrs["id"] == run_id  # the same file gives the same id
    assert attrs == {"name": "rust run", "description": "", "created_at": "2024-01-01T00:00:00.000000Z",
                     "sample_rate": 100.0, "metadata": {}, "calibrated": False}


def test_plain_wide_csv_opens(tmp_path: Path) -> None:
    path = tmp_path / "wide.csv"
    path.write_text("timestamp_ms,value:ai0,quality:ai0,value:ai 1,quality:ai 1\n"
                    "0,1.0,Good,2.0,good\n500,,bad,3.0,1\n1500,4,0,5,2\n", "utf-8")
    assert sniff_csv(path.read_bytes()) == "csv-wide"
    run = open_csv(path)
    assert run["channel"].values.tolist() == ["ai0", "ai 1"]
    np.testing.assert_array_equal(run["value"].values, [[1.0, np.nan, 4.0], [2.0, 3.0, 5.0]])
    np.testing.assert_array_equal(run["quality"].values, [[0, 2, 0], [0, 1, 2]])
    assert run.attrs["sample_rate"] == 1.0 / 0.75  # median step 750 ms
    assert run.attrs["name"] == "wide"


def test_plain_wide_csv_without_rows_keeps_its_channels(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("timestamp_ms,value:a,quality:a\n", "utf-8")
    run = open_csv(path)
    assert dict(run.sizes) == {"channel": 1, "time": 0}
    assert run.attrs["sample_rate"] == 1.0


# --------------------------------------------------------------------------- sniffing


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b'# daqlab-csv {"format": "csv", "schema_version": 1', "csv"),
        (b'\xef\xbb\xbf# daqlab-csv {"format": "csv-wide", "sch', "csv-wide"),
        (b"timestamp_ms,value,channel,quality\n1,2,a,Good\n", "csv"),
        (b"# a comment\n\nquality,channel,value,timestamp_ms\r\n", "csv"),
        (b"timestamp_ms,value:a,quality:a,value:b", "csv-wide"),
        (b"timestamp_ms,value,channel,quality,raw\n", "csv"),
        (b"timestamp_ms\n1704067200000\n", "csv-wide"),
        (b"timestamp_ms,value,channel\n", None),
        (b"a,b,c\n1,2,3\n", None),
        (b"\x89HDF\r\n\x1a\n\x00\x00", None),
        (b"CDF\x01\x00", None),
        (b"", None),
        (b"\xff\xfe\x00\x01", None),
    ],
    ids=["daqlab-long", "daqlab-wide-bom", "seed", "seed-comments-crlf", "plain-wide",
         "calibrated-long", "wide-no-channels", "missing-column",
         "foreign-csv", "hdf5", "netcdf3", "empty", "binary"],
)
def test_sniff_csv(head: bytes, expected: str | None) -> None:
    assert sniff_csv(head) == expected


@FORMS
def test_sniff_recognises_what_save_writes(tmp_path: Path, wide: bool) -> None:
    path = save_csv(sample_run(3), tmp_path / "run.csv", wide=wide)
    assert sniff_csv(path.read_bytes()[:4096]) == ("csv-wide" if wide else "csv")


# --------------------------------------------------------------------------- refusals


def _row(ts: str = "1", value: str = "1.0", channel: str = "a", quality: str = "Good") -> str:
    return f"{ts},{value},{channel},{quality}\n"


CORRUPT: dict[str, tuple[bytes, str]] = {
    "empty-file": (b"", "is empty"),
    "only-blank-lines": (b"\n\n", "ends before its column names"),
    "foreign-columns": (b"a,b,c\n1,2,3\n", "is not a daqlab CSV: its columns are ['a', 'b', 'c']"),
    "missing-column": (b"timestamp_ms,value,channel\n1,2,a\n", "missing column(s) ['quality']"),
    "unexpected-column": ((SEED_HEADER + ",unit\n").encode(), "unexpected column(s) ['unit']"),
    "duplicated-column": ((SEED_HEADER + ",value\n").encode(), "duplicated column(s) ['value']"),
    "unparseable-timestamp": ((SEED_HEADER + "\n" + _row(ts="yesterday")).encode(),
                              "'yesterday' is not a valid decimal128"),
    "finer-than-ns": ((SEED_HEADER + "\n" + _row(ts="1.0000001")).encode(), "#0 timestamp_ms"),
    "timestamp-out-of-range": ((SEED_HEADER + "\n" + _row(ts="10000000000000")).encode(),
                               "beyond the datetime64[ns] range"),
    "empty-timestamp": ((SEED_HEADER + "\n" + _row(ts="")).encode(), "empty timestamp_ms cell"),
    "unparseable-value": ((SEED_HEADER + "\n" + _row(value="1,5")).encode(),
                          "Expected 4 columns, got 5"),
    "text-value": ((SEED_HEADER + "\n" + _row(value="high")).encode(), "invalid value 'high'"),
    "unknown-quality": ((SEED_HEADER + "\n" + _row() + _row(ts="2", quality="Great")).encode(),
                        "unknown quality name(s) ['Great'] (first in data row 2)"),
    "quality-out-of-range": ((SEED_HEADER + "\n" + _row(quality="7")).encode(),
                             "unknown quality name(s) ['7']"),
    "uneven-channels": ((SEED_HEADER + "\n" + _row() + _row(channel="b") + _row(ts="2")).encode(),
                        "different numbers of samples ('a': 2, 'b': 1)"),
    "different-timestamps": ((SEED_HEADER + "\n" + _row() + _row(channel="b")
                              + _row(ts="2") + _row(ts="3", channel="b")).encode(),
                             "channel 'b' has timestamps that differ from channel 'a'"),
    "empty-channel-name": ((SEED_HEADER + "\n" + _row(channel="")).encode(),
                           "does not hold a valid run: channel name is empty"),
    "header-only": ((SEED_HEADER + "\n").encode(), "holds no rows, so no channels"),
    "wide-time-backwards": (b"timestamp_ms,value:a,quality:a\n5,1,Good\n3,2,Good\n",
                            "must be non-decreasing"),
    "wide-missing-quality": (b"timestamp_ms,value:a\n5,1\n", "missing column(s) ['quality:a']"),
    "not-utf8": (b"\xff\xfe\x00t\x00i\x00m\x00e\n", "is not UTF-8 text"),
    "hdf5": (b"\x89HDF\r\n\x1a\n\x00\x00\x00\x00", "is not UTF-8 text"),
    "broken-header-json": (b'# daqlab-csv {"format": "csv", "sche\n' + SEED_HEADER.encode() + b"\n",
                           "header line is not valid JSON"),
    "header-without-version": (b'# daqlab-csv {"format": "csv"}\n', "has no schema_version"),
    "header-incomplete": (b'# daqlab-csv {"format": "csv", "schema_version": 1}\n',
                          "header line lacks ['samples'"),
    "header-odd-variables": (
        b'# daqlab-csv {"format": "csv", "schema_version": 1, "samples": 1, "timestamp_decimals": 0, '
        b'"channels": [], "variables": ["value", "x"], "attrs": {}, "attr_types": {}, '
        b'"var_attrs": {}}\n', "unknown variables ['value', 'x']; no channels but 1 sample(s)"),
    "header-channels-not-a-list": (
        b'# daqlab-csv {"format": "csv", "schema_version": 1, "samples": 0, "timestamp_decimals": 0, '
        b'"channels": {}, "variables": ["value", "quality"], "attrs": {}, "attr_types": {}, '
        b'"var_attrs": {}}\n', "no list of channels"),
}


@pytest.mark.parametrize(("content", "fragment"), CORRUPT.values(), ids=CORRUPT.keys())
def test_corrupt_or_foreign_csv_raises_format_error(
    tmp_path: Path, content: bytes, fragment: str
) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(dl.FormatError) as info:
        open_csv(path)
    assert str(path) in str(info.value)
    assert fragment in str(info.value)


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text("utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), "utf-8")


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = save_csv(sample_run(3), tmp_path / "run.csv")
    _edit(sidecar_path(path), f'"schema_version": {dl.SCHEMA_VERSION},',
          f'"schema_version": {dl.SCHEMA_VERSION + 1},')
    with pytest.raises(dl.FormatError, match=rf"schema version {dl.SCHEMA_VERSION + 1} .*Upgrade"):
        open_csv(path)


def _two_channel_run() -> xr.Dataset:
    chans = [dl.Channel("a", calibration=dl.Calibration(2.0)), dl.Channel("Δp", range=(0, 0.1))]
    return dl.make_run([[1.0, 2.0, 3.0], [0.5, 0.0, 0.2]], chans, sample_rate=3.0, start=START)


@pytest.mark.parametrize(
    ("old", "new", "fragment"),
    [
        ("1704067200666,3.0,a,Good\n1704067200666,0.2,Δp,Suspect\n", "",
         "promises 3 sample(s) per channel but the file holds 2"),
        (",Δp,", ",Δq,", "name channel(s) ['Δq'] that the header does not list"),
        (",Suspect", ",Superb", "unknown quality name(s) ['Superb']"),
        ("1704067200666,3.0,a,Good\n1704067200666,", "1704067200667,3.0,a,Good\n1704067200667,",
         "exact times do not round down to the CSV's"),
    ],
    ids=["row-removed", "unknown-channel", "bad-quality", "time-changed"],
)
def test_edited_daqlab_csv_is_refused(tmp_path: Path, old: str, new: str, fragment: str) -> None:
    path = save_csv(_two_channel_run(), tmp_path / "run.csv")
    _edit(path, old, new)
    with pytest.raises(dl.FormatError, match="does not belong to this CSV"):
        open_csv(path)
    reseal(path)  # even a sidecar made to match the edited CSV does not let it pass
    with pytest.raises(dl.FormatError, match=re.escape(fragment)):
        open_csv(path)


@pytest.mark.parametrize(
    ("old", "new", "fragment"),
    [
        ('"cal_slope": 2.0', '"cal_slope": 0.0', "is damaged (Calibration slope"),
        ('"encoding": "grid"', '"encoding": "seconds"', "unknown time encoding 'seconds'"),
        ('"start_ns": 1704067200000000000', '"start_ns": "x"', "'time' entry cannot be used"),
        ('"variables": [', '"variables": ["x", ', "is damaged: unknown variables"),
        ('"samples": 3,', '', "lacks ['samples']"),
        ('"format": "csv",', '"format": "csv", "x": [', "is not valid JSON"),
        ('"sample_rate": 3.0\n', '"sample_rate": 0\n', "sample_rate 0 is not a positive finite"),
        ('"attr_types": {', '"attr_types": 7, "x": {', "is damaged: attr_types is 7, not an object"),
        ('"var_attrs": {', '"var_attrs": [], "x": {', "is damaged: var_attrs is not an object"),
    ],
    ids=["zero-slope", "time-encoding", "time-start", "variables", "no-samples", "not-json",
         "zero-rate", "attr-types", "var-attrs"],
)
def test_damaged_sidecar_is_refused(tmp_path: Path, old: str, new: str, fragment: str) -> None:
    path = save_csv(_two_channel_run(), tmp_path / "r.csv")
    assert sidecar(path)["time"]["encoding"] == "grid"
    _edit(sidecar_path(path), old, new)
    with pytest.raises(dl.FormatError) as info:
        open_csv(path)
    assert fragment in str(info.value)
    assert f"{sidecar_path(path)} (the metadata of r.csv)" in str(info.value)


def _entries(obj: Any, at: tuple[Any, ...] = ()) -> Any:
    """The path of every entry of a JSON object, its lists' first two items included."""
    items = obj.items() if isinstance(obj, dict) else enumerate(obj[:2]) if isinstance(obj, list) \
        else ()
    for k, v in items:
        if at or k != "csv":  # the CSV's fingerprint: changing it is refused as another CSV's
            yield (*at, k)
            yield from _entries(v, (*at, k))


@FORMS
def test_any_entry_of_a_sidecar_edited_to_any_kind_is_a_format_error(tmp_path: Path, wide: bool
                                                                     ) -> None:
    """A hand-edited sidecar gives a FormatError or opens, never a raw error or a numpy warning."""
    ch = dl.Channel("a", "V", calibration=dl.Calibration(2.0, 1.0, "2024-01-01"))
    run = dl.calibrate(dl.make_run(np.arange(6.0).reshape(2, 3), [ch, "b"], sample_rate=3.0,
                                   start="2024-01-01T00:00:00.0001", metadata={"x": (1, 2)}))
    run.attrs["arr"] = np.arange(3)
    path = save_csv(run, tmp_path / "r.csv", wide=wide)
    side = sidecar_path(path)
    original = json.loads(side.read_text())
    raw: list[str] = []
    for at in _entries(original):
        junk: Any
        for junk in (0, -1.5, "x", None, [], {}, 1e308, True, 2**70):
            edited = json.loads(json.dumps(original))
            parent = edited
            for k in at[:-1]:
                parent = parent[k]
            parent[at[-1]] = junk
            side.write_text(json.dumps(edited))
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("error")
                    open_csv(path)
            except dl.FormatError:
                pass
            except Exception as exc:  # collected and reported below
                raw.append(f"{at} = {junk!r}: {type(exc).__name__}: {exc}")
    assert not raw, "\n".join(raw[:10])


@FORMS
def test_truncation_anywhere_is_detected(tmp_path: Path, wide: bool) -> None:
    run = dl.calibrate(dl.make_run([[1.0, 2.5], [3.25, -4.0]], ["a", "b"], sample_rate=3.0,
                                   start=START, id=RUN_ID, created_at=START))
    path = save_csv(run, tmp_path / "run.csv", wide=wide)
    full = path.read_bytes()
    for size in range(len(full)):
        path.write_bytes(full[:size])
        with pytest.raises(dl.FormatError, match=r"does not belong to this CSV: it describes a CSV "
                           rf"of \{{'bytes': {len(full)}, 'crc32': \d+\}} .* but run.csv has "
                           rf"\{{'bytes': {size}"):
            open_csv(path)


# --------------------------------------------------------------------------- saving


def test_invalid_runs_are_not_written(tmp_path: Path) -> None:
    path = tmp_path / "run.csv"
    with pytest.raises(dl.SchemaError, match="attribute 'calibrated'"):
        save_csv(sample_run(2).assign_attrs(calibrated="no"), path)
    bad_quality = sample_run(2)
    bad_quality["quality"].values[0, 0] = 7
    with pytest.raises(dl.SchemaError, match=r"outside 0-3.*\[7\]"):
        save_csv(bad_quality, path)
    with pytest.raises(dl.FormatError, match=r"also has \['site'\]"):
        save_csv(sample_run(2).assign_coords(site="lab"), path)
    with pytest.raises(dl.FormatError, match="cannot store run attribute 'obj'"):
        save_csv(sample_run(2).assign_attrs(obj=object()), path)
    assert list(tmp_path.iterdir()) == []


def test_existing_file_is_kept_unless_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "run.csv"
    path.write_text("precious")
    with pytest.raises(dl.StorageError, match="exists already"):
        save_csv(sample_run(2), path)
    assert path.read_text() == "precious"
    save_csv(sample_run(2), path, overwrite=True)
    xr.testing.assert_identical(open_csv(path), sample_run(2))


def test_failed_write_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "run.csv"
    path.write_text("precious")

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pacsv, "write_csv", disk_full)
    with pytest.raises(dl.StorageError, match="No space left"):
        save_csv(sample_run(2), path, overwrite=True)
    assert path.read_text() == "precious"
    assert [p.name for p in tmp_path.iterdir()] == ["run.csv"]


# --------------------------------------------------------------------------- the sidecar


def test_existing_sidecar_is_kept_unless_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "run.csv"
    sidecar_path(path).write_text("precious")  # left by a save interrupted before the CSV's rename
    with pytest.raises(dl.StorageError, match=r"run.csv.daqlab.json exists already: it holds the "
                       r"metadata of a CSV run named run.csv .*pass overwrite=True"):
        save_csv(sample_run(2), path)
    assert sidecar_path(path).read_text() == "precious"
    assert [p.name for p in tmp_path.iterdir()] == ["run.csv.daqlab.json"]
    save_csv(sample_run(2), path, overwrite=True)
    xr.testing.assert_identical(open_csv(path), sample_run(2))


def test_failed_sidecar_write_leaves_the_old_pair(tmp_path: Path) -> None:
    path = save_csv(sample_run(2), tmp_path / "run.csv")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(dl.FormatError, match="cannot store run attribute 'bad'"):
        save_csv(sample_run(3).assign_attrs(bad={1: 2}), path, overwrite=True)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    xr.testing.assert_identical(open_csv(path), sample_run(2))


@FORMS
def test_an_interrupted_overwrite_is_detected(tmp_path: Path, wide: bool) -> None:
    # the state a crash between the two renames leaves: the new sidecar beside the old CSV
    old, new = tmp_path / "old.csv", tmp_path / "new.csv"
    save_csv(sample_run(3), old, wide=wide)
    save_csv(sample_run(4), new, wide=wide)
    os.replace(sidecar_path(new), sidecar_path(old))
    with pytest.raises(dl.FormatError) as info:
        dl.open_run(old)
    message = str(info.value)
    assert f"{sidecar_path(old)} (the metadata of old.csv) does not belong to this CSV" in message
    assert "a save was interrupted between writing the two files" in message
    assert "move old.csv.daqlab.json away to open old.csv as a plain CSV" in message
    # as the message says: without the sidecar it opens as a plain CSV, samples intact
    sidecar_path(old).unlink()
    plain = dl.open_run(old)
    np.testing.assert_array_equal(plain["value"].values, sample_run(3)["value"].values)
    assert plain.attrs["metadata"] == {}


@FORMS
def test_a_calibrated_csv_without_its_sidecar_opens_plain(tmp_path: Path, wide: bool) -> None:
    run = dl.calibrate(seed_like_run(20))
    path = save_csv(run, tmp_path / "run.csv", wide=wide)
    sidecar_path(path).unlink()
    plain = open_csv(path)  # was: "unexpected column(s) ['raw']"
    assert "raw" not in plain.data_vars
    assert plain.attrs["calibrated"] is False
    np.testing.assert_array_equal(plain["value"].values, run["value"].values)  # as written
    # a plain file is read as it is: the long form's protected name keeps its "'"
    assert plain["channel"].values.tolist() == ["ai0", "=ai1" if wide else "'=ai1"]


def test_a_csv_edited_by_hand_is_detected(tmp_path: Path) -> None:
    path = save_csv(sample_run(3), tmp_path / "run.csv")
    text = path.read_text("utf-8")
    path.write_text(text.replace("Good", "Bad", 1), "utf-8")  # same size, other bytes
    with pytest.raises(dl.FormatError, match=r"does not belong to this CSV.*The CSV was changed "
                       r"after daqlab wrote it"):
        open_csv(path)


def test_leftover_temporary_files_are_ignored(tmp_path: Path) -> None:
    path = save_csv(sample_run(3), tmp_path / "run.csv")
    # what a save killed before its renames leaves: hidden names, never the final ones
    (tmp_path / ".run.csv.0badc0de.tmp").write_text("timestamp_ms,val")
    (tmp_path / ".run.csv.daqlab.json.0badc0de.tmp").write_text("{")
    xr.testing.assert_identical(open_csv(path), sample_run(3))
    xr.testing.assert_identical(dl.open_run(path), sample_run(3))
    assert detect_format(path) == "csv"


@FORMS
def test_open_run_and_the_xarray_engine_find_the_sidecar(tmp_path: Path, wide: bool) -> None:
    run = dl.calibrate(seed_like_run(20))
    path = dl.save(run, tmp_path / "run.csv", "csv-wide" if wide else "csv")
    assert sidecar_path(path).is_file()
    xr.testing.assert_identical(dl.open_run(path), run)
    xr.testing.assert_identical(xr.open_dataset(path, engine="daqlab-csv").load(), run)
    assert sorted(p.name for p in tmp_path.glob("*.csv")) == ["run.csv"]
    # a glob of every file joins the runs, not their sidecars
    xr.testing.assert_identical(dl.open_runs(str(tmp_path / "*")).drop_attrs(), run.drop_attrs())


@pytest.mark.parametrize("wide", [False, True])
def test_times_at_the_ends_of_datetime64_ns_round_trip_or_are_refused(tmp_path: Path, wide: bool
                                                                      ) -> None:
    fmt = "csv-wide" if wide else "csv"
    first, last = np.iinfo(np.int64).min + 1, np.iinfo(np.int64).max
    for ns in ([first + 775_807, first + 775_808], [last - 1, last]):
        t = np.array(ns, np.int64).view("datetime64[ns]")
        run = dl.make_run(np.zeros((1, 2)), ["a"], sample_rate=1.0, times=t)
        path = dl.save(run, tmp_path / "edge.csv", fmt, overwrite=True)
        xr.testing.assert_identical(dl.open_run(path), run)
    # the millisecond before 1677-09-21T00:12:43.146 rounds down out of datetime64[ns]: refused
    run = dl.make_run(np.zeros((1, 2)), ["a"], sample_rate=1.0,
                      times=np.array([first + 775_806, first + 10**6], np.int64).view("datetime64[ns]"))
    with pytest.raises(dl.FormatError, match=r"cannot write early\.csv as CSV: its first time, "
                       r"1677-09-21T00:12:43\.145999999, is before 1677-09-21T00:12:43\.146\. .* "
                       r"Save this run as NetCDF"):
        dl.save(run, tmp_path / "early.csv", fmt)
    assert not (tmp_path / "early.csv").exists()
    xr.testing.assert_identical(dl.open_run(dl.save(run, tmp_path / "early.nc")), run)


def test_a_glob_drops_the_sidecars_of_the_csvs_it_lists_and_nothing_else(tmp_path: Path) -> None:
    parts = [dl.make_run([[float(i)] * 2], ["a"], sample_rate=1.0, start=f"2024-01-0{i + 1}")
             for i in range(3)]
    dl.save(parts[0], tmp_path / "first.csv")
    dl.save(parts[1], tmp_path / ("é" * 125 + ".csv"))  # its sidecar's name is shortened
    dl.save(parts[2], tmp_path / "third.daqlab.json", "netcdf")  # a run, whatever its name
    assert len(list(tmp_path.iterdir())) == 5
    joined = dl.open_runs(str(tmp_path / "*")).load()
    np.testing.assert_array_equal(joined["value"].values, [[0.0, 0.0, 1.0, 1.0, 2.0, 2.0]])
    assert [Path(s["path"]).name for s in joined.attrs["metadata"]["sources"]][2] == \
        "third.daqlab.json"


def test_a_long_csv_name_gets_a_sidecar_within_255_bytes(tmp_path: Path) -> None:
    name = "é" * 125 + ".csv"  # 254 bytes: the plain sidecar name would have 266
    path = save_csv(sample_run(2), tmp_path / name)
    assert len(os.fsencode(sidecar_path(path).name)) <= 255
    assert sidecar_path(path).name.endswith(".daqlab.json")
    assert {p.name for p in tmp_path.iterdir()} == {name, sidecar_path(path).name}
    xr.testing.assert_identical(dl.open_run(path), sample_run(2))


def test_save_writes_both_files_durably_under_temporary_names(tmp_path: Path) -> None:
    seen: list[list[str]] = []
    real_replace = os.replace

    def watching_replace(src: Any, dst: Any) -> None:
        seen.append(sorted(p.name for p in tmp_path.iterdir()))
        real_replace(src, dst)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "replace", watching_replace)
        save_csv(sample_run(3), tmp_path / "run.csv")
    # the sidecar is renamed first, the CSV last: a CSV never appears without its metadata
    assert len(seen) == 2
    assert [n.startswith(".") for n in seen[0]] == [True, True]
    assert seen[1][1] == "run.csv.daqlab.json"
    assert seen[1][0].startswith(".run.csv.")


@pytest.mark.parametrize("first_save", [True, False])
def test_a_failed_csv_rename_puts_the_old_sidecar_back(tmp_path: Path, first_save: bool) -> None:
    """The sidecar is renamed first; if the CSV's rename then fails, the old pair stays whole."""
    path = tmp_path / "run.csv"
    old = sample_run(3)
    if not first_save:
        save_csv(old, path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    real_replace = os.replace

    def failing_csv_rename(src: Any, dst: Any) -> None:
        if Path(dst) == path:
            raise OSError(errno.EIO, "Input/output error")
        real_replace(src, dst)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "replace", failing_csv_rename)
        with pytest.raises(dl.StorageError, match="Nothing was written under that name"):
            save_csv(sample_run(5), path, overwrite=True)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no temp, no orphan
    if first_save:
        save_csv(sample_run(5), path)  # the retry is not blocked by an orphan sidecar
        xr.testing.assert_identical(dl.open_run(path), sample_run(5))
    else:
        xr.testing.assert_identical(dl.open_run(path), old)


# --------------------------------------------------------------------------- files written before the sidecar


def _old_format(wide: bool) -> bytes:
    """A file as daqlab wrote CSV before the sidecar: a '# daqlab-csv' line, decimal ms."""
    chan_b = {"name": "'=b", "unit": "'-", "range_min": float("nan"), "range_max": float("nan"),
              "cal_slope": 1.0, "cal_offset": 0.0, "cal_date": None}
    header = {
        "format": "csv-wide" if wide else "csv", "schema_version": 1, "daqlab_version": "0.1.0",
        "samples": 3, "timestamp_decimals": 6,
        "channels": [{"name": "a", "unit": "V", "range_min": 0.0, "range_max": 5.0,
                      "cal_slope": 2.0, "cal_offset": -1.0,
                      "cal_date": "2024-05-01T08:30:15.123456000Z"}, chan_b],
        "variables": ["value", "quality", "raw"],
        "attrs": {"id": RUN_ID, "name": "old, =run", "description": "",
                  "created_at": "2024-01-02T03:04:05.000000Z", "sample_rate": 3.0,
                  "metadata": {"operator": "Ada"}, "calibrated": True},
        "attr_types": {},
        "var_attrs": {"raw": {"types": {}, "attrs": {
            "long_name": "raw sample value as acquired", "ancillary_variables": "quality",
            "comment": "kept by daqlab.calibrate so that uncalibrate is exact"}}},
    }
    # the old writer escaped ',' and ';' inside strings (for spreadsheets)
    line = "# daqlab-csv " + json.dumps(header).replace('"old, =run"', '"old\\u002c =run"')
    rows = ["timestamp_ms,value:a,quality:a,raw:a,value:=b,quality:=b,raw:=b",
            "1704067200000.000000,0,Good,0.5,1,Good,1",
            "1704067200333.333333,nan,Bad,nan,-inf,Bad,-inf",
            "1704067200666.666667,3,Good,2,3.25,Good,3.25"] if wide else [
            "timestamp_ms,value,channel,quality,raw",
            "1704067200000.000000,0,a,Good,0.5", "1704067200000.000000,1,'=b,Good,1",
            "1704067200333.333333,nan,a,Bad,nan", "1704067200333.333333,-inf,'=b,Bad,-inf",
            "1704067200666.666667,3,a,Good,2", "1704067200666.666667,3.25,'=b,Good,3.25"]
    return "\n".join([line, *rows, ""]).encode("utf-8")


def _old_run() -> xr.Dataset:
    chans = [dl.Channel("a", "V", range=(0.0, 5.0),
                        calibration=dl.Calibration(2.0, -1.0, "2024-05-01T08:30:15.123456Z")),
             dl.Channel("=b", "-")]
    times = np.datetime64("2024-01-01", "ns") + np.array([0, 333_333_333, 666_666_667],
                                                          "timedelta64[ns]")
    return dl.calibrate(dl.make_run(
        [[0.5, np.nan, 2.0], [1.0, -np.inf, 3.25]], chans, sample_rate=3.0, times=times,
        id=RUN_ID, created_at="2024-01-02T03:04:05Z", name="old, =run",
        metadata={"operator": "Ada"}))


@FORMS
def test_files_from_before_the_sidecar_open_exactly(tmp_path: Path, wide: bool) -> None:
    path = tmp_path / "old.csv"
    path.write_bytes(_old_format(wide))
    assert sniff_csv(path.read_bytes()) == ("csv-wide" if wide else "csv")
    assert detect_format(path) == ("csv-wide" if wide else "csv")
    xr.testing.assert_identical(open_csv(path), _old_run())
    xr.testing.assert_identical(dl.open_run(path), _old_run())
    # saved again, it gets the new layout, still exact
    back = round_trip(open_csv(path), tmp_path / "new.csv", wide=wide)
    xr.testing.assert_identical(back, _old_run())
    assert not (tmp_path / "new.csv").read_text("utf-8").startswith("#")


@FORMS
def test_truncated_files_from_before_the_sidecar_are_detected(tmp_path: Path, wide: bool) -> None:
    full = _old_format(wide)
    cut = tmp_path / "cut.csv"
    for size in range(len(full)):
        cut.write_bytes(full[:size])
        with pytest.raises(dl.FormatError):
            open_csv(cut)


# --------------------------------------------------------------------------- text that is not UTF-8


def _surrogate_run() -> xr.Dataset:
    """Lone surrogates everywhere a run holds free text (h5py's text for non-UTF-8 bytes)."""
    run = sample_run(3).assign_attrs(
        name="\udcff", description="M\udcfcnchen, =1;2", site="\udc80",
        words=np.array(["a\udcfe", "ok"]), pair=("\udc81", 1),
        metadata={"k\udcfe": ["v\udc80", {"=x\udc81": "-\udc82,;"}], "plain": "ü"},
    )
    run["value"].attrs["note"] = "\udcaa"
    return run


@FORMS
def test_text_that_is_not_utf8_round_trips_as_json_escapes(tmp_path: Path, wide: bool) -> None:
    run = _surrogate_run()
    path = tmp_path / "run.csv"
    round_trip(run, path, wide=wide)  # was a raw UnicodeEncodeError
    head = sidecar_path(path).read_bytes().decode("utf-8")  # strict UTF-8
    assert '"name": "\\udcff"' in head
    assert '"description": "M\\udcfcnchen, =1;2"' in head
    assert '"plain": "ü"' in head  # only strings that need it are escaped


def test_seed_file_with_latin1_metadata_saves_as_csv(tmp_path: Path) -> None:
    src = tmp_path / "latin1.h5"
    with h5py.File(src, "w") as f:
        g = f.create_group("data/temp")
        g["timestamps"] = 1.7e9 + np.arange(3) / 10
        g["values"] = np.arange(3.0)
        f.create_group("metadata").attrs["site"] = b"M\xfcnchen"
    run = dl.open_run(src)
    assert run.attrs["metadata"] == {"site": "M\udcfcnchen"}
    for fmt in ("csv", "csv-wide"):
        back = dl.open_run(dl.save(run, tmp_path / f"{fmt}.csv", fmt))
        xr.testing.assert_identical(back, run)
        assert back.attrs["metadata"]["site"].encode("utf-8", "surrogateescape") == b"M\xfcnchen"


def test_units_that_are_not_text_are_refused(tmp_path: Path) -> None:
    # Channel refuses such units (and names); a unit coordinate set by hand can still hold one
    run = sample_run(2).assign_coords(unit=("channel", np.array(["\udcff", "V", "-"])))
    with pytest.raises(dl.SchemaError, match=r"coordinate 'unit' holds \['\\udcff'\], text with lone "
                       r"surrogates .* decode the bytes with their codec"):
        save_csv(run, tmp_path / "bad.csv")
    assert list(tmp_path.iterdir()) == []
    path = save_csv(sample_run(2), tmp_path / "run.csv")
    _edit(sidecar_path(path), '"unit": "°C"', '"unit": "\\udcff"')
    surrogates = r"unit '\\udcff' of channel .* contains control characters or lone surrogates"
    with pytest.raises(dl.FormatError, match=r"\(the metadata of run.csv\) is damaged \(" + surrogates):
        open_csv(path)


# --------------------------------------------------------------------------- runs of 0 channels


def _empty_seed_run(tmp_path: Path) -> xr.Dataset:
    with h5py.File(tmp_path / "e.h5", "w") as f:
        f.create_group("data")
        f.create_group("metadata")
    return dl.open_run(tmp_path / "e.h5")


@FORMS
def test_a_run_of_no_channels_round_trips(tmp_path: Path, wide: bool) -> None:
    run = _empty_seed_run(tmp_path)
    assert dict(run.sizes) == {"channel": 0, "time": 0}
    round_trip(run, tmp_path / "z.csv", wide=wide)  # was "header line is damaged: no channels"
    back = dl.open_run(tmp_path / "z.csv")
    assert back.sizes["channel"] == 0
    xr.testing.assert_identical(back, run)


def test_a_run_of_no_channels_with_timestamps(tmp_path: Path) -> None:
    run = sample_run(4).isel(channel=slice(0, 0))
    dl.validate(run)
    path = tmp_path / "wide.csv"
    round_trip(run, path, wide=True)
    assert data_lines(path)[0] == "timestamp_ms"
    assert len(data_lines(path)) == 5
    with pytest.raises(dl.FormatError, match=r"no channels.*cannot keep its 4 timestamp.*csv-wide"):
        save_csv(run, tmp_path / "long.csv")
    assert not (tmp_path / "long.csv").exists()
