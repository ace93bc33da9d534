"""Saving and opening runs as NetCDF4/HDF5: round trips, atomic writes, refusals."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import dask.array as da
import h5py
import numpy as np
import pytest
import xarray as xr

import daqlab as dl

START = "2024-01-01T00:00:00Z"
RUN_ID = "0d6c7a4e-2f8b-4c1d-9e3a-5b7f1a2c3d4e"


def sample_run(n: int = 6) -> xr.Dataset:
    chans = [
        dl.Channel("Kühlwasser Temperatur", "°C", range=(0.0, 90.0),
                   calibration=dl.Calibration(2.0, -1.0,
                                              cast(Any, "2024-05-01T08:30:15.123456789Z"))),
        dl.Channel("电压 ai1", "V", range=(None, 5.0)),
        dl.Channel("Δp", ""),
    ]
    rng = np.random.default_rng(11)
    values = rng.normal(size=(3, n))
    if n >= 4:
        values[0, 1] = np.nan
        values[1, 2] = np.inf
        values[2, 3] = -np.inf
    return dl.make_run(
        values, chans, sample_rate=3.0, start=START, id=RUN_ID,
        created_at="2024-01-02T03:04:05.678Z", name="Prüfstand 3",
        description="line one\nline two, with ünïcode",
        metadata={"operator": "Ada", "gain": 2.5, "tags": ["a", "ß"], "nested": {"ok": True,
                                                                             "none": None}},
    )


def no_hidden_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# --------------------------------------------------------------------------- round trips


def _empty(_: int) -> xr.Dataset:
    return dl.make_run(np.empty((2, 0)), ["a", "b"], sample_rate=10.0,
                       times=np.array([], dtype="datetime64[ns]"), id=RUN_ID)


def _calibrated(n: int) -> xr.Dataset:
    return dl.calibrate(sample_run(n))


def _many_rates(n: int) -> xr.Dataset:
    return sample_run(n).assign_attrs(sample_rate=48_000.0)


RUNS: list[tuple[Callable[[int], xr.Dataset], int]] = [
    (sample_run, 6), (sample_run, 1), (_empty, 0), (_calibrated, 6), (_many_rates, 500),
]


@pytest.mark.parametrize(
    ("make", "n"), RUNS, ids=["six-samples", "one-sample", "no-samples", "calibrated-with-raw",
                              "longer"],
)
@pytest.mark.parametrize("suffix", [".nc", ".h5"], ids=["nc", "h5"])
def test_round_trip_is_identical(
    tmp_path: Path, make: Callable[[int], xr.Dataset], n: int, suffix: str
) -> None:
    run = make(n)
    path = tmp_path / f"run{suffix}"
    assert dl.save(run, path) == path
    back = dl.open_run(path)
    xr.testing.assert_identical(back, run)
    assert back.attrs == run.attrs
    assert back.attrs["calibrated"] is run.attrs["calibrated"]
    assert isinstance(back.attrs["metadata"], dict)
    assert back["value"].dtype == np.float64
    assert back["quality"].dtype == np.int8
    np.testing.assert_array_equal(back["cal_date"].values, run["cal_date"].values)
    assert not isinstance(back["value"].data, da.Array)
    dl.validate(back)


def test_round_trip_keeps_non_finite_values_and_flags(tmp_path: Path) -> None:
    run = sample_run()
    dl.save(run, tmp_path / "r.nc")
    back = dl.open_run(tmp_path / "r.nc")
    v = back["value"].values
    assert np.isnan(v[0, 1])
    assert v[1, 2] == np.inf
    assert v[2, 3] == -np.inf
    assert back["quality"].values[0, 1] == dl.Quality.BAD
    assert back.daq.channel_names == ["Kühlwasser Temperatur", "电压 ai1", "Δp"]
    # calibration dates are kept to the microsecond (daqlab.Calibration rounds them so)
    assert back.daq.channels[0].calibration.reference_date == np.datetime64(
        "2024-05-01T08:30:15.123456", "ns")


def test_round_trip_through_the_accessor(tmp_path: Path) -> None:
    run = sample_run()
    path = run.daq.save(str(tmp_path / "acc.nc"))
    assert path == tmp_path / "acc.nc"
    xr.testing.assert_identical(dl.open_run(str(path)), run)


def test_round_trip_keeps_user_attributes(tmp_path: Path) -> None:
    # Attributes besides the schema's are allowed on a run (validate accepts them)
    # and a round trip "gives back the same run" (DESIGN.md, Storage).
    run = sample_run().assign_attrs(title="Pump test", history="made by hand", site="Hall B")
    dl.validate(run)
    dl.save(run, tmp_path / "u.nc")
    back = dl.open_run(tmp_path / "u.nc")
    assert back.attrs["site"] == "Hall B"
    assert back.attrs["title"] == "Pump test"
    assert back.attrs["history"] == "made by hand"


@pytest.mark.parametrize("history", [5, 2.5, np.int16(3), ["a", "b"]], ids=["int", "float", "np", "list"])
def test_a_history_that_is_not_text_round_trips(tmp_path: Path, history: Any) -> None:
    # CF's history is text, to which daqlab appends its line; any other value is kept as it is
    run = sample_run().assign_attrs(history=history)
    back = dl.open_run(dl.save(run, tmp_path / "h.nc"))
    xr.testing.assert_identical(back, run)


@pytest.mark.parametrize("name", ["daqlab_attrs", "daqlab_schema_version", "daqlab_version",
                                  "_FillValue", "coordinates"])
def test_reserved_run_attribute_names_are_refused_in_netcdf(tmp_path: Path, name: str) -> None:
    # they were written over (daqlab's notes) or taken by xarray: saved, then gone on reopening
    run = sample_run().assign_attrs({name: "mine"})
    with pytest.raises(dl.FormatError, match=rf"run attribute '{name}' is reserved in NetCDF"):
        dl.save(run, tmp_path / "r.nc")
    assert list(tmp_path.iterdir()) == []
    xr.testing.assert_identical(dl.open_run(dl.save(run, tmp_path / "r.csv")), run)


@pytest.mark.parametrize("value", [True, np.array([True, False])], ids=["bool", "bool-array"])
def test_a_bool_variable_attribute_is_a_format_error_in_netcdf(tmp_path: Path, value: Any) -> None:
    run = sample_run()
    run["value"].attrs["checked"] = value
    with pytest.raises(dl.FormatError, match=r"cannot write r\.nc as NetCDF: .*save as CSV or seed-hdf5"):
        dl.save(run, tmp_path / "r.nc")
    assert list(tmp_path.iterdir()) == []


def test_round_trip_encodes_bool_attributes(tmp_path: Path) -> None:
    # DESIGN.md: "bool attributes and other values netCDF cannot hold are encoded on
    # disk and decoded on open, so a round trip gives back the same run."
    run = sample_run().assign_attrs(reviewed=True)
    dl.validate(run)
    dl.save(run, tmp_path / "b.nc")
    back = dl.open_run(tmp_path / "b.nc")
    assert back.attrs["reviewed"] is True


def test_open_with_chunks_is_lazy(tmp_path: Path) -> None:
    run = sample_run(200)
    dl.save(run, tmp_path / "lazy.nc")
    back = dl.open_run(tmp_path / "lazy.nc", chunks={})
    try:
        assert isinstance(back["value"].data, da.Array)
        assert isinstance(back["quality"].data, da.Array)
        assert back.attrs == run.attrs
        xr.testing.assert_identical(back.compute(), run)
    finally:
        back.close()


def test_file_can_be_chunked_and_compressed(tmp_path: Path) -> None:
    # DESIGN.md: NetCDF4/HDF5 "through h5netcdf, CF conventions, chunked and compressed".
    run = sample_run(1000)
    dl.save(run, tmp_path / "c.nc", compression=True)
    with h5py.File(tmp_path / "c.nc", "r") as f:
        for name in ("value", "quality"):
            assert f[name].chunks is not None, name
            assert f[name].compression is not None, name
    xr.testing.assert_identical(dl.open_run(tmp_path / "c.nc"), run)


# --------------------------------------------------------------------------- readable by others


def test_file_opens_with_plain_h5py(tmp_path: Path) -> None:
    run = sample_run()
    dl.save(run, tmp_path / "plain.nc")
    with h5py.File(tmp_path / "plain.nc", "r") as f:
        assert set(f.keys()) >= {"value", "quality", "time", "channel", "unit", "range_min",
                                 "range_max", "cal_slope", "cal_offset", "cal_date"}
        np.testing.assert_array_equal(f["value"][...], run["value"].values)
        np.testing.assert_array_equal(f["quality"][...], run["quality"].values)
        assert f["quality"].dtype == np.int8
        # fixed-length char arrays (CF checkers reject variable-length string coordinates)
        assert f["channel"].dtype == np.dtype("S1")
        names = [b"".join(row).rstrip(b"\0").decode() for row in f["channel"][...]]
        assert names == run.daq.channel_names
        assert int(np.asarray(f.attrs["daqlab_schema_version"]).ravel()[0]) == dl.SCHEMA_VERSION
        # text attributes are NC_CHAR, as netCDF-C writes them: fixed-length, bytes in h5py
        def text(a: object) -> str:
            assert isinstance(a, bytes), f"{a!r} is not an NC_CHAR attribute"
            return a.decode()

        assert text(f.attrs["daqlab_version"]) == dl.__version__
        assert text(f.attrs["Conventions"]) == "CF-1.8"
        assert text(f["value"].attrs["ancillary_variables"]) == "quality"
        assert text(f["quality"].attrs["flag_meanings"]) == "good suspect bad interpolated"
        np.testing.assert_array_equal(f["quality"].attrs["flag_values"], [0, 1, 2, 3])


def test_file_opens_with_xarray_h5netcdf(tmp_path: Path) -> None:
    run = sample_run()
    dl.save(run, tmp_path / "x.nc")
    with xr.open_dataset(tmp_path / "x.nc", engine="h5netcdf") as ds:
        np.testing.assert_array_equal(ds["value"].values, run["value"].values)
        np.testing.assert_array_equal(ds["time"].values, run["time"].values)
        assert ds["channel"].values.tolist() == run.daq.channel_names
        assert ds.attrs["id"] == RUN_ID
        assert ds.attrs["sample_rate"] == 3.0


# --------------------------------------------------------------------------- atomic writes


def test_no_temporary_files_after_success(tmp_path: Path) -> None:
    dl.save(sample_run(), tmp_path / "a.nc")
    dl.save(sample_run(), tmp_path / "a.nc", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.nc"]


def test_written_under_a_hidden_temporary_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "run.nc"
    seen: list[tuple[Path, bool]] = []
    original = xr.Dataset.to_netcdf

    def spy(self: xr.Dataset, path: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append((Path(path), target.exists()))
        return original(self, path, *args, **kwargs)

    monkeypatch.setattr(xr.Dataset, "to_netcdf", spy)
    dl.save(sample_run(), target)
    assert len(seen) == 1
    written, target_existed = seen[0]
    assert written.parent == tmp_path
    assert written.name.startswith(".")
    assert written != target
    assert not target_existed  # the final name appears only once the file is complete
    assert not written.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.nc"]


def test_missing_folder_is_a_storage_error(tmp_path: Path) -> None:
    target = tmp_path / "missing" / "run.nc"
    with pytest.raises(dl.StorageError, match=r"folder .*missing does not exist; create it") as info:
        dl.save(sample_run(), target)
    assert isinstance(info.value, OSError)
    assert info.value.errno == errno.ENOENT
    assert not target.parent.exists()
    assert no_hidden_files(tmp_path) == []


def _failing_writer(exc: BaseException) -> Callable[..., Any]:
    def to_netcdf(self: xr.Dataset, path: Any, *args: Any, **kwargs: Any) -> None:
        Path(path).write_bytes(b"\x89HDF\r\n\x1a\n half a file")
        raise exc

    return to_netcdf


@pytest.mark.parametrize(
    ("exc", "expected"),
    [(OSError(errno.ENOSPC, "No space left on device"), dl.StorageError),
     (RuntimeError("writer crashed"), RuntimeError),
     (KeyboardInterrupt(), KeyboardInterrupt)],
    ids=["disk-full", "writer-error", "ctrl-c"],
)
def test_failed_write_leaves_no_temporary_and_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exc: BaseException,
    expected: type[BaseException],
) -> None:
    target = tmp_path / "run.nc"
    old = sample_run(3)
    dl.save(old, target)
    before = target.read_bytes()
    monkeypatch.setattr(xr.Dataset, "to_netcdf", _failing_writer(exc))
    with pytest.raises(expected) as info:
        dl.save(sample_run(8), target, overwrite=True)
    if expected is dl.StorageError:
        assert isinstance(info.value, dl.StorageError)
        assert info.value.errno == errno.ENOSPC
        assert "could not write" in str(info.value)
        assert "Nothing was written under that name" in str(info.value)
        assert isinstance(info.value.__cause__, OSError)
    assert no_hidden_files(tmp_path) == []
    assert target.read_bytes() == before
    monkeypatch.undo()
    xr.testing.assert_identical(dl.open_run(target), old)


def test_failed_new_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(xr.Dataset, "to_netcdf",
                        _failing_writer(OSError(errno.EIO, "Input/output error")))
    with pytest.raises(dl.StorageError, match="could not write"):
        dl.save(sample_run(), tmp_path / "new.nc")
    assert list(tmp_path.iterdir()) == []


def test_existing_file_is_not_overwritten(tmp_path: Path) -> None:
    target = tmp_path / "keep.nc"
    first = sample_run(3)
    dl.save(first, target)
    before = target.read_bytes()
    second = sample_run(5).assign_attrs(name="second")
    with pytest.raises(dl.StorageError, match=r"keep\.nc exists already.*overwrite=True") as info:
        dl.save(second, target)
    assert info.value.errno == errno.EEXIST
    assert target.read_bytes() == before
    dl.save(second, target, overwrite=True)
    xr.testing.assert_identical(dl.open_run(target), second)
    assert no_hidden_files(tmp_path) == []


def test_invalid_run_is_not_saved(tmp_path: Path) -> None:
    with pytest.raises(dl.SchemaError, match="'id' must be a UUID"):
        dl.save(sample_run().assign_attrs(id="nope"), tmp_path / "bad.nc")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- refusals


def _set_attr(path: Path, name: str, value: Any) -> None:
    with h5py.File(path, "r+") as f:
        f.attrs[name] = value


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.nc"
    dl.save(sample_run(), path)
    newer = dl.SCHEMA_VERSION + 1
    _set_attr(path, "daqlab_schema_version", np.int32(newer))
    with pytest.raises(dl.FormatError,
                       match=rf"run schema version {newer} by daqlab .*reads up to version "
                             rf"{dl.SCHEMA_VERSION}\. Upgrade daqlab") as info:
        dl.open_run(path)
    assert isinstance(info.value, ValueError)
    with pytest.raises(dl.FormatError, match=f"version {newer}"):
        dl.open_run(path, chunks={})


def test_same_or_older_schema_opens(tmp_path: Path) -> None:
    path = tmp_path / "now.nc"
    run = sample_run()
    dl.save(run, path)
    _set_attr(path, "daqlab_schema_version", np.int32(dl.SCHEMA_VERSION))
    xr.testing.assert_identical(dl.open_run(path), run)


def test_corrupt_metadata_is_a_format_error(tmp_path: Path) -> None:
    path = tmp_path / "meta.nc"
    dl.save(sample_run(), path)
    _set_attr(path, "metadata", "{not json")
    with pytest.raises(dl.FormatError, match=r"meta\.nc: attribute 'metadata' is not valid JSON"):
        dl.open_run(path)


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        (np.random.default_rng(0).bytes(4096), r"not a run daqlab can read"),
        (b"", r"not a run daqlab can read"),
        (b"\x89HDF\r\n\x1a\n" + np.random.default_rng(1).bytes(4096),
         r"could not be read as NetCDF4/HDF5"),
    ],
    ids=["random-bytes", "empty-file", "hdf5-magic-then-garbage"],
)
def test_garbage_is_a_format_error(tmp_path: Path, content: bytes, pattern: str) -> None:
    path = tmp_path / "garbage.nc"
    path.write_bytes(content)
    with pytest.raises(dl.FormatError, match=pattern):
        dl.open_run(path)


def test_truncated_file_is_a_format_error(tmp_path: Path) -> None:
    path = tmp_path / "whole.nc"
    dl.save(sample_run(100), path)
    data = path.read_bytes()
    cut = tmp_path / "cut.nc"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(dl.FormatError, match=r"cut\.nc could not be read"):
        dl.open_run(cut)


def test_foreign_netcdf_is_a_format_error(tmp_path: Path) -> None:
    path = tmp_path / "foreign.nc"
    xr.Dataset({"v": ("x", [1.0, 2.0])}, attrs={"title": "not ours"}).to_netcdf(
        path, engine="h5netcdf")
    with pytest.raises(dl.FormatError,
                       match=r"foreign\.nc is a NetCDF file but not a daqlab run"):
        dl.open_run(path)


def test_unknown_suffix_is_refused(tmp_path: Path) -> None:
    with pytest.raises(dl.FormatError, match=r"cannot tell the format of 'run\.txt'.*\.nc.*format="):
        dl.save(sample_run(), tmp_path / "run.txt")
    with pytest.raises(dl.FormatError, match=r"format 'excel' is not supported; choose one of"):
        dl.save(sample_run(), tmp_path / "run.nc", format="excel")
    assert list(tmp_path.iterdir()) == []


def test_explicit_format_and_detection_by_contents(tmp_path: Path) -> None:
    run = sample_run()
    path = tmp_path / "run.dat"
    dl.save(run, path, format="netcdf")
    xr.testing.assert_identical(dl.open_run(path), run)


def test_open_missing_path_and_folder(tmp_path: Path) -> None:
    with pytest.raises(dl.StorageError, match=r"nope\.nc does not exist; check the path") as info:
        dl.open_run(tmp_path / "nope.nc")
    assert info.value.errno == errno.ENOENT
    with pytest.raises(dl.FormatError, match="is a folder"):
        dl.open_run(tmp_path)


def test_saved_file_is_complete_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "durable.nc"
    dl.save(sample_run(), path)
    assert path.stat().st_size > 0
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89HDF\r\n\x1a\n"
    assert os.access(path, os.R_OK)


# --------------------------------------------------------------------------- the fast reader


def _by_xarray(path: Path) -> xr.Dataset:
    """What xarray's own h5netcdf reader makes of the file, decoded as daqlab decodes it."""
    from daqlab.io._cftime import decode_times

    with xr.open_dataset(path, engine="h5netcdf", decode_times=False) as ds:
        return decode_times(ds.load())


