"""The ASAM MDF4 reader (daqlab.io._mdf) on files written by asammdf in the tests: values, raw and
calibration, units, ranges, exact times, several rates, odd names, conversions, events; lazy
reading; unfinalised and truncated files (swept in a subprocess: asammdf is partly C); damaged
files; a big file streamed through a Pipeline with low peak memory."""

from __future__ import annotations

import itertools
import json
import pickle
import struct
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import asammdf
import numpy as np
import pytest
import scipy.signal
import xarray as xr

import daqlab as dl
from daqlab.io._foreign import content_id
from daqlab.io._mdf import open_mdf, scan, seconds_to_ns
from daqlab.processing import LowPass
from daqlab.tree import events_nodes, run_nodes
from tests.io.make_mdf import START_NS, blocks_of, make_mdf_file, relocate

ROOT = Path(__file__).resolve().parents[2]
NODES = ["fast", "slow", "irregular"]


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    path = tmp_path_factory.mktemp("mdf") / "car.mf4"
    return path, make_mdf_file(path, invalid_sample=True)


@pytest.fixture(scope="module")
def tree(written: tuple[Path, dict[str, Any]]) -> xr.DataTree:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a complete file opens without a word
        return dl.open_tree(written[0])


def _node(tree: xr.DataTree, key: str) -> xr.Dataset:
    return run_nodes(tree)[f"/{key}"]


# --------------------------------------------------------------------------- what the file holds


def test_each_channel_group_is_a_node_with_the_values_units_calibration_and_times_written(
        written: tuple[Path, dict[str, Any]], tree: xr.DataTree) -> None:
    path, expected = written
    assert sorted(run_nodes(tree)) == sorted(f"/{k}" for k in NODES)
    assert (tree.attrs["id"], tree.attrs["name"]) == (content_id(path), "car")
    meta = tree.attrs["metadata"]
    assert (meta["format"], meta["file"], meta["version"], meta["author"]) == ("mdf4", "car.mf4", "4.10",
                                                                               "daqlab tests")
    assert meta["start_time"] == "2024-01-02T03:04:05.123456Z"
    assert "incomplete" not in meta
    for key, exp in expected["nodes"].items():
        run = _node(tree, key)
        dl.validate(run)
        assert (run.attrs["name"], run.attrs["calibrated"]) == (exp["name"], False)
        assert run["channel"].values.tolist() == exp["channels"]
        assert run["unit"].values.tolist() == exp["units"]
        np.testing.assert_array_equal(run["cal_slope"].values, exp["slopes"])
        np.testing.assert_array_equal(run["cal_offset"].values, exp["offsets"])
        np.testing.assert_array_equal(run["value"].values, exp["values"])  # raw, NaN where written
        np.testing.assert_array_equal(run["time"].values, exp["times"])  # to the nanosecond
        np.testing.assert_array_equal(run["quality"].values == dl.Quality.BAD, exp["bad"])
        assert run.attrs["metadata"]["records"] == exp["values"].shape[1]
    # the same tree through the reader's own function
    direct = open_mdf(path, None)
    for key in NODES:
        xr.testing.assert_identical(direct[key].to_dataset(), _node(tree, key))


def test_values_and_times_are_asammdfs_own_read_raw_and_its_master_to_the_nanosecond(
        written: tuple[Path, dict[str, Any]], tree: xr.DataTree) -> None:
    path, _ = written
    mdf = asammdf.MDF(path)
    try:
        assert mdf.header.abs_time == START_NS
        for gi, key in enumerate(NODES):
            run = _node(tree, key)
            master = mdf.get_master(gi)
            ns = run["time"].values.view(np.int64)
            np.testing.assert_array_equal(ns, START_NS + seconds_to_ns(master))
            assert np.abs((ns - START_NS) - master * 1e9).max() <= 0.5 + 1e-6 * master.max()
            channels: list[Any] = mdf.groups[gi].channels
            indexes = [i for i, ch in enumerate(channels) if ch.channel_type != 2]
            for row, index in enumerate(indexes):
                sig = mdf.get(group=gi, index=index, raw=True, ignore_invalidation_bits=True)
                name = str(run["channel"].values[row])
                if name == "rat":  # applied: the library's physical values
                    sig = mdf.get(group=gi, index=index)
                np.testing.assert_array_equal(run["value"].values[row], sig.samples.astype(np.float64))
    finally:
        mdf.close()


