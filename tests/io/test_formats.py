"""One contract for every storage format: round trip, detection, xarray engines, CLI, open_runs."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
import xarray as xr

import daqlab as dl
from daqlab.cli import main as cli
from daqlab.io import FORMATS, detect_format
from daqlab.io._formats import TABLE, by_name

# a file's suffix in these tests: the one that chooses the format, else any (detection reads
# the contents); every test here runs over every format of the table
SUFFIX = {f.name: f.suffixes[0] if f.suffixes else ".dat" for f in TABLE}


def _rich(start: str = "2026-11-24T06:00:00.000000001", n: int = 300) -> xr.Dataset:
    chans = [
        dl.Channel("ai0", "V", range=(-10, 10)),
        dl.Channel("=Kühl,wasser \"°C\"", "degC", calibration=dl.Calibration(100.0, -50.0, "2026-01-15")),
        dl.Channel("@x", ""),
    ]
    v = np.random.default_rng(1).normal(size=(3, n))
    v[0, 3], v[1, 4], v[2, 5], v[0, 6] = np.nan, np.inf, -np.inf, 99.0
    return dl.make_run(v, chans, sample_rate=1000.0, name="rich", description="+desc",
                       metadata={"op": "-Ada", "n": [1, 2], "nested": {"ok": True}}, start=start,
                       id="0b6f3d4e-9a4e-4c1e-8b9e-2f1c3d4e5f60", created_at="2026-11-24T06:00:00Z")


RUNS: dict[str, Callable[[], xr.Dataset]] = {
    "rich": _rich,
    "calibrated": lambda: dl.calibrate(_rich()),
    "empty": lambda: dl.empty_run(["a", "b"], sample_rate=10.0, created_at="2026-01-01T00:00:00Z"),
    "one-sample": lambda: dl.make_run([[1.5]], ["only"], sample_rate=1.0, start="2020-02-29"),
}


@pytest.mark.parametrize("fmt", FORMATS, ids=FORMATS)
@pytest.mark.parametrize("kind", sorted(RUNS), ids=sorted(RUNS))
def test_round_trip_is_identical(tmp_path: Path, fmt: str, kind: str) -> None:
    run = RUNS[kind]()
    path = dl.save(run, tmp_path / f"r{SUFFIX[fmt]}", fmt)
    assert detect_format(path) == fmt
    back = dl.open_run(path)
    xr.testing.assert_identical(back, run)
    lazy = dl.open_run(path, chunks={})
    assert lazy["value"].chunks is not None
    xr.testing.assert_identical(lazy.compute(), run)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert not leftovers


@pytest.mark.parametrize("fmt", FORMATS, ids=FORMATS)
def test_xarray_opens_it_through_daqlab_engines(tmp_path: Path, fmt: str) -> None:
    run = _rich()
    engine = by_name(fmt).engine
    path = dl.save(run, tmp_path / f"r{SUFFIX[fmt]}", fmt)
    xr.testing.assert_identical(xr.open_dataset(path, engine="daqlab").load(), run)
    if engine is not None:
        xr.testing.assert_identical(xr.open_dataset(path, engine=engine).load(), run)
        dropped = xr.open_dataset(path, engine=engine, drop_variables=["quality"])
        assert "quality" not in dropped
    if engine == "daqlab-csv":  # guessed from the file (xarray's own engines take HDF5 first)
        guessed = dl.save(run, tmp_path / "g.csv", fmt)
        xr.testing.assert_identical(xr.open_dataset(guessed).load(), run)


def test_the_table_names_each_format_suffix_and_engine_once() -> None:
    from importlib.metadata import entry_points

    names = [f.name for f in TABLE]
    assert len(set(names)) == len(names)
    suffixes = [s for f in TABLE for s in f.suffixes]
    assert len(set(suffixes)) == len(suffixes)
    assert set(FORMATS) == {f.name for f in TABLE if f.save is not None}
    declared = {e.name for e in entry_points(group="xarray.backends")}
    assert {f.engine for f in TABLE if f.engine} | {"daqlab"} <= declared
    assert all(f.description for f in TABLE)


@pytest.mark.parametrize("src", FORMATS, ids=[f"from-{f}" for f in FORMATS])
@pytest.mark.parametrize("dst", FORMATS, ids=[f"to-{f}" for f in FORMATS])
def test_cli_convert_between_every_pair(tmp_path: Path, src: str, dst: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    run = _rich()
    a = dl.save(run, tmp_path / f"a{SUFFIX[src]}", src)
    b = tmp_path / f"b{SUFFIX[dst]}"
    assert cli(["convert", str(a), str(b), "--format", dst]) == 0
    assert f"-> {dst} {b}" in capsys.readouterr().out
    xr.testing.assert_identical(dl.open_run(b), run)
    assert cli(["info", str(b)]) == 0
    out = capsys.readouterr().out
    assert "channels   3: ai0, =Kühl,wasser" in out and "samples    300 per channel" in out  # noqa: PT018


def test_cli_reports_errors_without_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk.nc"
    junk.write_bytes(b"not a run at all")
    assert cli(["info", str(junk)]) == 2
    err = capsys.readouterr().err
    assert "daqlab info: error:" in err and "junk.nc" in err and "Traceback" not in err  # noqa: PT018
    a = dl.save(_rich(), tmp_path / "a.nc")
    assert cli(["convert", str(a), str(a)]) == 2
    assert "exists already" in capsys.readouterr().err


def test_open_runs_joins_files_of_any_format_along_time(tmp_path: Path) -> None:
    whole = _rich(n=900)
    parts = [whole.isel(time=slice(i * 300, (i + 1) * 300)) for i in range(3)]
    paths = [dl.save(p, tmp_path / f"p{i}{SUFFIX[f]}", f)
             for i, (p, f) in enumerate(zip(parts, ["netcdf", "csv", "seed-hdf5"], strict=True))]
    joined = dl.open_runs(reversed(paths))  # order comes from the time axis, not the list
    assert joined["value"].chunks is not None  # lazy
    xr.testing.assert_identical(joined.drop_attrs(), whole.drop_attrs())
    assert [s["path"] for s in joined.attrs["metadata"]["sources"]] == [str(p) for p in paths]
    assert joined.attrs["id"] != whole.attrs["id"]
    same = dl.open_runs(str(tmp_path / "p*"))
    np.testing.assert_array_equal(same["time"].values, whole["time"].values)


def test_open_runs_refuses_mismatches_and_overlaps(tmp_path: Path) -> None:
    a = dl.save(_rich(n=100), tmp_path / "a.nc")
    overlap = dl.save(_rich(start="2026-11-24T06:00:00.050", n=100), tmp_path / "b.nc")
    other = dl.save(dl.make_run(np.ones((1, 5)), ["zz"], sample_rate=1000.0, start="2027-01-01"),
                    tmp_path / "c.nc")
    with pytest.raises(dl.SchemaError) as info:
        dl.open_runs([a, overlap, other])
    text = str(info.value)
    assert "overlap in time" in text and "channels ['zz'] differ" in text  # noqa: PT018
    # the hint is about choosing files, not about building runs with make_run
    assert "make_run" not in text
    assert "follow one another in time" in text
    with pytest.raises(dl.StorageError, match="no files match"):
        dl.open_runs(str(tmp_path / "nothing-*.nc"))


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        (b"", r"it is none of \[.netcdf., .csv., .csv-wide., .seed-hdf5., .tdms., .mdf4., .edf., "
             r".xdf., .wav., .session.\]"),
        (b"\x89HDF\r\n\x1a\n" + b"\0" * 100, r"could not be read|not a daqlab run|corrupt|truncated"),
        (b"hello,world\n1,2\n", r"it is none of \[.netcdf., .csv., .csv-wide., .seed-hdf5., .tdms."),
    ],
    ids=["empty", "truncated-hdf5", "foreign-csv"],
)
def test_corrupt_or_foreign_files_raise_format_errors(tmp_path: Path, content: bytes, pattern: str) -> None:
    p = tmp_path / "bad.nc"
    p.write_bytes(content)
    with pytest.raises(dl.FormatError, match=pattern) as info:
        dl.open_run(p)
    assert "bad.nc" in str(info.value)


def test_save_refuses_unknown_formats_and_suffixes(tmp_path: Path) -> None:
    with pytest.raises(dl.FormatError, match=r"format 'parquet' is not supported; choose one of"):
        dl.save(_rich(), tmp_path / "x.nc", "parquet")
    with pytest.raises(dl.FormatError, match=r"cannot tell the format of 'x.txt'"):
        dl.save(_rich(), tmp_path / "x.txt")


def test_open_runs_refuses_files_whose_data_variables_differ(tmp_path: Path) -> None:
    # joining them filled the missing 'raw' with NaN without a word: samples lost
    ch = [dl.Channel("a", calibration=dl.Calibration(2.0))]
    c1 = dl.calibrate(dl.make_run([[1.0, 2.0]], ch, sample_rate=1.0, start="2024-01-01T00:00:00"))
    c2 = dl.calibrate(dl.make_run([[3.0, 4.0]], ch, sample_rate=1.0, start="2024-01-01T00:00:02"))
    a = dl.save(c1, tmp_path / "c1.nc")
    b = dl.save(c2.drop_vars("raw"), tmp_path / "c2.nc")
    with pytest.raises(dl.SchemaError) as info:
        dl.open_runs([a, b])
    text = str(info.value)
    assert "c2.nc: data variables ['quality', 'value'] differ from c1.nc's" in text
    assert "only c1.nc has ['raw']" in text and "drop_vars('raw')" in text  # noqa: PT018
    with pytest.raises(dl.SchemaError, match=r"only c1\.nc has \['raw'\]"):
        dl.open_runs([b, a])  # whichever comes first in time
    # the same variables join as before, 'raw' included
    both = dl.open_runs([a, dl.save(c2, tmp_path / "c3.nc")]).load()
    np.testing.assert_array_equal(both["raw"].values, [[1.0, 2.0, 3.0, 4.0]])
    dl.validate(both)


NOT_A_PATH: Any = None  # what a caller may pass despite the annotations


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (lambda: dl.open_runs(cast(Any, b"/p.nc")), r"a str or pathlib\.Path; got bytes b'/p\.nc'\. Decode"),
        (lambda: dl.open_runs(NOT_A_PATH), r"a glob pattern \(str\) or an iterable of paths; got NoneType"),
        (lambda: dl.open_runs(cast(Any, 5)), r"an iterable of paths; got int \(5\)"),
        (lambda: dl.open_runs(["a.nc", NOT_A_PATH]), r"path #1 must be a str or pathlib\.Path; got NoneType"),
        (lambda: dl.save(_rich(), NOT_A_PATH), r"save's path must be a str or pathlib\.Path; got NoneType"),
        (lambda: dl.open_run(NOT_A_PATH), r"open_run's path must be a str or pathlib\.Path; got NoneType"),
        (lambda: dl.open_run(cast(Any, b"r.nc")), r"open_run.s path must be a str .*; got bytes"),
        (lambda: detect_format(cast(Any, 3.5)), r"detect_format.s path must be a str .*; got float"),
    ],
    ids=["open_runs-bytes", "open_runs-None", "open_runs-int", "open_runs-None-item", "save-None",
         "open_run-None", "open_run-bytes", "detect_format-float"],
)
def test_paths_of_the_wrong_type_are_configuration_errors(call: Callable[[], object], pattern: str) -> None:
    with pytest.raises(dl.ConfigurationError, match=pattern):
        call()


def test_paths_the_os_refuses_are_storage_errors(tmp_path: Path) -> None:
    run = _rich(n=8)
    with pytest.raises(dl.StorageError, match=r"cannot write .*\(\d+ characters\): File name too long; "
                                              r"a file name may have at most 255 bytes"):
        dl.save(run, tmp_path / ("x" * 300 + ".nc"))
    with pytest.raises(dl.StorageError, match=r"cannot open .*\(5000 characters\): File name too long"):
        dl.open_run("x" * 5000)
    with pytest.raises(dl.StorageError, match="File name too long"):
        detect_format(tmp_path / ("x" * 300))
    with pytest.raises(dl.StorageError, match="File name too long"):
        dl.open_runs([tmp_path / ("x" * 300 + ".nc")])
    # a final name just within the limit is written: the temporary name is shortened to fit
    for i, fmt in enumerate(FORMATS):
        name = f"{i}" + "é" * 124 + SUFFIX[fmt]  # 1 + 248 + 3..4 bytes, at most 255
        path = dl.save(run, tmp_path / name, fmt)
        assert len(path.name.encode()) <= 255
        xr.testing.assert_identical(dl.open_run(path), run)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("engine", ["daqlab-csv", "daqlab-seed", "daqlab"])
def test_xarray_engines_on_a_missing_file_or_a_folder_raise_storage_errors(
        tmp_path: Path, engine: str) -> None:
    with pytest.raises(dl.StorageError, match=r"missing\.csv does not exist; check the path"):
        xr.open_dataset(tmp_path / "missing.csv", engine=engine)
    folder = tmp_path / "folder.csv"
    folder.mkdir()
    with pytest.raises(dl.DaqlabError, match=r"folder\.csv is a folder"):
        xr.open_dataset(folder, engine=engine)
    stream = io.BytesIO(b"timestamp_ms,value,channel,quality\n")
    with pytest.raises(dl.ConfigurationError, match=r"engines open paths .*; got BytesIO"):
        xr.open_dataset(stream, engine=engine)