@pytest.mark.parametrize(("make", "n"), RUNS, ids=["six", "one", "none", "calibrated", "longer"])
def test_fast_reader_equals_xarrays_reader(tmp_path: Path, make: Callable[[int], xr.Dataset],
                                           n: int) -> None:
    from daqlab.io import _h5read

    path = dl.save(make(n), tmp_path / "r.nc")
    fast = _h5read.read_plain(path)
    assert fast is not None
    xr.testing.assert_identical(fast, _by_xarray(path))
    assert list(fast.indexes) == ["channel", "time"]


@pytest.mark.parametrize("n", [(1 << 18) + 5, 3 * (1 << 18)], ids=["partial-last-chunk", "whole-chunks"])
def test_fast_reader_inflates_every_quality_chunk(tmp_path: Path, n: int) -> None:
    # the flags are inflated from the stored chunks; the last chunk along time may be partial
    rng = np.random.default_rng(3)
    quality = rng.integers(0, 4, size=(2, n)).astype(np.int8)
    run = dl.make_run(rng.normal(size=(2, n)), ["a", "b"], sample_rate=1e6, quality=quality)
    path = dl.save(run, tmp_path / "q.nc")
    with h5py.File(path, "r") as f:
        assert f["quality"].compression == "gzip"
        assert f["quality"].shape[1] % f["quality"].chunks[1] == (5 if n % 2 else 0)
        stored = f["quality"][...]
    back = dl.open_run(path)
    np.testing.assert_array_equal(back["quality"].values, stored)
    np.testing.assert_array_equal(back["quality"].values, run["quality"].values)