def test_several_rates_stay_apart_and_irregular_times_are_kept(written: tuple[Path, dict[str, Any]],
                                                                tree: xr.DataTree) -> None:
    _, expected = written
    fast, slow, irr = (_node(tree, k) for k in NODES)
    assert (fast.attrs["sample_rate"], slow.attrs["sample_rate"]) == (1000.0, 10.0)
    assert (fast.sizes["time"], slow.sizes["time"], irr.sizes["time"]) == (2000, 20, 50)
    # a regular group's times are what daqlab stamps itself: start + k / rate
    paced = dl.make_run(np.zeros((1, 2000)), ["x"], sample_rate=1000.0, start=expected["start"])
    np.testing.assert_array_equal(fast["time"].values, paced["time"].values)
    steps = np.diff(irr["time"].values.view(np.int64))
    assert irr.attrs["sample_rate"] == pytest.approx(1e9 / float(np.median(steps)), rel=1e-12)
    np.testing.assert_array_equal(irr["time"].values, expected["nodes"]["irregular"]["times"])


def test_nan_and_invalid_samples_are_kept_and_flagged_bad(tree: xr.DataTree) -> None:
    fast, irr = _node(tree, "fast"), _node(tree, "irregular")
    v = fast.sel(channel="Spannung_U")
    assert np.isnan(v["value"].values[5])
    assert v["quality"].values[5] == dl.Quality.BAD
    assert (v["quality"].values[np.arange(2000) != 5] == dl.Quality.GOOD).all()
    # asammdf's get() drops an invalid sample unless told otherwise: daqlab keeps it, flagged
    p = irr.sel(channel="pressure")
    assert p["quality"].values.tolist().count(dl.Quality.BAD) == 1
    assert p["quality"].values[7] == dl.Quality.BAD
    assert np.isfinite(p["value"].values).all()


def test_a_limit_becomes_the_range_and_samples_outside_are_suspect(tree: xr.DataTree) -> None:
    acc = _node(tree, "fast").sel(channel="acc x")
    assert (float(acc["range_min"]), float(acc["range_max"])) == (-300.0, 5000.0)
    physical = 2.0 * acc["value"].values + 1.0
    outside = (physical < -300.0) | (physical > 5000.0)
    assert outside.sum() == 50  # raw -200 .. -151
    flags = np.where(outside, dl.Quality.SUSPECT, dl.Quality.GOOD)
    np.testing.assert_array_equal(acc["quality"].values, flags)
    calibrated = dl.calibrate(_node(tree, "fast"))["value"].sel(channel="acc x")
    np.testing.assert_array_equal(calibrated.values, physical)


