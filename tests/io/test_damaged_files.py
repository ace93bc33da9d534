"""Damaged and foreign files: a FormatError naming what is wrong, never a raw error; the
xarray engines close what they open (issue 12, points 3, 4, 5 and 7)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import xarray as xr

import daqlab as dl
from daqlab.io import detect_format

# --------------------------------------------------------------------------- helpers


def two_channels(start: str = "2024-01-01T00:00:00", offset: float = 0.0) -> xr.Dataset:
    return dl.make_run(np.arange(20.0).reshape(2, 10) + offset, [dl.Channel("a", "V"), dl.Channel("b", "V")],
                       sample_rate=10.0, start=start)


def edited(src: Path, dst: Path, edit: Callable[[h5py.File], None]) -> Path:
    """A copy of ``src`` edited with h5py, as another tool (or damage) might leave it."""
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        edit(f)
    return dst


def delete(name: str) -> Callable[[h5py.File], None]:
    def edit(f: h5py.File) -> None:
        del f[name]
    return edit


def replace(name: str, data: Callable[[tuple[int, ...]], np.ndarray[Any, Any]]
            ) -> Callable[[h5py.File], None]:
    def edit(f: h5py.File) -> None:
        shape = f[name].shape
        del f[name]
        f.create_dataset(name, data=data(shape))
    return edit


def one_dimensional(name: str) -> Callable[[h5py.File], None]:
    return replace(name, lambda shape: np.arange(3.0))


def text(name: str) -> Callable[[h5py.File], None]:
    return replace(name, lambda shape: np.full(shape, b"x", dtype="S1"))


def all_opens(path: Path) -> dict[str, Callable[[], xr.Dataset]]:
    """Every way of opening a saved run: eager, lazy, lazy and computed, through xarray."""
    def through_xarray() -> xr.Dataset:
        with xr.open_dataset(path, engine="daqlab") as ds:
            return ds.load()

    return {
        "eager": lambda: dl.open_run(path),
        "lazy": lambda: dl.open_run(path, chunks={}),
        "computed": lambda: dl.open_run(path, chunks={}).compute(),
        "xarray": through_xarray,
    }


# --------------------------------------------------------------------------- NetCDF: each variable

_VARIABLES = ["time", "channel", "unit", "value", "quality", "range_min", "range_max", "cal_slope",
              "cal_offset", "cal_date"]
_CASES: list[tuple[str, Callable[[h5py.File], None], str | None]] = []
for _name in _VARIABLES:
    _CASES.append((f"{_name}-deleted", delete(_name), rf"variable '{_name}' is missing \(the file has \["))
    _CASES.append((f"{_name}-1d", one_dimensional(_name),
                   # a time axis of 3 samples: 'value' (2 x 10) then disagrees with it
                   r"variable 'value' has shape \(2, 10\), but the file has 2 channel\(s\) \('channel'\) "
                   r"and 3 sample\(s\) \('time'\)" if _name == "time" else
                   rf"variable '{_name}' has shape \(3,\)"))
    if _name == "channel":  # text still, but no longer the dimension 'value' names
        _CASES.append((f"{_name}-text", text(_name), r"variable 'value' names dimensions that cannot be "
                       r"read \(RuntimeError: .*was 'channel' or 'time' replaced\?\)"))
    elif _name == "unit":  # a char array without _Encoding: still text, the run opens
        _CASES.append((f"{_name}-text", text(_name), None))
    else:
        _CASES.append((f"{_name}-text", text(_name), rf"variable '{_name}' has shape \(\d+,( \d+)?\) and "
                       r"dtype \|S1, where daqlab writes"))


@pytest.mark.parametrize(("edit", "message"), [c[1:] for c in _CASES], ids=[c[0] for c in _CASES])
def test_each_damaged_variable_is_a_format_error_naming_it(
        tmp_path: Path, edit: Callable[[h5py.File], None], message: str | None) -> None:
    # were: AttributeError from h5netcdf (time deleted), AlignmentError / ValueError (1-D value),
    # UFuncTypeError (text range), KeyError (unit deleted), SchemaError (value deleted)
    run = two_channels()
    path = edited(dl.save(run, tmp_path / "run.nc"), tmp_path / "damaged.nc", edit)
    for how, open_ in all_opens(path).items():
        if message is None:
            back = open_().load()
            assert back.daq.channels[0].unit == "x", how
            np.testing.assert_array_equal(back["value"].values, run["value"].values)
            continue
        with pytest.raises(dl.FormatError, match=message) as info:
            open_()
        text = str(info.value)
        assert text.startswith(f"{path} is a damaged daqlab run: variable "), how
        assert "The file was damaged or edited by another tool" in text, how


def test_a_run_that_breaks_the_schema_is_a_format_error_listing_the_problems(tmp_path: Path) -> None:
    path = dl.save(two_channels(), tmp_path / "run.nc")
    with h5py.File(path, "r+") as f:
        f["cal_slope"][0] = 0.0  # was a SchemaError, as if the caller had built a wrong run
    for how, open_ in all_opens(path).items():
        with pytest.raises(dl.FormatError, match=r"run\.nc does not hold a valid daqlab run:\n"
                           r"  - channel 'a': cal_slope must be finite and non-zero; is 0\.0") as info:
            open_()
        assert str(info.value).endswith("The file was damaged or edited by another tool; save the "
                                         "run again from its source."), how


@pytest.mark.parametrize("flag", [7, -1, 4])
def test_quality_flags_outside_the_flag_values(tmp_path: Path, flag: int) -> None:
    run = two_channels()
    path = edited(dl.save(run, tmp_path / "run.nc"), tmp_path / "flags.nc",
                  lambda f: f["quality"].__setitem__((1, 3), flag))
    # eager: refused, saying where and what, and how to get at the file anyway
    opens: list[Callable[[], xr.Dataset]] = [lambda: dl.open_run(path),
                                             lambda: xr.open_dataset(path, engine="daqlab")]
    for open_ in opens:
        with pytest.raises(dl.FormatError) as info:
            open_()
        assert str(info.value) == (
            f"{path}: variable 'quality' holds 1 flag(s) outside daqlab.Quality's [0, 1, 2, 3]: "
            f"[{flag}] (the first for channel 'b' at {run.time.values[3]}); the file was damaged or "
            "written by another tool. Open it lazily (daqlab.open_run(path, chunks={})) to inspect or "
            "repair the flags: daqlab.validate(run) lists them.")
    # lazy: opens (nothing read yet); the values are as stored and validate reports them
    lazy = dl.open_run(path, chunks={})
    assert int(lazy["quality"].values[1, 3]) == flag
    with pytest.raises(dl.SchemaError, match=rf"quality holds values \[{flag}\] outside \[0, 1, 2, 3\]"):
        dl.validate(lazy)
    lazy.close()


# --------------------------------------------------------------------------- foreign HDF5


def plain_hdf5(path: Path) -> Path:
    with h5py.File(path, "w") as f:
        f["x"] = np.arange(3)
        f.create_group("grp")
    return path


def test_a_plain_hdf5_file_is_called_what_it_is(tmp_path: Path) -> None:
    # was: "... is a NetCDF file but not a daqlab run", after xarray's phony_dims UserWarning
    path = plain_hdf5(tmp_path / "plain.h5")
    message = (f"{path} is an HDF5 file that is neither a netCDF-4 file nor the seed's layout: it has "
               "groups ['grp'] and datasets ['x (3,) int64']. daqlab reads its own NetCDF4 runs "
               "(daqlab.save), the seed's HDF5 layout (/data/<channel>/timestamps and values, "
               "/metadata), its CSV layouts and recording folders. Read this file with h5py and build "
               "a run with daqlab.make_run(...).")
    for open_ in (lambda: dl.open_run(path), lambda: dl.open_run(path, chunks={}),
                  lambda: detect_format(path), lambda: xr.open_dataset(path, engine="daqlab")):
        with pytest.raises(dl.FormatError) as info:
            open_()  # warnings are errors in this suite: none may be emitted either
        assert str(info.value) == message


def test_an_empty_hdf5_file_and_a_foreign_netcdf_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.h5"
    h5py.File(empty, "w").close()
    with pytest.raises(dl.FormatError, match=r"empty\.h5 is an HDF5 file that is neither a netCDF-4 "
                       r"file nor the seed's layout: it has no groups or datasets\. daqlab reads"):
        dl.open_run(empty)
    foreign = tmp_path / "foreign.nc"
    xr.Dataset({"v": ("x", [1.0, 2.0])}).to_netcdf(foreign, engine="h5netcdf")
    with pytest.raises(dl.FormatError, match=r"foreign\.nc is a NetCDF file but not a daqlab run \(no "
                       r"daqlab_schema_version attribute\): it has datasets \['v \(2,\) float64'\]\. "
                       r"daqlab opens the NetCDF files daqlab\.save writes; open this one with "
                       r"xarray\.open_dataset\."):
        dl.open_run(foreign)


def test_a_damaged_seed_file_gets_the_seed_readers_error(tmp_path: Path) -> None:
    # not in the seed's layout strictly (no timestamps), but meant to be: say what is missing
    path = tmp_path / "seed.h5"
    with h5py.File(path, "w") as f:
        f["data/a/values"] = np.arange(3.0)
    assert detect_format(path) == "seed-hdf5"
    with pytest.raises(dl.FormatError, match=r"channel 'a' \(/data/a\) has no 'timestamps' dataset; "
                       r"it has \['values'\]"):
        dl.open_run(path)


# --------------------------------------------------------------------------- seed: exact numbers


def seed_file(path: Path, values: np.ndarray[Any, Any], times: np.ndarray[Any, Any] | None = None,
              key: str = "timestamps") -> Path:
    with h5py.File(path, "w") as f:
        g = f.create_group("data/a")
        g["values"] = values
        g[key] = np.arange(values.size, dtype=np.float64) if times is None else times
    return path


@pytest.mark.parametrize("dtype", ["int8", "int16", "int32", "uint8", "uint16", "uint32", "float16",
                                   "float32", "bool"])
def test_seed_values_of_narrower_types_open_exactly(tmp_path: Path, dtype: str) -> None:
    info: Any = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    values = (np.array([info.min, 0, info.max], dtype) if info is not None
              else np.array([0, 1, 1], dtype))
    run = dl.open_run(seed_file(tmp_path / "s.h5", values))
    np.testing.assert_array_equal(run["value"].values[0], values.astype(np.float64))
    assert [int(v) for v in run["value"].values[0]] == [int(v) for v in values.tolist()]


@pytest.mark.parametrize(
    ("values", "largest"),
    [
        (np.array([0, 2**53 + 1], np.int64), 2**53 + 1),
        (np.array([-(2**63), 0], np.int64), 2**63),
        (np.array([2**64 - 1], np.uint64), 2**64 - 1),
    ],
    ids=["int64-beyond-2**53", "int64-minimum", "uint64-maximum"],
)
def test_seed_integers_float64_cannot_hold_are_refused(tmp_path: Path, values: np.ndarray[Any, Any],
                                                       largest: int) -> None:
    # were rounded to float64 without a word (2**53 + 1 opened as 2**53)
    path = seed_file(tmp_path / "big.h5", values)
    with pytest.raises(dl.FormatError) as info:
        dl.open_run(path)
    assert str(info.value) == (
        f"{path}: channel 'a' (/data/a): 'values' holds {values.dtype} integers up to {largest} in "
        "magnitude; a run's values are float64, which holds integers exactly only up to 2**53 "
        "(9007199254740992), so opening it would round them. Read the dataset with h5py and scale or "
        "offset it into that range (or store it as float64), then build the run with "
        "daqlab.make_run(...).")


def test_seed_64_bit_integers_within_2_53_open_exactly(tmp_path: Path) -> None:
    values = np.array([-(2**53), 0, 2**53], np.int64)
    run = dl.open_run(seed_file(tmp_path / "ok.h5", values))
    assert [int(v) for v in run["value"].values[0]] == values.tolist()


def test_seed_physical_values_are_checked_like_the_raw_ones(tmp_path: Path) -> None:
    ch = dl.Channel("a", calibration=dl.Calibration(2.0))
    run = dl.calibrate(dl.make_run([[1.0, 2.0]], [ch], sample_rate=1.0, start="2024-01-01"))
    path = dl.save(run, tmp_path / "cal.h5", "seed-hdf5")
    with h5py.File(path, "r+") as f:
        del f["data/a/physical"]
        f["data/a/physical"] = np.array([1, 2**60], np.int64)
    with pytest.raises(dl.FormatError, match=r"'physical' holds int64 integers up to 1152921504606846976"):
        dl.open_run(path)


@pytest.mark.skipif(np.finfo(np.longdouble).nmant <= 52, reason="long double is float64 here")
def test_seed_values_wider_than_float64_are_refused_unless_exact(tmp_path: Path) -> None:
    exact = np.array([0.5, 1.0], np.longdouble)
    run = dl.open_run(seed_file(tmp_path / "exact.h5", exact))
    assert run["value"].values[0].tolist() == [0.5, 1.0]
    fine = np.array([1, 1 + np.longdouble(2.0) ** -60], np.longdouble)
    with pytest.raises(dl.FormatError, match=r"'values' holds float128 values that float64 \(a run's "
                       r"values\) cannot hold exactly; opening it would round them"):
        dl.open_run(seed_file(tmp_path / "fine.h5", fine))


@pytest.mark.parametrize(
    ("times", "key", "message"),
    [
        (np.array([0.0, np.nan, 2.0]), "timestamps", r"timestamp 1 is nan s \(1 bad in all\); timestamps "
         r"must be finite"),
        (np.array([0, 10**10, 2], np.int64), "timestamps", r"timestamp 1 is 10000000000 s, outside "
         r"datetime64\[ns\]"),
        (np.array([0, 2**64 - 1, 2], np.uint64), "timestamps", r"timestamp 1 is 18446744073709551615 s, "
         r"outside datetime64\[ns\]"),
        (np.array([0.0, 1.0, 2.0]), "timestamps_ns", r"'timestamps_ns' holds float64; daqlab reads "
         r"integers there\."),
        (np.array([0, 2**64 - 1, 2], np.uint64), "timestamps_ns", r"'timestamps_ns' holds values beyond "
         r"int64"),
    ],
    ids=["nan-seconds", "int64-seconds-beyond-ns", "uint64-seconds", "float-ns", "uint64-ns"],
)
def test_seed_timestamps_that_cannot_be_kept_exactly(tmp_path: Path, times: np.ndarray[Any, Any],
                                                      key: str, message: str) -> None:
    path = seed_file(tmp_path / "t.h5", np.arange(3.0), times, key)
    with pytest.raises(dl.FormatError, match=message):
        dl.open_run(path)


# --------------------------------------------------------------------------- xarray engines close


def _pair(tmp_path: Path, suffix: str, fmt: str | None) -> tuple[list[Path], xr.Dataset]:
    runs = [two_channels(), two_channels("2024-01-01T00:00:01", offset=100.0)]
    paths = [dl.save(r, tmp_path / f"r{i}{suffix}", fmt) for i, r in enumerate(runs)]
    return paths, xr.concat(runs, dim="time")


@pytest.mark.parametrize(
    ("suffix", "fmt", "engine"),
    [(".nc", None, "daqlab"), (".csv", None, "daqlab-csv"), (".csv", "csv-wide", "daqlab-csv"),
     (".csv", None, None), (".csv", "csv-wide", None), (".csv", None, "daqlab"),
     (".h5", "seed-hdf5", "daqlab-seed"), (".h5", "seed-hdf5", "daqlab")],
    ids=["netcdf", "csv-long", "csv-wide", "csv-long-guessed", "csv-wide-guessed", "csv-daqlab",
         "seed", "seed-daqlab"],
)
@pytest.mark.parametrize("chunks", [None, {}], ids=["eager", "chunked"])
def test_open_mfdataset_closes(tmp_path: Path, suffix: str, fmt: str | None, engine: str | None,
                               chunks: dict[str, Any] | None) -> None:
    # was: TypeError: 'NoneType' object is not callable on close, for every daqlab engine
    paths, expected = _pair(tmp_path, suffix, fmt)
    if engine is None:  # xarray guesses ours from the file
        assert xr.backends.plugins.guess_engine(str(paths[0])) == "daqlab-csv"
    kwargs: dict[str, Any] = {"engine": engine, "chunks": chunks, "combine": "nested",
                              "concat_dim": "time", "data_vars": "all", "coords": "minimal",
                              "compat": "override", "combine_attrs": "override"}
    with xr.open_mfdataset(paths, **kwargs) as ds:
        np.testing.assert_array_equal(ds["value"].values, expected["value"].values)
        np.testing.assert_array_equal(ds["time"].values, expected["time"].values)
    ds = xr.open_mfdataset(paths, **kwargs)
    np.testing.assert_array_equal(ds["quality"].values, expected["quality"].values)
    ds.close()
    ds.close()  # twice is harmless


@pytest.mark.parametrize("engine", ["daqlab", "daqlab-csv", "daqlab-seed"])
def test_each_engine_registers_a_close(tmp_path: Path, engine: str) -> None:
    suffix, fmt = {"daqlab": (".nc", None), "daqlab-csv": (".csv", None),
                   "daqlab-seed": (".h5", "seed-hdf5")}[engine]
    path = dl.save(two_channels(), tmp_path / f"r{suffix}", fmt)
    with xr.open_dataset(path, engine=engine, drop_variables=["quality"]) as ds:
        assert ds._close is not None
        assert "quality" not in ds


def _fds_on(path: Path) -> int:
    """How many of this process's file descriptors point at ``path``."""
    target = str(path.resolve())
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}") == target
        except OSError:  # closed meanwhile
            continue
    return count


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs Linux's /proc")
def test_closing_a_lazy_run_releases_its_file(tmp_path: Path) -> None:
    path = dl.save(two_channels(), tmp_path / "run.nc")
    run = dl.open_run(path, chunks={})
    np.testing.assert_array_equal(run["value"].values, two_channels()["value"].values)
    assert _fds_on(path) > 0  # the samples are read through open handles
    run.close()  # was a no-op: the handles stayed open until garbage collection
    assert _fds_on(path) == 0
    # the file can be replaced and the new one opened
    other = two_channels(offset=1000.0)
    path.unlink()
    dl.save(other, path)
    again = dl.open_run(path, chunks={})
    np.testing.assert_array_equal(again["value"].values, other["value"].values)
    again.close()
    assert _fds_on(path) == 0