def _edit(path: Path, how: str) -> None:
    with h5py.File(path, "a") as f:
        if how == "bare-variable":  # a variable without netCDF dimensions
            f.create_dataset("notes", data=np.arange(3.0))
        elif how == "uncompressed-quality":  # rewritten by a tool that stores flags plainly
            q = f["quality"][...]
            attrs = dict(f["quality"].attrs)
            del f["quality"]
            f.create_dataset("quality", data=q)
            for k, v in attrs.items():
                if k not in ("DIMENSION_LIST",):
                    f["quality"].attrs[k] = v
            f["quality"].dims[0].attach_scale(f["channel"])
            f["quality"].dims[1].attach_scale(f["time"])
        elif how == "packed-value":  # a scale factor: xarray must decode it
            f["value"].attrs["scale_factor"] = 2.0


def test_files_edited_by_other_tools_open_through_xarray(tmp_path: Path) -> None:
    import h5netcdf

    from daqlab.io import _h5read

    run = sample_run(50)
    path = dl.save(run, tmp_path / "packed.nc")
    _edit(path, "packed-value")
    assert _h5read.read_plain(path) is None
    back = dl.open_run(path)  # xarray applies the scale factor
    np.testing.assert_array_equal(back["value"].values, run["value"].values * 2.0)
    np.testing.assert_array_equal(back["quality"].values, run["quality"].values)
    # flags stored without compression are read as they are, by the fast reader
    path = dl.save(run, tmp_path / "plain-flags.nc")
    _edit(path, "uncompressed-quality")
    fast = _h5read.read_plain(path)
    assert fast is not None
    np.testing.assert_array_equal(fast["quality"].values, run["quality"].values)
    # another netCDF tool added a variable of its own: not a run any more, and said so
    path = dl.save(run, tmp_path / "extra.nc")
    with h5netcdf.File(path, "a") as nc:
        nc.create_variable("gain", ("channel",), data=np.arange(3.0))
    assert _h5read.read_plain(path) is None
    with pytest.raises(dl.FormatError, match=r"extra\.nc does not hold a valid daqlab run:\n.*"
                       r"unexpected data variable.*gain"):
        dl.open_run(path)


