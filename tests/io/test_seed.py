"""The seed's HDF5 layout (``/data/<channel>/timestamps|values``, ``/metadata``): daqlab/io/_seed.py."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import dask.array as da
import h5py
import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

import daqlab as dl
from daqlab.io._seed import is_seed_file, open_seed, save_seed
from tests.helpers import is_valid_channel_name, require_tool

START = "2024-01-01T00:00:00Z"
RUN_ID = "0d6c7a4e-2f8b-4c1d-9e3a-5b7f1a2c3d4e"
T0 = 1_700_000_000.0  # seconds since the epoch, November 2023
ODD_NAMES = ["Kühlwasser Temperatur", "电压 ai1", "Δp", "a.b", 'say "hi"', "it's", "x[0]", ".hidden",
             "tab-free name with  two spaces", "∑ (°C)", "ai0"]


def sample_run(n: int = 6, names: list[str] | None = None) -> xr.Dataset:
    names = names or ["Kühlwasser Temperatur", "电压 ai1", "Δp"]
    chans = [dl.Channel(names[0], "°C", range=(0.0, 90.0),
                        calibration=dl.Calibration(2.0, -1.0, "2024-05-01T08:30:15.123456Z"))]
    chans += [dl.Channel(nm, "V" if i % 2 else "", range=(None, 5.0) if i % 2 else None)
              for i, nm in enumerate(names[1:])]
    values = np.random.default_rng(11).normal(size=(len(names), n))
    if n >= 4 and len(names) >= 3:
        values[0, 1] = np.nan
        values[1, 2] = np.inf
        values[2, 3] = -np.inf
    return dl.make_run(
        values, chans, sample_rate=3.0, start="2024-01-01T00:00:00.123456789Z", id=RUN_ID,
        created_at="2024-01-02T03:04:05.678Z", name="Prüfstand 3",
        description="line one\nline two, with ünïcode",
        metadata={"operator": "Ada", "gain": 2.5, "tags": ["a", "ß"], "nested": {"ok": True, "none": None}},
    )


def seconds(ns: NDArray[np.int64]) -> NDArray[np.float64]:
    out: NDArray[np.float64] = ns / 1e9
    return out


def write_rust(
    path: Path,
    channels: Mapping[str, tuple[Any, Any]],
    metadata: Mapping[str, Any] | None = None,
    *,
    meta_as: str = "attrs",
) -> Path:
    """A file as the Rust DAQ application writes it: plain h5py, no daqlab involved.

    ``metadata=None`` writes no /metadata group; ``meta_as`` is "attrs" or "datasets".
    """
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        for name, (t, v) in channels.items():
            g = data.create_group(name)
            g.create_dataset("timestamps", data=np.asarray(t, dtype=np.float64))
            g.create_dataset("values", data=np.asarray(v, dtype=np.float64))
        if metadata is not None:
            md = f.create_group("metadata")
            for k, val in metadata.items():
                if meta_as == "attrs":
                    md.attrs[k] = val
                else:
                    md.create_dataset(k, data=val)
    return path


def regular(n: int, rate: float, t0: float = T0) -> NDArray[np.float64]:
    out: NDArray[np.float64] = t0 + np.arange(n) / rate
    return out


# --------------------------------------------------------------------------- round trips


def _calibrated(n: int) -> xr.Dataset:
    return dl.calibrate(sample_run(n))


def _calibrated_without_raw(n: int) -> xr.Dataset:
    return dl.calibrate(sample_run(n)).drop_vars("raw")


def _odd_names(n: int) -> xr.Dataset:
    return sample_run(n, ODD_NAMES)


def _many_channels(n: int) -> xr.Dataset:
    return sample_run(n, [f"ch {i:03d}" for i in range(40)][::-1])


def _empty(_: int) -> xr.Dataset:
    return dl.make_run(np.empty((2, 0)), ["a", "b"], sample_rate=10.0,
                       times=np.array([], dtype="datetime64[ns]"), id=RUN_ID)


def _duplicate_times(n: int) -> xr.Dataset:
    t = np.array([0, 0, 5, 5, 5, 9][:n], dtype=np.int64) + 1_700_000_000_000_000_001
    return dl.make_run(np.arange(2.0 * n).reshape(2, n), ["a", "b"], sample_rate=1.0,
                       times=t.view("datetime64[ns]"), id=RUN_ID)


def _odd_attributes(n: int) -> xr.Dataset:
    run = sample_run(n).assign_attrs(
        reviewed=True, note=None, arr=np.arange(3, dtype=np.int16), pair=(1, "a"),
        f32=np.float32(1.5), nul="a\x00b", tagged={"__daqlab__": 1}, big=2**70, site="Hall B",
        when=np.datetime64("2024-01-01T00:00:00.000000001", "ns"),
    )
    run["value"].attrs["comment"] = "user note"
    run["time"].attrs["standard_name"] = "time"
    return run


RUNS: list[tuple[Callable[[int], xr.Dataset], int]] = [
    (sample_run, 6), (sample_run, 1), (_empty, 0), (_calibrated, 6), (_calibrated_without_raw, 6),
    (_odd_names, 5), (_many_channels, 300), (_duplicate_times, 6), (_odd_attributes, 4),
]


@pytest.mark.parametrize(
    ("make", "n"), RUNS,
    ids=["six-samples", "one-sample", "no-samples", "calibrated-with-raw", "calibrated-without-raw",
         "odd-channel-names", "40-channels", "duplicate-timestamps", "odd-attributes"],
)
def test_round_trip_is_identical(tmp_path: Path, make: Callable[[int], xr.Dataset], n: int) -> None:
    run = make(n)
    path = tmp_path / "run.h5"
    assert save_seed(run, path) == path
    back = open_seed(path)
    xr.testing.assert_identical(back, run)
    assert list(back.attrs) == list(run.attrs) or set(back.attrs) == set(run.attrs)
    assert back.attrs["calibrated"] is run.attrs["calibrated"]
    assert back.daq.channel_names == run.daq.channel_names
    assert not isinstance(back["value"].data, da.Array)
    dl.validate(back)
    assert is_seed_file(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.h5"]


def test_odd_attributes_come_back_with_their_types(tmp_path: Path) -> None:
    run = _odd_attributes(4)
    back = open_seed(save_seed(run, tmp_path / "a.h5"))
    a = back.attrs
    assert a["reviewed"] is True
    assert a["note"] is None
    assert a["pair"] == (1, "a")
    assert a["nul"] == "a\x00b"
    assert a["big"] == 2**70
    assert a["tagged"] == {"__daqlab__": 1}
    assert isinstance(a["f32"], np.float32)
    assert a["arr"].dtype == np.int16
    assert a["when"] == np.datetime64("2024-01-01T00:00:00.000000001", "ns")
    assert back["quality"].attrs["flag_values"].dtype == np.int8
    assert back["value"].attrs["comment"] == "user note"


_NAME_CHARS = st.characters(blacklist_categories=("Cc", "Cf", "Cs", "Co", "Cn"), blacklist_characters="/")


_names = st.lists(st.text(_NAME_CHARS, min_size=1, max_size=8).filter(is_valid_channel_name),
                  min_size=1, max_size=6, unique=True)
_values = st.floats(min_value=-1e100, max_value=1e100) | st.sampled_from([np.nan, np.inf, -np.inf])


@st.composite
def runs(draw: st.DrawFn) -> xr.Dataset:
    names = draw(_names)
    n = draw(st.sampled_from([0, 1, 2, 7]))
    flat = draw(st.lists(_values, min_size=n * len(names), max_size=n * len(names)))
    steps = draw(st.lists(st.integers(0, 10**12), min_size=n, max_size=n))
    start = draw(st.integers(-(10**18), 4 * 10**18))
    times = (start + np.cumsum(np.array(steps, dtype=np.int64))).view("datetime64[ns]")
    chans = []
    for name in names:
        date = draw(st.none() | st.integers(0, 2 * 10**18).map(lambda x: np.datetime64(x, "ns")))
        cal = dl.Calibration(draw(st.floats(0.001, 1000.0)) * draw(st.sampled_from([1, -1])),
                             draw(st.floats(-1e6, 1e6)), date)
        lo = draw(st.none() | st.floats(-1e6, 0.0))
        chans.append(dl.Channel(name, draw(st.text(_NAME_CHARS, max_size=4)),
                                range=(lo, None if lo is None else lo + 1.0), calibration=cal))
    run = dl.make_run(
        np.array(flat, dtype=np.float64).reshape(len(names), n), chans,
        sample_rate=draw(st.floats(0.001, 1e7)), times=times,
        name=draw(st.text(max_size=5)), description=draw(st.text(max_size=5)),
        metadata=draw(st.dictionaries(st.text(max_size=3), st.integers() | st.text(max_size=3)
                                      | st.floats(allow_nan=False), max_size=3)),
    )
    return dl.calibrate(run) if draw(st.booleans()) else run


@settings(max_examples=30, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(run=runs())
def test_round_trip_property(tmp_path: Path, run: xr.Dataset) -> None:
    path = save_seed(run, tmp_path / "prop.h5", overwrite=True)
    back = open_seed(path)
    xr.testing.assert_identical(back, run)
    dl.validate(back)


@pytest.mark.parametrize("chunks", [{}, {"time": 100}, "auto"], ids=["dict-empty", "time-100", "auto"])
def test_chunks_give_a_dask_run(tmp_path: Path, chunks: Any) -> None:
    run = sample_run(250)
    back = open_seed(save_seed(run, tmp_path / "c.h5"), chunks=chunks)
    assert isinstance(back["value"].data, da.Array)
    assert isinstance(back["quality"].data, da.Array)
    assert not isinstance(back["unit"].data, da.Array)
    if chunks == {"time": 100}:
        assert back["value"].chunks == ((3,), (100, 100, 50))
    xr.testing.assert_identical(back.compute(), run)


# --------------------------------------------------------------------------- what is on disk


def test_layout_on_disk_with_plain_h5py(tmp_path: Path) -> None:
    run = dl.calibrate(sample_run(6))
    path = save_seed(run, tmp_path / "plain.h5")
    names = run.daq.channel_names
    t_ns = run["time"].values.view(np.int64)
    with h5py.File(path, "r") as f:
        assert "daqlab_schema_version" not in f.attrs  # that marks daqlab NetCDF runs
        assert list(f["data"]) == names  # creation order is the run's order
        for i, ch in enumerate(run.daq.channels):
            g = f["data"][ch.name]
            assert g["timestamps"].dtype == np.float64
            assert g["values"].dtype == np.float64
            assert g["quality"].dtype == np.int8
            assert g["timestamps_ns"].dtype == np.int64
            np.testing.assert_array_equal(g["timestamps_ns"][...], t_ns)
            np.testing.assert_array_equal(g["timestamps"][...], seconds(t_ns))
            np.testing.assert_array_equal(g["values"][...], run["raw"].values[i])
            np.testing.assert_array_equal(g["physical"][...], run["value"].values[i])
            np.testing.assert_array_equal(g["quality"][...], run["quality"].values[i])
            assert g.attrs["unit"] == ch.unit
            assert g.attrs["cal_slope"] == ch.calibration.slope
            assert g.attrs["cal_offset"] == ch.calibration.offset
        cal = f["data"][names[0]].attrs
        assert cal["cal_date"] == "2024-05-01T08:30:15.123456000Z"
        assert cal["range_min"] == 0.0
        assert cal["range_max"] == 90.0
        assert f["data"][names[2]].attrs["cal_date"] == ""
        assert np.isnan(f["data"][names[2]].attrs["range_min"])
        md = f["metadata"].attrs
        assert md["id"] == RUN_ID
        assert md["name"] == "Prüfstand 3"
        assert md["created_at"] == "2024-01-02T03:04:05.678000Z"
        assert md["sample_rate"] == 3.0
        assert md["calibrated"] == 1
        assert md["daqlab_version"] == dl.__version__
        assert int(md["daqlab_schema_version"]) == dl.SCHEMA_VERSION
        assert md["metadata"].startswith("{")
        assert '"operator": "Ada"' in md["metadata"]


def test_file_is_readable_by_h5dump(tmp_path: Path) -> None:
    h5dump = require_tool("h5dump")
    path = save_seed(sample_run(6, ODD_NAMES), tmp_path / "dump.h5")
    done = subprocess.run([h5dump, str(path)], capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    out = done.stdout.decode("utf-8", errors="replace")
    assert 'GROUP "metadata"' in out
    assert 'DATASET "timestamps_ns"' in out
    assert "Kühlwasser Temperatur" in out
    assert "H5T_IEEE_F64LE" in out


# --------------------------------------------------------------------------- exact nanoseconds


def test_exact_nanoseconds_are_preferred(tmp_path: Path) -> None:
    t = np.array([1_700_000_000_123_456_789, 1_700_000_000_123_456_790, 1_700_000_001_000_000_001])
    run = dl.make_run([[1.0, 2.0, 3.0]], ["a"], sample_rate=1.0, times=t.view("datetime64[ns]"))
    path = save_seed(run, tmp_path / "ns.h5")
    # float64 seconds cannot tell the first two samples apart
    with h5py.File(path, "r") as f:
        assert f["data/a/timestamps"][0] == f["data/a/timestamps"][1]
    np.testing.assert_array_equal(open_seed(path)["time"].values.view(np.int64), t)

    with h5py.File(path, "r+") as f:
        del f["data/a/timestamps_ns"]
    got = open_seed(path)["time"].values.view(np.int64)
    # without the exact copy: the float seconds, rounded to the microsecond
    assert (got % 1000 == 0).all()
    assert np.abs(got - t).max() <= 500 + 250
    expected = np.rint(seconds(t) * 1e6).astype(np.int64) * 1000
    np.testing.assert_array_equal(got, expected)


def test_stale_exact_copy_loses_to_rewritten_float_seconds(tmp_path: Path) -> None:
    run = sample_run(4)
    path = save_seed(run, tmp_path / "stale.h5")
    with h5py.File(path, "r+") as f:
        for name in f["data"]:
            ts = f["data"][name]["timestamps"]
            ts[...] = ts[...] + 10.0  # another program shifted the clock; timestamps_ns is stale
    back = open_seed(path)
    shift = back["time"].values - run["time"].values
    assert (np.abs(shift - np.timedelta64(10, "s")) <= np.timedelta64(1, "us")).all()


# --------------------------------------------------------------------------- Rust application files


def test_rust_file_with_full_metadata(tmp_path: Path) -> None:
    t = regular(5, 100.0)
    path = write_rust(
        tmp_path / "rust.h5", {"ai0": (t, [0.0, 1.0, np.nan, 3.0, 4.0]), "ai1": (t, np.arange(5.0))},
        {"name": "Pump run", "description": "from the Rust app", "sample_rate": 100.0,
         "created_at": "2023-11-14T22:13:20.5Z", "id": RUN_ID, "operator": "Grace",
         "gain": np.float32(2.0), "channels": np.array([1, 2], dtype=np.int32)},
    )
    assert is_seed_file(path)
    run = open_seed(path)
    dl.validate(run)
    a = run.attrs
    assert (a["name"], a["description"], a["id"]) == ("Pump run", "from the Rust app", RUN_ID)
    assert a["sample_rate"] == 100.0
    assert a["created_at"] == "2023-11-14T22:13:20.500000Z"
    assert a["metadata"] == {"operator": "Grace", "gain": 2.0, "channels": [1, 2]}
    assert a["calibrated"] is False
    assert run.daq.channel_names == ["ai0", "ai1"]
    for ch in run.daq.channels:
        assert ch.unit == ""
        assert ch.calibration == dl.Calibration()
        assert np.isnan(ch.range_min)
        assert np.isnan(ch.range_max)
    np.testing.assert_array_equal(run["time"].values.view(np.int64),
                                  np.rint(t * 1e6).astype(np.int64) * 1000)
    assert run["quality"].values.tolist() == [[0, 0, 2, 0, 0], [0, 0, 0, 0, 0]]


def test_rust_file_without_metadata_uses_defaults(tmp_path: Path) -> None:
    t = regular(4, 250.0)
    path = write_rust(tmp_path / "no_meta.h5", {"x": (t, [1.0, 2.0, 3.0, 4.0])}, None)
    run = open_seed(path)
    dl.validate(run)
    a = run.attrs
    assert a["name"] == "no_meta"
    assert a["description"] == ""
    assert a["sample_rate"] == 250.0
    assert a["created_at"] == "2023-11-14T22:13:20.000000Z"  # the first timestamp
    assert a["metadata"] == {}
    assert uuid.UUID(a["id"]).version == 4
    assert open_seed(path).attrs["id"] == a["id"]  # derived from the contents: same every time
    other = write_rust(tmp_path / "other.h5", {"x": (t, [1.0, 2.0, 3.0, 5.0])}, None)
    assert open_seed(other).attrs["id"] != a["id"]


def test_rust_file_with_empty_metadata_group(tmp_path: Path) -> None:
    path = write_rust(tmp_path / "empty_meta.h5", {"x": (regular(3, 10.0), [1.0, 2.0, 3.0])}, {})
    run = open_seed(path)
    assert run.attrs["name"] == "empty_meta"
    assert run.attrs["sample_rate"] == 10.0
    assert run.attrs["metadata"] == {}


@pytest.mark.parametrize(
    ("meta", "meta_as", "expected"),
    [
        ({"name": "only a name"}, "attrs", {"name": "only a name", "sample_rate": 20.0}),
        ({"name": b"bytes name", "sample_rate": np.float32(20.0)}, "datasets",
         {"name": "bytes name", "sample_rate": 20.0}),
        ({"sample_rate_hz": 25, "created": 1_600_000_000.25, "units": "mV"}, "datasets",
         {"sample_rate": 25.0, "created_at": "2020-09-13T12:26:40.250000Z", "unit": "mV"}),
        ({"description": np.bytes_(b"fixed-length"), "id": "run-42"}, "attrs",
         {"description": "fixed-length", "metadata": {"id": "run-42"}}),
        ({"sample_rate": 0.0, "created_at": "not a date"}, "attrs",
         {"sample_rate": 20.0, "created_at": "2023-11-14T22:13:20.000000Z",
          "metadata": {"sample_rate": 0.0, "created_at": "not a date"}}),
        ({"units": '{"x": "degC"}', "metadata": '{"site": "B"}', "start_time": "2024-03-01T12:00:00+02:00"},
         "attrs", {"unit": "degC", "metadata": {"site": "B"}, "created_at": "2024-03-01T10:00:00.000000Z"}),
    ],
    ids=["name-only", "scalar-datasets-and-bytes", "aliases-and-one-unit", "non-uuid-id-kept",
         "unusable-values-kept-in-metadata", "json-units-and-metadata"],
)
def test_rust_file_with_partial_metadata(
    tmp_path: Path, meta: dict[str, Any], meta_as: str, expected: dict[str, Any]
) -> None:
    path = write_rust(tmp_path / "partial.h5", {"x": (regular(5, 20.0), np.arange(5.0))}, meta,
                      meta_as=meta_as)
    run = open_seed(path)
    dl.validate(run)
    for key, value in expected.items():
        if key == "unit":
            assert run.daq.channels[0].unit == value
        else:
            assert run.attrs[key] == value, key
    if "name" not in expected:
        assert run.attrs["name"] == "partial"
    uuid.UUID(run.attrs["id"])


def test_rust_channel_attributes_are_read(tmp_path: Path) -> None:
    path = write_rust(tmp_path / "attrs.h5", {"t": (regular(3, 1.0), [0.0, 50.0, 200.0])}, {})
    with h5py.File(path, "r+") as f:
        g = f["data/t"]
        g.attrs["units"] = np.bytes_(b"degC")
        g.attrs["range_min"] = -10.0
        g.attrs["range_max"] = 100.0
    run = open_seed(path)
    ch = run.daq.channels[0]
    assert ch.unit == "degC"
    assert ch.range == (-10.0, 100.0)
    assert run["quality"].values.tolist() == [[0, 0, 1]]  # out of range: SUSPECT


def test_differing_timestamps_align_on_the_union_with_bad_gaps(tmp_path: Path) -> None:
    # "fast" at 4 Hz, "slow" at 2 Hz offset by 0.1 s, "late" starting later
    fast = regular(4, 4.0)
    slow = regular(2, 2.0, T0 + 0.1)
    late = regular(2, 4.0, T0 + 0.5)
    path = write_rust(tmp_path / "mixed.h5", {
        "fast": (fast, [1.0, 2.0, 3.0, 4.0]), "slow": (slow, [10.0, 20.0]), "late": (late, [7.0, 8.0]),
    }, {"sample_rate": 4.0})
    run = open_seed(path)
    dl.validate(run)
    offsets = (run["time"].values - np.datetime64(int(T0 * 1e9), "ns")) / np.timedelta64(1, "ms")
    assert offsets.tolist() == [0.0, 100.0, 250.0, 500.0, 600.0, 750.0]
    v = run["value"].sel(channel=["late", "fast", "slow"]).values
    q = run["quality"].sel(channel=["late", "fast", "slow"]).values
    nan = np.nan
    np.testing.assert_array_equal(v, [[nan, nan, nan, 7.0, nan, 8.0],
                                      [1.0, nan, 2.0, 3.0, nan, 4.0],
                                      [nan, 10.0, nan, nan, 20.0, nan]])
    np.testing.assert_array_equal(q, np.where(np.isnan(v), 2, 0))
    assert run.daq.channel_names == ["fast", "late", "slow"]  # a Rust file has no order: by name


def test_differing_lengths_are_padded_with_bad_gaps(tmp_path: Path) -> None:
    t = regular(5, 10.0)
    path = write_rust(tmp_path / "lengths.h5", {
        "long": (t, np.arange(5.0)), "short": (t[:2], [1.0, 2.0]), "none": ([], []),
    }, {})
    run = open_seed(path)
    assert run.sizes == {"channel": 3, "time": 5}
    assert run.attrs["sample_rate"] == 10.0
    assert run["quality"].sel(channel="short").values.tolist() == [0, 0, 2, 2, 2]
    assert run["quality"].sel(channel="none").values.tolist() == [2] * 5
    assert np.isnan(run["value"].sel(channel="none").values).all()


def test_repeated_timestamps_within_a_channel_keep_every_sample(tmp_path: Path) -> None:
    path = write_rust(tmp_path / "rep.h5", {
        "a": ([T0, T0, T0 + 1], [1.0, 2.0, 3.0]), "b": ([T0, T0 + 1, T0 + 1], [4.0, 5.0, 6.0]),
    }, {})
    run = open_seed(path)
    np.testing.assert_array_equal(run["value"].values, [[1.0, 2.0, 3.0, np.nan], [4.0, np.nan, 5.0, 6.0]])


@pytest.mark.parametrize(
    ("channels", "shape"),
    [({}, (0, 0)), ({"a": ([], []), "b": ([], [])}, (2, 0))],
    ids=["empty-data-group", "channels-without-samples"],
)
def test_no_samples_give_an_empty_run(
    tmp_path: Path, channels: dict[str, tuple[Any, Any]], shape: tuple[int, int]
) -> None:
    path = write_rust(tmp_path / "empty.h5", channels, {})
    assert is_seed_file(path)
    run = open_seed(path)
    dl.validate(run)
    assert run["value"].shape == shape
    assert run.attrs["sample_rate"] == 1.0
    assert run.attrs["created_at"] == "1970-01-01T00:00:00.000000Z"


def test_unsorted_timestamps_are_sorted_keeping_each_value(tmp_path: Path) -> None:
    path = write_rust(tmp_path / "unsorted.h5",
                      {"a": ([T0 + 2, T0, T0 + 1, T0], [20.0, 0.0, 10.0, 1.0])}, {})
    run = open_seed(path)
    assert run["value"].values.tolist() == [[0.0, 1.0, 10.0, 20.0]]
    assert (np.diff(run["time"].values.view(np.int64)) >= 0).all()


# --------------------------------------------------------------------------- refusals


def _edit(path: Path, change: Callable[[h5py.File], None]) -> Path:
    with h5py.File(path, "r+") as f:
        change(f)
    return path


def _rust(path: Path) -> Path:
    t = regular(3, 10.0)
    return write_rust(path, {"a": (t, [1.0, 2.0, 3.0]), "b": (t, [4.0, 5.0, 6.0])}, {"name": "x"})


def _del(key: str) -> Callable[[h5py.File], None]:
    def change(f: h5py.File) -> None:
        del f[key]
    return change


def _replace(key: str, data: Any) -> Callable[[h5py.File], None]:
    def change(f: h5py.File) -> None:
        del f[key]
        f[key] = data
    return change


def _set_meta(key: str, value: Any) -> Callable[[h5py.File], None]:
    def change(f: h5py.File) -> None:
        f["metadata"].attrs[key] = value
    return change


CORRUPT: list[tuple[Callable[[Path], Path], str]] = [
    (lambda p: (p.write_bytes(np.random.default_rng(0).bytes(4096)), p)[1],
     r"bad\.h5 could not be read as HDF5.*not an HDF5 file"),
    (lambda p: (p.write_bytes(b""), p)[1], r"bad\.h5 could not be read as HDF5"),
    (lambda p: (p.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(600)), p)[1], r"bad\.h5 could not be read"),
    (lambda p: _edit(_rust(p), _del("data")), r"bad\.h5 has no /data group"),
    (lambda p: _edit(_rust(p), _del("data/b/values")), r"channel 'b' \(/data/b\) has no 'values' dataset"),
    (lambda p: _edit(_rust(p), _del("data/a/timestamps")), r"channel 'a' .*has no 'timestamps' dataset"),
    (lambda p: _edit(_rust(p), _replace("data/a/values", np.arange(5.0))),
     r"channel 'a' .*has 3 timestamps but 5 values"),
    (lambda p: _edit(_rust(p), _replace("data/a/timestamps", [T0, np.nan, T0])),
     r"channel 'a' .*timestamp 1 is nan s"),
    (lambda p: _edit(_rust(p), _replace("data/a/timestamps", [T0, 1e12, T0])),
     r"timestamp 1 is 1000000000000\.0 s.*1678-2262"),
    (lambda p: _edit(_rust(p), _replace("data/a/values", np.array([b"x", b"y", b"z"]))),
     r"channel 'a' .*'values' holds \|S1; daqlab reads numbers there\."),
    (lambda p: _edit(_rust(p), _replace("data/a/values", np.ones((3, 2)))),
     r"'values' must be a 1-D dataset; has shape \(3, 2\)"),
    (lambda p: _edit(_rust(p), _replace("data/b", np.arange(3.0))),
     r"channel 'b' \(/data/b\) is a Dataset, not a channel group"),
    (lambda p: _edit(_rust(p), lambda f: f["data"].create_group(" padded")),
     r"channel ' padded' cannot be used: .*leading or trailing whitespace"),
    (lambda p: _edit(save_seed(sample_run(4), p), _replace("data/Δp/quality", np.full(4, 7, np.int8))),
     r"channel 'Δp' .*quality holds \[7\]"),
    (lambda p: _edit(save_seed(_calibrated(4), p), _del("data/Δp/physical")),
     r"calibrated but channel\(s\) \['Δp'\] have no 'physical' dataset"),
    (lambda p: _edit(save_seed(sample_run(4), p), _set_meta("metadata", "{no")),
     r"/metadata attribute 'metadata' is not valid JSON"),
    (lambda p: _edit(save_seed(sample_run(4), p), _set_meta("id", "nope")),
     r"(?s)bad\.h5 does not hold a valid run: .*'id' must be a UUID"),
]


@pytest.mark.parametrize(
    ("make", "pattern"), CORRUPT,
    ids=["random-bytes", "empty-file", "hdf5-magic-then-zeros", "no-data-group", "channel-without-values",
         "channel-without-timestamps", "length-mismatch", "nan-timestamp", "timestamp-out-of-range",
         "text-values", "2d-values", "channel-is-a-dataset", "invalid-channel-name", "invalid-quality",
         "calibrated-without-physical", "damaged-json-attribute", "invalid-id"],
)
def test_corrupt_or_foreign_files_are_format_errors(
    tmp_path: Path, make: Callable[[Path], Path], pattern: str
) -> None:
    path = make(tmp_path / "bad.h5")
    with pytest.raises(dl.FormatError, match=pattern) as info:
        open_seed(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_truncated_file_is_a_format_error(tmp_path: Path) -> None:
    whole = save_seed(sample_run(2000), tmp_path / "whole.h5")
    data = whole.read_bytes()
    for cut_at in (len(data) // 2, len(data) - 100, 3000):
        cut = tmp_path / f"cut{cut_at}.h5"
        cut.write_bytes(data[:cut_at])
        with pytest.raises(dl.FormatError, match=rf"cut{cut_at}\.h5 .*(truncated|damaged)"):
            open_seed(cut)
        assert isinstance(is_seed_file(cut), bool)  # never raises; the answer may be either


def test_netcdf_run_is_pointed_to_open_run(tmp_path: Path) -> None:
    path = dl.save(sample_run(3), tmp_path / "run.nc")
    with pytest.raises(dl.FormatError, match=r"run\.nc has no /data group.*daqlab NetCDF run.*open_run"):
        open_seed(path)


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = save_seed(sample_run(3), tmp_path / "future.h5")
    newer = dl.SCHEMA_VERSION + 1
    _edit(path, _set_meta("daqlab_schema_version", np.int32(newer)))
    with pytest.raises(dl.FormatError, match=rf"future\.h5 was written with run schema version {newer} "
                                             rf".*reads up to version {dl.SCHEMA_VERSION}\. Upgrade"):
        open_seed(path)


def test_missing_file_is_a_storage_error(tmp_path: Path) -> None:
    with pytest.raises(dl.StorageError, match=r"nope\.h5 does not exist"):
        open_seed(tmp_path / "nope.h5")


# --------------------------------------------------------------------------- writing


def test_existing_file_is_kept_unless_overwrite(tmp_path: Path) -> None:
    path = save_seed(sample_run(3), tmp_path / "keep.h5")
    before = path.read_bytes()
    with pytest.raises(dl.StorageError, match=r"keep\.h5 exists already.*overwrite=True"):
        save_seed(sample_run(5), path)
    assert path.read_bytes() == before
    second = sample_run(5).assign_attrs(name="second")
    save_seed(second, path, overwrite=True)
    xr.testing.assert_identical(open_seed(path), second)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.h5"]


def test_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: Any, **kwargs: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(h5py.Group, "create_dataset", boom)
    with pytest.raises(dl.StorageError, match="could not write"):
        save_seed(sample_run(3), tmp_path / "full.h5")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("run", "error", "pattern"),
    [
        (sample_run(3).assign_attrs(id="nope"), dl.SchemaError, "'id' must be a UUID"),
        (sample_run(3).assign_coords(site="B"), dl.ConfigurationError, r"also has \['site'\]"),
        (sample_run(3).assign_attrs(daqlab_attrs="x"), dl.ConfigurationError, "reserved"),
        (sample_run(3).assign_attrs(c=1j), dl.ConfigurationError, "complex .* cannot be stored"),
    ],
    ids=["invalid-run", "extra-coordinate", "reserved-attribute", "unstorable-attribute"],
)
def test_runs_that_cannot_be_written_are_refused(
    tmp_path: Path, run: xr.Dataset, error: type[Exception], pattern: str
) -> None:
    with pytest.raises(error, match=pattern):
        save_seed(run, tmp_path / "no.h5")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- detection


def _seed_file(p: Path) -> Path:
    return save_seed(sample_run(3), p)


DETECT: list[tuple[Callable[[Path], Path], bool]] = [
    (_seed_file, True),
    (_rust, True),
    (lambda p: write_rust(p, {}, {}), True),
    (lambda p: write_rust(p, {"a": (regular(2, 1.0), [1.0, 2.0])}, None), True),
    (lambda p: dl.save(sample_run(3), p.with_suffix(".nc")), False),
    (lambda p: (p.write_bytes(np.random.default_rng(0).bytes(2048)), p)[1], False),
    (lambda p: (p.write_bytes(b""), p)[1], False),
    (lambda p: (p.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100)), p)[1], False),
    (lambda p: p.with_name("missing.h5"), False),
    (lambda p: p.parent, False),
    (lambda p: _edit(_rust(p), _del("data")), False),
    (lambda p: _edit(_rust(p), _del("data/a/values")), False),
    (lambda p: _edit(_rust(p), _replace("data/a", [1, 2])), False),
    (lambda p: write_rust(p, {}, None), False),
]


@pytest.mark.parametrize(
    ("make", "expected"), DETECT,
    ids=["save_seed", "rust-app", "empty-data-with-metadata", "rust-without-metadata", "daqlab-netcdf",
         "random-bytes", "empty-file", "hdf5-magic-then-zeros", "missing", "folder", "hdf5-without-data",
         "channel-without-values", "channel-is-a-dataset", "bare-empty-data-group"],
)
def test_is_seed_file(tmp_path: Path, make: Callable[[Path], Path], expected: bool) -> None:
    assert is_seed_file(make(tmp_path / "f.h5")) is expected


# --------------------------------------------------------------------------- nested /metadata groups


def test_nested_metadata_groups_become_nested_dicts(tmp_path: Path) -> None:
    path = write_rust(tmp_path / "nested.h5", {"a": (regular(3, 10.0), [1.0, 2.0, 3.0])}, {"top": 1})
    with h5py.File(path, "a") as f:
        sub = f["metadata"].create_group("sub")
        sub.attrs["x"] = np.int32(1)
        deeper = sub.create_group("deeper")
        deeper.attrs["k"] = [0, 1, 2]
        deeper.create_dataset("label", data=b"text")
        deeper.create_group("deepest").attrs["f"] = 0.5
    run = open_seed(path)
    assert run.attrs["metadata"] == {  # was {"sub": "{'x': 1, 'deeper': \"{'k': [0, 1, 2]}\"}"}
        "top": 1,
        "sub": {"x": 1, "deeper": {"k": [0, 1, 2], "label": "text", "deepest": {"f": 0.5}}},
    }
    for fmt in ("seed-hdf5", "netcdf", "csv"):  # written back as it came
        back = dl.open_run(dl.save(run, tmp_path / f"back.{fmt}", fmt))
        xr.testing.assert_identical(back, run)


def test_metadata_members_named_like_attributes_are_all_kept(tmp_path: Path) -> None:
    # HDF5 lets a group hold an attribute and a member of the same name; a dict holds one
    path = write_rust(tmp_path / "clash.h5", {"a": (regular(3, 10.0), [1.0, 2.0, 3.0])}, {"gain": 2})
    with h5py.File(path, "a") as f:
        f["metadata"].create_group("gain").attrs["unit"] = "dB"
        f["metadata"].attrs["gain (group)"] = "taken"
        f["metadata"].create_dataset("site", data=b"lab 3")
    run = open_seed(path)
    assert run.attrs["metadata"] == {"gain": 2, "gain (group)": "taken", "gain (group) 2": {"unit": "dB"},
                                     "site": "lab 3"}


# --------------------------------------------------------------------------- text that is not UTF-8


def test_metadata_text_that_is_not_utf8_is_kept_exactly(tmp_path: Path) -> None:
    path = write_rust(tmp_path / "latin1.h5", {"a": (regular(3, 10.0), [1.0, 2.0, 3.0])},
                      {"site": b"M\xfcnchen"})
    with h5py.File(path, "a") as f:
        f["metadata"].create_dataset("room", data=np.bytes_(b"Flur \xe4"))  # h5py reads bytes
        f["metadata"].create_dataset("tags", data=np.array([b"\xff", b"ok"]))
    meta = open_seed(path).attrs["metadata"]
    # h5py gives attribute text with surrogate escapes; datasets were decoded with U+FFFD (lost)
    assert meta == {"site": "M\udcfcnchen", "room": "Flur \udce4", "tags": ["\udcff", "ok"]}
    assert meta["room"].encode("utf-8", "surrogateescape") == b"Flur \xe4"


@pytest.mark.parametrize("fmt", ["seed-hdf5", "netcdf", "csv", "csv-wide"])
def test_run_with_text_that_is_not_utf8_saves_in_every_format(tmp_path: Path, fmt: str) -> None:
    path = write_rust(tmp_path / "latin1.h5", {"a": (regular(3, 10.0), [1.0, 2.0, 3.0])},
                      {"site": b"M\xfcnchen", "tags": np.array([b"\xff", b"ok"])})
    run = open_seed(path)
    back = dl.open_run(dl.save(run, tmp_path / f"back.{fmt}", fmt))
    xr.testing.assert_identical(back, run)


def test_unit_bytes_that_are_not_utf8_are_read_as_latin1(tmp_path: Path) -> None:
    path = write_rust(tmp_path / "unit.h5", {"a": (regular(2, 10.0), [1.0, 2.0]),
                                             "b": (regular(2, 10.0), [1.0, 2.0])},
                      {"units": b"\xb5V"})
    with h5py.File(path, "a") as f:
        f["data/a"].attrs["unit"] = b"\xb0C"  # h5py: "\udcb0C"; the run was refused before
    run = open_seed(path)
    assert run.daq.channels[0].unit == "°C"
    assert run.daq.channels[1].unit == "µV"
    xr.testing.assert_identical(open_seed(save_seed(run, tmp_path / "back.h5")), run)


def test_units_that_are_not_text_are_refused_on_save(tmp_path: Path) -> None:
    run = sample_run(2).assign_coords(unit=("channel", np.array(["\udcff", "V", ""])))
    with pytest.raises(dl.SchemaError, match=r"coordinate 'unit' holds \['\\udcff'\], text with lone "
                       r"surrogates"):
        save_seed(run, tmp_path / "bad.h5")
    assert list(tmp_path.iterdir()) == []