def test_conversions_text_tables_comments_and_renamed_channels_are_in_the_metadata(
        written: tuple[Path, dict[str, Any]], tree: xr.DataTree) -> None:
    _, expected = written
    fast = _node(tree, "fast")
    meta = fast.attrs["metadata"]
    exp = expected["nodes"]["fast"]
    assert meta["conversions"] == exp["conversions"] == {"rat": "applied: rational"}
    assert meta["value_to_text"] == exp["value_to_text"]
    assert meta["renamed"] == exp["renamed"] == {"Spannung_U": "Spannung/U", "dup_2": "dup"}
    assert meta["comments"] == {"acc x": "accelerometer, x axis"}
    assert (meta["acq_name"], meta["comment"], meta["group_index"]) == ("fast", "1 kHz group", 0)
    assert meta["master"] == {"name": "time", "unit": "s", "sync": "time"}
    # the value-to-text channel keeps its raw numbers (2 has no text: the default)
    np.testing.assert_array_equal(fast["value"].sel(channel="état ✓").values, np.arange(2000) // 100 % 3)
    np.testing.assert_array_equal(fast["value"].sel(channel="rat").values, np.arange(2000) - 1000 + 0.5)
    assert "conversions" not in _node(tree, "slow").attrs["metadata"]


def test_the_marker_is_an_events_node(written: tuple[Path, dict[str, Any]], tree: xr.DataTree) -> None:
    _, expected = written
    (events,) = events_nodes(tree).values()
    got = zip(events["time"].values, events["label"].values, strict=True)
    assert [(t, str(label)) for t, label in got] == expected["events"]


def test_open_run_takes_a_group_and_otherwise_names_the_groups(written: tuple[Path, dict[str, Any]],
                                                              tree: xr.DataTree) -> None:
    path, _ = written
    with pytest.raises(dl.NotFoundError, match=r"\['/fast', '/slow', '/irregular'\]"):
        dl.open_run(path)
    xr.testing.assert_identical(dl.open_run(path, group="slow"), _node(tree, "slow"))


def test_each_node_saves_to_netcdf_and_reopens_identical(written: tuple[Path, dict[str, Any]],
                                                         tmp_path: Path) -> None:
    path, _ = written
    for key in NODES:
        run = dl.open_run(path, group=key)
        back = dl.open_run(dl.save(run, tmp_path / f"{key}.nc"))
        xr.testing.assert_identical(back, run)
        assert back.attrs == run.attrs


def test_a_lowpass_pipeline_on_a_node_equals_scipy(tree: xr.DataTree) -> None:
    fast = _node(tree, "fast").drop_sel(channel="Spannung_U")  # the equality holds for finite input
    out = dl.Pipeline([LowPass(cutoff=50.0, order=4)]).apply(fast)
    sos = scipy.signal.butter(4, 50.0, btype="lowpass", fs=1000.0, output="sos")
    ref = scipy.signal.sosfiltfilt(sos, fast["value"].values, axis=1)
    np.testing.assert_allclose(out["value"].values, ref, rtol=1e-10, atol=1e-9)


# --------------------------------------------------------------------------- lazy reading


@pytest.mark.parametrize("chunks", [{}, {"time": 300}, {"channel": 1, "time": 7}, "auto"],
                         ids=["file", "time300", "ch1-time7", "auto"])
def test_chunks_give_dask_arrays_that_compute_to_the_same_run(written: tuple[Path, dict[str, Any]],
                                                               tree: xr.DataTree, chunks: Any) -> None:
    path, _ = written
    lazy = dl.open_tree(path, chunks=chunks)
    for key in NODES:
        run = lazy[key].to_dataset()
        assert run["value"].chunks is not None
        assert run["quality"].chunks is not None
        xr.testing.assert_identical(run.compute(), _node(tree, key))


def test_a_lazy_run_pickles_to_its_path_and_computes_the_same(written: tuple[Path, dict[str, Any]],
                                                             tree: xr.DataTree) -> None:
    path, _ = written
    run = dl.open_run(path, chunks={}, group="irregular")
    back = pickle.loads(pickle.dumps(run))  # as a dask.distributed worker gets it
    xr.testing.assert_identical(back.compute(), _node(tree, "irregular"))


# --------------------------------------------------------------------------- wrong input


def test_wrong_input_is_a_format_error_naming_the_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.mf4"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.mf4"
    garbage.write_bytes(b"MDF     4.10    " + np.random.default_rng(0).bytes(4000))
    folder = tmp_path / "folder.mf4"
    folder.mkdir()
    old = tmp_path / "old.mf4"  # MDF version 3, by asammdf (which names it .mdf): not MDF4
    mdf3 = asammdf.MDF(version="3.30")
    mdf3.append([asammdf.Signal(np.arange(5.0), np.arange(5.0), name="x")])
    mdf3.save(tmp_path / "old.mdf", overwrite=True).rename(old)
    mdf3.close()
    netcdf = dl.save(dl.make_run([[1.0, 2.0]], ["a"], sample_rate=1.0), tmp_path / "run.nc")
    other = tmp_path / "netcdf.mf4"
    other.write_bytes(netcdf.read_bytes())
    for p in (empty, garbage, folder, old):
        with pytest.raises(dl.FormatError, match=p.name):
            dl.open_tree(p)
    for p, why in ((empty, "fewer than the 64"), (garbage, "should start a block|header block"),
                   (folder, "folder"), (old, r"starts with b'MDF     3\.30"),
                   (other, r"starts with b'\\x89HDF")):
        with pytest.raises(dl.FormatError, match=f"{p.name}.*({why})"):
            open_mdf(p, None)


def _patch(src: Path, dst: Path, at: int, value: int) -> None:
    data = bytearray(src.read_bytes())
    struct.pack_into("<Q", data, at, value)
    dst.write_bytes(bytes(data))


def test_damaged_links_are_format_errors_never_a_hang(written: tuple[Path, dict[str, Any]],
                                                      tmp_path: Path) -> None:
    path, _ = written
    blocks = blocks_of(path)
    cn = min(a for a, (kind, _) in blocks.items() if kind == b"##CN")
    dt = min(a for a, (kind, _) in blocks.items() if kind == b"##DT")
    cases = {"loop.mf4": (cn + 24, cn),  # a channel whose 'next' is itself: asammdf would loop forever
             "stray.mf4": (cn + 24, dt + 64),  # a link into the middle of data
             "beyond.mf4": (cn + 24, path.stat().st_size + 8)}  # a link past the end
    for name, (at, value) in cases.items():
        _patch(path, tmp_path / name, at, value)
    script = ("import sys, daqlab as dl\n"
              "for p in sys.argv[1:]:\n"
              "    try:\n        dl.open_tree(p)\n        print(p, 'OPENED')\n"
              "    except dl.FormatError as e:\n        print(p, 'FormatError', e)\n")
    done = subprocess.run([sys.executable, "-c", script, *[str(tmp_path / n) for n in cases]], cwd=ROOT,
                          capture_output=True, text=True, timeout=100, check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 3, done.stdout
    assert all(" FormatError " in line for line in lines), done.stdout
    assert "loop" in lines[0]
    assert "should start a block" in lines[1]
    assert "cut short" in lines[2]


# --------------------------------------------------------------------------- unfinalised and cut files


def test_an_unfinalised_file_opens_with_every_complete_record_and_says_so(
        written: tuple[Path, dict[str, Any]], tree: xr.DataTree, tmp_path: Path) -> None:
    path, _ = written
    unfin = tmp_path / "logging.mf4"
    relocate(path, unfin, unfinalised=True)
    assert unfin.read_bytes()[:8] == b"UnFinMF "
    with pytest.warns(dl.IncompleteFileWarning, match="logging.mf4: the file is not finalised"):
        got = dl.open_tree(unfin)
    info = got.attrs["metadata"]["incomplete"]
    assert (info["unfinalised_flags"], info["bytes_unread"]) == (5, 0)
    assert "UnFinMF" in info["reason"]
    for key in NODES:
        run = _node(got, key)
        for name in ("value", "quality", "time", "channel", "unit", "cal_slope", "cal_offset"):
            np.testing.assert_array_equal(run[name].values, _node(tree, key)[name].values)
        assert run.attrs["metadata"]["incomplete"]["records_stated"] == 0  # the counters were never written
    # the file itself is never touched; asammdf finalises the same file to the same samples
    assert unfin.read_bytes()[:8] == b"UnFinMF "
    mdf = asammdf.MDF(unfin)
    try:
        assert [g.channel_group.cycles_nr for g in mdf.groups] == [2000, 20, 50]
        np.testing.assert_array_equal(mdf.get("temp").samples, _node(tree, "slow")["value"].values[0])
    finally:
        mdf.close()


def _offsets(path: Path, every_block: bool) -> list[int]:
    """~60 offsets spread over the file, and around every data block's (and the description's)
    boundaries; with ``every_block`` also just inside every block of the description."""
    size = path.stat().st_size
    blocks = blocks_of(path)
    offsets = set(range(0, size, max(1, size // 60))) | {size, size - 1, 63, 64, 65}
    data = {a: length for a, (kind, length) in blocks.items() if kind in (b"##DT", b"##DZ", b"##DL", b"##HL")}
    for a, n in data.items():
        offsets |= {a - 1, a, a + 1, a + 23, a + 24, a + 25, a + 47, a + n - 1, a + n, a + n + 1}
    if every_block:
        offsets |= {a + 1 for a in blocks} | {a + length - 1 for a, (_, length) in blocks.items()}
    return sorted(x for x in offsets if 0 <= x <= size)


def _sweep(path: Path, offsets: list[int], folder: Path) -> list[dict[str, Any]]:
    """tests.io.make_mdf.check_cuts in a subprocess: a crash or hang of asammdf's C code is a
    failure here, not the end of pytest."""
    done = subprocess.run([sys.executable, "-m", "tests.io.make_mdf", "cuts", str(path), str(folder),
                           *map(str, offsets)], cwd=ROOT, capture_output=True, text=True, timeout=110,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["offset"] for r in results] == offsets
    wrong = [r for r in results if r["outcome"].startswith("WRONG")]
    assert not wrong, wrong[:5]
    return results


def _grows(results: list[dict[str, Any]]) -> None:
    """Cut later, never fewer samples."""
    opened = [r["samples"] for r in results if "samples" in r]
    for before, after in itertools.pairwise(opened):
        assert all(after[k] >= before[k] for k in before), (before, after)


def test_a_logger_file_cut_at_many_offsets_opens_with_its_complete_records(tmp_path: Path) -> None:
    # metadata first, data last (as while recording), not finalised, data in lists of 4 kB blocks
    src, cut_me = tmp_path / "src.mf4", tmp_path / "logger.mf4"
    expected = make_mdf_file(src, fragment_size=4096, invalid_sample=True)
    relocate(src, cut_me, unfinalised=True)
    offsets = _offsets(cut_me, every_block=False)
    results = _sweep(cut_me, offsets, tmp_path)
    outcomes = {r["outcome"] for r in results}
    assert outcomes == {"error", "partial"}, outcomes  # unfinalised: 'partial' even when whole
    data_start = min(a for a, (kind, _) in blocks_of(cut_me).items() if kind in (b"##DT", b"##DL"))
    assert all(r["outcome"] == "error" for r in results if r["offset"] < data_start - 1)
    assert all(r["outcome"] == "partial" for r in results if r["offset"] >= data_start)
    _grows(results)
    last = results[-1]["samples"]
    assert last == {f"/{k}": v["values"].shape[1] for k, v in expected["nodes"].items()}
    partial_fast = {r["samples"]["/fast"] for r in results if "samples" in r}
    assert len(partial_fast) > 10  # records are kept one by one, not only whole blocks
    assert all("cut short" in r["message"] or "missing" in r["message"] or "none of" in r["message"]
               for r in results if r["outcome"] == "error")


def test_a_compressed_file_with_its_data_last_cut_at_many_offsets(tmp_path: Path) -> None:
    src, cut_me = tmp_path / "src.mf4", tmp_path / "zipped.mf4"
    make_mdf_file(src, fragment_size=4096, compression=2)
    relocate(src, cut_me)  # finalised, data last
    results = _sweep(cut_me, _offsets(cut_me, every_block=False), tmp_path)
    assert {r["outcome"] for r in results} == {"error", "partial", "whole"}
    assert results[-1]["outcome"] == "whole"
    _grows(results)


def test_asammdfs_own_file_cut_anywhere_is_a_format_error(written: tuple[Path, dict[str, Any]],
                                                         tmp_path: Path) -> None:
    # asammdf writes the data first and the description last: a cut file has no description
    path, _ = written
    results = _sweep(path, [*_offsets(path, every_block=False)[::2], path.stat().st_size], tmp_path)
    assert [r["outcome"] for r in results[:-1]] == ["error"] * (len(results) - 1)
    assert results[-1]["outcome"] == "whole"


@pytest.mark.slow
def test_every_block_boundary_cut_in_every_layout(tmp_path: Path) -> None:
    src = tmp_path / "src.mf4"
    layouts: list[tuple[dict[str, Any], bool]] = [
        ({}, False), ({"fragment_size": 4096}, True), ({"fragment_size": 2048}, False),
        ({"fragment_size": 4096, "compression": 1}, False)]
    for kwargs, unfinalised in layouts:
        make_mdf_file(src, invalid_sample=True, **kwargs)
        for layout in ("asammdf", "logger"):
            cut_me = tmp_path / f"{layout}.mf4"
            if layout == "logger":
                relocate(src, cut_me, unfinalised=unfinalised and "compression" not in kwargs)
            else:
                cut_me.write_bytes(src.read_bytes())
            _grows(_sweep(cut_me, _offsets(cut_me, every_block=True), tmp_path))


@pytest.mark.parametrize("layout", ["asammdf", "logger"])
def test_random_damage_is_a_format_error_or_a_tree_never_a_crash(written: tuple[Path, dict[str, Any]],
                                                                 tmp_path: Path, layout: str) -> None:
    # (before daqlab checked where channels lie in their records, one such byte crashed
    # asammdf's C code: a segmentation fault)
    path, _ = written
    if layout == "logger":
        path = tmp_path / "logger.mf4"
        relocate(written[0], path, unfinalised=True)
    # asammdf's files: their description (after the data); the logger's: anywhere after the id
    first_dg = min(a for a, (kind, _) in blocks_of(path).items() if kind == b"##DG")
    start = 64 if layout == "logger" else first_dg
    done = subprocess.run([sys.executable, "-m", "tests.io.make_mdf", "damage", str(path), str(tmp_path),
                           str(start), "14", "150"],
                          cwd=ROOT, capture_output=True, text=True, timeout=110, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    outcomes = json.loads(done.stdout.splitlines()[-1])
    assert set(outcomes) == {"opened", "error"}, outcomes
    assert outcomes["error"] > 20


# --------------------------------------------------------------------------- scan and times


def test_scan_counts_records_without_asammdf(written: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    path, _ = written
    layout = scan(path)
    assert (layout.version, layout.start_ns, layout.unfinalised) == ("4.10", START_NS, False)
    assert layout.patches == {}
    assert sorted(g.records for g in layout.groups.values() if g.records is not None) == [20, 50, 2000]
    cut = tmp_path / "cut.mf4"
    relocate(path, cut)
    data = cut.read_bytes()
    cut.write_bytes(data[:-1000])  # the last data block (the irregular group's) loses its tail
    cut_layout = scan(cut)
    assert cut_layout.incomplete["reason"].startswith("the file is cut short")
    assert sorted(g.records for g in cut_layout.groups.values() if g.records is not None)[0] < 50


def test_seconds_become_the_nearest_nanosecond_at_any_magnitude() -> None:
    t = np.array([0.0, 1e-9, 0.1, 0.3, 1234.000000001, 86_400.0 * 365 + 0.5, -2.25])
    np.testing.assert_array_equal(seconds_to_ns(t), [0, 1, 100_000_000, 300_000_000, 1_234_000_000_001,
                                                     31_536_000_500_000_000, -2_250_000_000])


# --------------------------------------------------------------------------- a big file, lazily


_RSS = """
import resource, sys
from pathlib import Path
import daqlab as dl
from daqlab.processing import LowPass
src, mode = Path(sys.argv[1]), sys.argv[2]
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if mode == "pipeline":
    dl.Pipeline([LowPass(cutoff=100.0)]).run(src, src.with_suffix(".nc"), overwrite=True, progress=False)
else:
    tree = dl.open_tree(src)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024)
"""


@pytest.mark.slow
def test_a_pipeline_streams_a_big_file_with_low_peak_memory(tmp_path: Path) -> None:
    from tests.io.make_mdf import make_big_mdf_file

    src = tmp_path / "big.mf4"
    size = make_big_mdf_file(src, channels=4, samples=4_000_000)

    def peak(mode: str) -> int:
        prelude = "import asammdf, dask.array, scipy.signal, h5netcdf, daqlab.io._mdf\n"
        done = subprocess.run([sys.executable, "-c", prelude + _RSS, str(src), mode], cwd=ROOT,
                              capture_output=True, text=True, timeout=600, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        return int(done.stdout.split()[-1])

    loaded, streamed = peak("load"), peak("pipeline")
    # loading holds asammdf's arrays and the run (~3.5x the file); streaming holds the time
    # coordinate (8 bytes a sample, a few copies) and a few chunks
    assert loaded > 2 * size
    assert streamed < 0.6 * loaded, (size, loaded, streamed)
    assert streamed < 2 * size, (size, loaded, streamed)
    out = dl.open_run(src.with_suffix(".nc"), chunks={})
    head = dl.open_run(src, chunks={}).isel(time=slice(0, 100_000)).compute()
    sos = scipy.signal.butter(4, 100.0, btype="lowpass", fs=10_000.0, output="sos")
    ref = scipy.signal.sosfiltfilt(sos, dl.open_run(src, chunks={})["value"].values, axis=1)[:, 50_000:60_000]
    np.testing.assert_allclose(out["value"].values[:, 50_000:60_000], ref, rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(out["time"].values[:100_000], head["time"].values)