def test_variable_without_netcdf_dimensions_is_a_format_error(tmp_path: Path) -> None:
    # h5netcdf then misreads the char arrays' dimensions; that must not escape as UnicodeDecodeError
    path = dl.save(sample_run(50), tmp_path / "bare.nc")
    _edit(path, "bare-variable")
    with pytest.raises(dl.FormatError, match=r"bare\.nc could not be read as a daqlab run"):
        dl.open_run(path)


def test_damaged_quality_chunk_is_a_format_error(tmp_path: Path) -> None:
    run = sample_run(1000)
    path = dl.save(run, tmp_path / "d.nc")
    with h5py.File(path, "r") as f:
        info = f["quality"].id.get_chunk_info(0)
    with path.open("r+b") as fh:  # overwrite the deflated bytes of the first flags chunk
        fh.seek(info.byte_offset)
        fh.write(b"\xff" * info.size)
    with pytest.raises(dl.FormatError, match=r"d\.nc"):
        dl.open_run(path)


# --------------------------------------------------------------------------- lazy reading


@pytest.mark.parametrize(
    "chunks", [{}, "auto", 64, -1, {"time": 100}, {"time": 300, "channel": 1}, {"channel": 2},
               {"time": (600, 400)}, {"time": "4KiB"}],
    ids=["file", "auto", "int", "whole", "time", "both", "channel", "lengths", "bytes"])
def test_every_chunking_opens_lazily_and_identically(tmp_path: Path, chunks: Any) -> None:
    run = sample_run(1000)
    path = dl.save(run, tmp_path / "c.nc")
    back = dl.open_run(path, chunks=chunks)
    assert isinstance(back["value"].data, da.Array)
    assert isinstance(back["quality"].data, da.Array)
    if chunks == {"time": 100}:
        assert back["value"].data.chunks[1] == (100,) * 10
    xr.testing.assert_identical(back.compute(), run)


def test_lazy_samples_are_read_straight_through_h5py(tmp_path: Path) -> None:
    run = sample_run(1000)
    path = dl.save(run, tmp_path / "c.nc")
    back = dl.open_run(path, chunks={"time": 250})
    layers = back["value"].data.dask.layers
    assert any(name.startswith("daqlab-read-value") for name in layers), list(layers)
    # one read per chunk asked for: no rechunking on top
    assert not any("rechunk" in name for name in layers), list(layers)
    assert back["value"].data.chunks == ((1, 1, 1), (250,) * 4)


@pytest.mark.parametrize(
    "chunks", [{"tme": 10}, {"time": 0}, {"time": -5}, "nonsense", (1, 2), True, 2.5],
    ids=["typo", "zero", "negative", "word", "tuple", "bool", "float"])
def test_bad_chunks_are_refused_with_what_is_allowed(tmp_path: Path, chunks: Any) -> None:
    run = sample_run(20)
    paths = [dl.save(run, tmp_path / "r.nc"), dl.save(run, tmp_path / "r.csv"),
             dl.save(run, tmp_path / "s.h5", "seed-hdf5")]
    for path in paths:
        with pytest.raises(dl.ConfigurationError, match=r"chunks=.*'auto'.*\{'time': 1_000_000\}"):
            dl.open_run(path, chunks=chunks)
    with pytest.raises(dl.ConfigurationError, match="chunks="):
        dl.open_runs(paths[:1], chunks=chunks)


def test_bad_chunk_lengths_are_refused(tmp_path: Path) -> None:
    path = dl.save(sample_run(1000), tmp_path / "r.nc")
    for p in (path, dl.save(sample_run(1000), tmp_path / "r.csv")):
        with pytest.raises(dl.ConfigurationError, match=r"do not fit a run of .*'time': 1000"):
            dl.open_run(p, chunks={"time": (10, 10)})


def test_two_lazy_opens_with_different_chunks_do_not_mix(tmp_path: Path) -> None:
    # the dask keys of a lazy read name the chunks: two chunkings of one file are two graphs
    import dask.base

    run = dl.make_run(np.arange(2000.0).reshape(2, 1000), ["a", "b"], sample_rate=10.0)
    path = dl.save(run, tmp_path / "r.nc")
    a, b = dl.open_run(path, chunks={"time": 100}), dl.open_run(path, chunks={"time": 500})
    total = float(run["value"].sum())
    sums = dask.base.compute(b["value"].data.sum(), a["value"].data.sum())  # type: ignore[no-untyped-call]
    assert sums == (total, total)
    np.testing.assert_array_equal((a["value"] - b["value"]).values, 0.0)


def test_lazy_run_reads_from_any_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = sample_run(100)
    dl.save(run, tmp_path / "r.nc")
    monkeypatch.chdir(tmp_path)
    lazy = dl.open_run("r.nc", chunks={})
    monkeypatch.chdir(tmp_path.parent)
    xr.testing.assert_identical(lazy.compute(), run)


def test_open_works_while_the_interpreter_exits(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = dl.save(sample_run(100), tmp_path / "r.nc")
    code = ("import atexit, daqlab as dl\n"
            f"atexit.register(lambda: print('n =', dl.open_run({str(path)!r}).sizes['time']))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "n = 100" in out.stdout, out.stderr


def _rewrite(run: xr.Dataset, path: Path, change: Callable[[xr.Dataset, dict[str, Any]], xr.Dataset]) -> Path:
    """``run`` written as daqlab writes it, but with ``change`` made to the dataset and encoding."""
    from daqlab.io import _netcdf

    ds, enc = _netcdf._cf_dataset(run, False)
    ds = change(ds, enc)
    ds.to_netcdf(path, engine="h5netcdf", encoding=enc)
    return path


def test_variable_length_string_names_open(tmp_path: Path) -> None:
    run = sample_run(10)

    def vlen(ds: xr.Dataset, enc: dict[str, Any]) -> xr.Dataset:
        enc["channel"] = enc["unit"] = {"dtype": str}
        return ds

    back = dl.open_run(_rewrite(run, tmp_path / "vlen.nc", vlen))
    xr.testing.assert_identical(back, run)


def test_transposed_samples_are_not_read_as_channel_by_time(tmp_path: Path) -> None:
    run = dl.make_run(np.arange(9.0).reshape(3, 3), ["a", "b", "c"], sample_rate=1.0)

    def transpose(ds: xr.Dataset, enc: dict[str, Any]) -> xr.Dataset:
        for k in ("value", "quality"):
            enc[k]["chunksizes"] = enc[k]["chunksizes"][::-1]
        return ds.transpose("time", "channel", ...)

    path = _rewrite(run, tmp_path / "t.nc", transpose)
    from daqlab.io import _h5read

    assert _h5read.read_plain(path) is None
    # said, never silently transposed
    with pytest.raises(dl.FormatError, match=r"'value' must have dims \('channel', 'time'\); has \('time'"):
        dl.open_run(path)


def test_damaged_files_raise_format_errors_only(tmp_path: Path) -> None:
    # truncations and random byte flips: each open either works or raises a DaqlabError
    rng = np.random.default_rng(1)
    run = dl.make_run(rng.normal(size=(2, 3000)), [dl.Channel("Δp", "V"), "b"], sample_rate=10.0,
                      quality=rng.integers(0, 4, (2, 3000)).astype(np.int8))
    data = dl.save(run, tmp_path / "src.nc").read_bytes()
    target = tmp_path / "damaged.nc"
    others = []
    for trial in range(150):
        b = bytearray(data)
        if trial < 30:
            b = b[: len(data) * trial // 30]
        else:
            for _ in range(int(rng.integers(1, 4))):
                b[int(rng.integers(0, len(data)))] = int(rng.integers(0, 256))
        target.write_bytes(bytes(b))
        ways: tuple[dict[str, Any] | None, ...] = (None, {})
        for chunks in ways:
            try:
                dl.open_run(target, chunks=chunks).compute()
            except dl.DaqlabError:
                pass
            except Exception as exc:  # collected and reported below
                others.append(f"trial {trial} chunks={chunks}: {type(exc).__name__}: {exc}")
    assert not others, "\n".join(others[:10])


# --------------------------------------------------------------------------- time spans, dates


def test_a_long_run_with_nanosecond_times_is_refused_not_rounded(tmp_path: Path) -> None:
    # two 3 Hz runs half a year apart (open_runs makes such runs): float64 counts cannot hold
    # 1/3 s steps exactly over 182 days; the save says so instead of rounding to microseconds
    jan = dl.make_run(np.zeros((1, 4)), ["a"], sample_rate=3.0, start="2024-01-01")
    jul = dl.make_run(np.ones((1, 4)), ["a"], sample_rate=3.0, start="2024-07-01")
    both = dl.open_runs([dl.save(jan, tmp_path / "jan.nc"), dl.save(jul, tmp_path / "jul.nc")])
    with pytest.raises(dl.FormatError, match=r"cannot write both\.nc as NetCDF: its times span 182 days "
                       r"and sample 1 \(2024-01-01T00:00:00\.333333333\) is not a whole microsecond .*"
                       r"save it as CSV .*round its times to microseconds"):
        dl.save(both, tmp_path / "both.nc")
    assert not (tmp_path / "both.nc").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jan.nc", "jul.nc"]
    # rounded as the message says, or saved as CSV, it is kept exactly
    rounded = both.assign_coords(time=both.time.dt.round("us")).load()
    xr.testing.assert_identical(dl.open_run(dl.save(rounded, tmp_path / "both.nc")), rounded)
    xr.testing.assert_identical(dl.open_run(dl.save(both, tmp_path / "both.csv")), both.load())


@pytest.mark.parametrize("times", [
    ["2024-01-01T00:00:00.000001", "2024-07-01T00:00:00.123456"],  # > 104 days, whole microseconds
    ["1900-01-01", "1950-06-01T12:00:00.000001", "2100-01-01"],  # 200 years
    ["1700-01-01", "1984-12-31T23:59:59.999999"],  # 285 years
], ids=["half-year", "two-centuries", "285-years"])
def test_long_spans_of_whole_microseconds_round_trip_exactly(tmp_path: Path, times: list[str]) -> None:
    run = dl.make_run(np.arange(len(times), dtype=float)[None], ["a"], sample_rate=1.0, times=times)
    back = dl.open_run(dl.save(run, tmp_path / "long.nc"))
    xr.testing.assert_identical(back, run)
    xr.testing.assert_identical(dl.open_run(tmp_path / "long.nc", chunks={}).load(), run)


_NS_FIRST, _NS_LAST = np.iinfo(np.int64).min + 1, np.iinfo(np.int64).max  # NaT is the minimum


@pytest.mark.parametrize("ns", [
    [_NS_FIRST, _NS_FIRST + 1, _NS_FIRST + 400_000_000],  # the middle rounds down below the first
    [_NS_LAST - 400_000_000, _NS_LAST - 1, _NS_LAST],  # the last few ns of datetime64[ns]
    [_NS_FIRST + 192, _NS_FIRST + 192 + 2**47 * 1000],  # long, whole us, the second before is NaT
    [_NS_LAST - 807 - 2**47 * 1000, _NS_LAST - 807],
], ids=["first-ns", "last-ns", "long-from-first", "long-to-last"])
def test_times_at_the_ends_of_datetime64_ns_round_trip(tmp_path: Path, ns: list[int]) -> None:
    t = np.array(ns, np.int64).view("datetime64[ns]")
    run = dl.make_run(np.zeros((1, t.size)), ["a"], sample_rate=1.0, times=t)
    path = dl.save(run, tmp_path / "edge.nc")
    xr.testing.assert_identical(dl.open_run(path), run)
    xr.testing.assert_identical(dl.open_run(path, chunks={}).load(), run)


def test_a_long_run_of_whole_microseconds_has_a_reference_cftime_reads_exactly(tmp_path: Path) -> None:
    # cftime (netCDF4-python, R) reads a reference to the microsecond only: the reference is the
    # whole second before the first sample, not the first sample with nine decimals
    t = np.array(["2020-01-01T00:00:00.123456", "2022-06-01T00:00:00.000001"], "datetime64[ns]")
    run = dl.make_run([[1.0, 2.0]], ["a"], sample_rate=1.0, times=t)
    path = dl.save(run, tmp_path / "long.nc")
    with xr.open_dataset(path, decode_times=False) as ds:
        assert ds["time"].attrs["units"] == "microseconds since 2020-01-01T00:00:00.000000"
        assert ds["time"].values[0] == 123456.0
    with xr.open_dataset(path) as ds:
        # xarray multiplies float counts by 1000, which is not exact beyond 2**46 us (814 days):
        # it reads this sample to within 8 ns (documented in the README); daqlab reads it exactly
        error = np.abs((ds["time"].values - t).astype(np.int64))
        assert error[0] == 0 and 0 < error[1] <= 16, error  # noqa: PT018
    xr.testing.assert_identical(dl.open_run(path), run)


def test_a_span_beyond_285_years_is_refused(tmp_path: Path) -> None:
    # the whole of datetime64[ns]: no float64 count of microseconds holds it exactly
    run = dl.make_run([[1.0, 2.0]], ["a"], sample_rate=1.0, times=["1677-09-22", "2262-04-10"])
    with pytest.raises(dl.FormatError, match=r"cannot write all\.nc as NetCDF: its times span 585 "
                       r"years; .* exact to the microsecond for spans up to 285 years\. Split the run"):
        dl.save(run, tmp_path / "all.nc")
    assert list(tmp_path.iterdir()) == []
    xr.testing.assert_identical(dl.open_run(dl.save(run, tmp_path / "all.csv")), run)


@pytest.mark.parametrize("date", ["1700-01-01T00:00:00.000001", "2200-01-01", "2262-01-01T08:30:15.5"])
def test_calibration_dates_far_from_1970_round_trip(tmp_path: Path, date: str) -> None:
    ch = dl.Channel("t", "V", calibration=dl.Calibration(2.0, 0.0, cast(Any, date)))
    run = dl.make_run([[1.0, 2.0]], [ch], sample_rate=1.0, start="2024-01-01")
    xr.testing.assert_identical(dl.open_run(dl.save(run, tmp_path / "cal.nc")), run)


# --------------------------------------------------------------------------- full disk, replaced files


@pytest.mark.timeout(120)
def test_metadata_bigger_than_the_free_space_is_refused_before_writing(tmp_path: Path) -> None:
    # the samples are tiny, the metadata is not: HDF5 crashed the process (SIGSEGV) when it ran
    # into the full disk writing the attributes, so the save runs in a child process here
    import subprocess
    import sys

    from tests.io.test_crash import small_disk

    with small_disk(tmp_path / "small", "2m") as disk:
        (disk / "filler").write_bytes(bytes(max(0, _free(disk) - 1_300_000)))  # ~1.3 MB left
        code = (
            "import sys, numpy as np, daqlab as dl\n"
            "run = dl.make_run(np.zeros((1, 10)), ['a'], sample_rate=1.0, start='2024-01-01',\n"
            "                  metadata={'notes': 'x' * 1_500_000})\n"
            "try:\n"
            f"    dl.save(run, {str(disk / 'out.nc')!r})\n"
            "except dl.StorageError as exc:\n"
            "    print('StorageError', exc.errno, exc)\n"
        )
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=100,
                              check=False)
        assert done.returncode == 0, done.stderr
        refused = f"StorageError {errno.ENOSPC} [Errno {errno.ENOSPC}] could not write "
        assert done.stdout.startswith(refused), done.stdout
        assert "No space left on device" in done.stdout
        assert sorted(p.name for p in disk.iterdir()) == ["filler"]


def _free(folder: Path) -> int:
    import shutil

    return shutil.disk_usage(folder).free


def test_a_lazy_run_refuses_to_read_a_file_replaced_after_it_was_opened(tmp_path: Path) -> None:
    ones = dl.make_run(np.ones((1, 10)), ["a"], sample_rate=1.0, start="2024-01-01")
    path = dl.save(ones, tmp_path / "x.nc")
    lazy = dl.open_run(path, chunks={})
    dl.save(ones.assign(value=ones.value * 0), path, overwrite=True)
    with pytest.raises(dl.FormatError, match=r"x\.nc was replaced or changed after this run was opened "
                       r"lazily; its samples \('(value|quality)'\) are no longer the ones opened\. "
                       r"Open it again\."):
        lazy.load()
    np.testing.assert_array_equal(dl.open_run(path, chunks={}).value.values, np.zeros((1, 10)))


def test_attributes_with_text_that_is_not_utf8_round_trip(tmp_path: Path) -> None:
    # h5py reads bytes that are not UTF-8 (a Latin-1 name in a seed file) as lone surrogates
    run = dl.make_run([[1.0, 2.0]], ["a"], sample_rate=1.0, start="2024-01-01", name="M\udcfcnchen",
                      description="ok", metadata={"site": "M\udcfcnchen"})
    back = dl.open_run(dl.save(run, tmp_path / "latin.nc"))
    xr.testing.assert_identical(back, run)
    assert back.attrs["name"] == "M\udcfcnchen"
    with h5py.File(tmp_path / "latin.nc") as f:  # stored as plain (escaped) NC_CHAR text
        assert f.attrs["name"] == b'"M\\udcfcnchen"'


@pytest.mark.parametrize("labels", [np.array(["ok", "b"]), np.array([["x", "yy"], ["z", ""]]),
                                    np.array([], dtype="<U3"), np.array("one"), np.array(["M\udcfcnchen"])],
                         ids=["1d", "2d", "empty", "0d", "not-utf8"])
def test_text_array_attributes_round_trip(tmp_path: Path, labels: Any) -> None:
    run = dl.make_run([[1.0, 2.0]], ["a"], sample_rate=1.0, start="2024-01-01")
    run.attrs["labels"] = labels
    back = dl.open_run(dl.save(run, tmp_path / "labels.nc"))
    xr.testing.assert_identical(back, run)
    assert back.attrs["labels"].dtype == labels.dtype
    np.testing.assert_array_equal(back.attrs["labels"], labels)


@pytest.mark.parametrize("fmt", ["netcdf", "csv", "csv-wide", "seed-hdf5"])
def test_a_unit_that_is_not_text_is_refused_the_same_way_by_every_format(tmp_path: Path, fmt: str) -> None:
    run = dl.make_run([[1.0]], ["a"], sample_rate=1.0, start="2024-01-01")
    run = run.assign_coords(unit=("channel", np.array(["\udcb0C"])))
    with pytest.raises(dl.SchemaError, match=r"coordinate 'unit' holds \['\\udcb0C'\], text with lone "
                       r"surrogates \(decoded from bytes that were not UTF-8\)"):
        dl.save(run, tmp_path / "u.out", fmt)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("chunks", [None, {}], ids=["eager", "lazy"])
def test_files_with_time_in_nanoseconds_since_still_open_exactly(tmp_path: Path, chunks: Any) -> None:
    # daqlab wrote "nanoseconds since <first sample>" before UDUNITS-2 (and so the CF checker)
    # was found to read it as "nan..."; such files open as they did, to the nanosecond
    t = np.array(["2026-01-01T00:00:00.000000001", "2026-03-01T12:34:56.789012345",
                  "2026-04-14T23:59:59.999999999"], dtype="datetime64[ns]")
    run = dl.make_run([[1.0, 2.0, 3.0]], ["a"], sample_rate=1.0, times=t)
    path = dl.save(run.assign_coords(time=run.time.dt.round("us")), tmp_path / "old.nc")
    with h5py.File(path, "r+") as f:  # the old form, over 104 days: as written before
        f["time"][:] = (t - t[0]).astype(np.int64).astype(np.float64)
        f["time"].attrs["units"] = "nanoseconds since 2026-01-01T00:00:00.000000001"
    with h5py.File(path, "r") as f:
        assert f["time"].attrs["units"] == "nanoseconds since 2026-01-01T00:00:00.000000001"
    back = dl.open_run(path, chunks=chunks)
    np.testing.assert_array_equal(back["time"].values, t)
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        np.testing.assert_array_equal(ds["time"].values, t)
