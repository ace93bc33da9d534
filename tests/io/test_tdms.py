"""NI TDMS files (npTDMS): every file here is written by npTDMS (``TdmsWriter``, or its own
test-file generator for layouts its writer does not make: DAQmx raw data, interleaved data,
segments of several chunks) and compared with what was written and with npTDMS's own read."""

from __future__ import annotations

import importlib
import io
import json
import pickle
import queue
import struct
import subprocess
import sys
import textwrap
import threading
import warnings
from pathlib import Path
from typing import Any

import dask.array
import numpy as np
import pytest
import scipy.signal
import xarray as xr
from numpy.typing import NDArray

import daqlab as dl
from daqlab.io._foreign import content_id
from daqlab.io._tdms import open_tdms
from daqlab.tree import node_id, run_nodes
from tests.io.make_tdms import make_tdms_file

nptdms: Any = importlib.import_module("nptdms")
gen: Any = importlib.import_module("nptdms.test.util")
daqmx: Any = importlib.import_module("nptdms.test.test_daqmx")
scenarios: Any = importlib.import_module("nptdms.test.scenarios")

ROOT = Path(__file__).resolve().parents[2]

Found = dict[tuple[str, str], dict[str, Any]]


# --------------------------------------------------------------------------- helpers


def channels_of(tree: xr.DataTree) -> Found:
    """Every channel of the tree by (TDMS group, TDMS channel name): its values, times, quality,
    calibration, unit and node."""
    out: Found = {}
    for path, run in run_nodes(tree).items():
        meta = run.attrs["metadata"]
        for i, name in enumerate(run["channel"].values.tolist()):
            key = (meta["tdms_group"], meta["channels"][name].get("tdms_name", name))
            out[key] = {"values": run["value"].values[i], "times": run["time"].values,
                        "quality": run["quality"].values[i], "slope": float(run["cal_slope"].values[i]),
                        "offset": float(run["cal_offset"].values[i]), "unit": str(run["unit"].values[i]),
                        "node": path, "name": name}
    return out


def opened(path: Path, chunks: Any = None) -> tuple[xr.DataTree | None, list[str], str]:
    """``dl.open_tree(path)``: the tree (None on a FormatError), the IncompleteFileWarnings'
    messages, and the error's message."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            tree = dl.open_tree(path, chunks=chunks)
        except dl.FormatError as exc:
            return None, [], str(exc)
    others = [w for w in caught if not issubclass(w.category, dl.IncompleteFileWarning)]
    assert not others, [str(w.message) for w in others]
    return tree, [str(w.message) for w in caught], ""


def assert_prefix(cut: xr.DataTree, full: Found, what: str) -> int:
    """Every channel of ``cut`` holds a prefix of the same channel of the full file (values,
    times, quality, calibration); the number of samples it holds."""
    total = 0
    for key, got in channels_of(cut).items():
        assert key in full, f"{what}: channel {key} is not in the full file"
        want = full[key]
        n = got["values"].size
        assert n <= want["values"].size, f"{what}: {key} has more samples than the full file"
        np.testing.assert_array_equal(got["values"], want["values"][:n], err_msg=f"{what}: {key}")
        np.testing.assert_array_equal(got["times"], want["times"][:n], err_msg=f"{what}: {key}")
        np.testing.assert_array_equal(got["quality"], want["quality"][:n], err_msg=f"{what}: {key}")
        assert (got["slope"], got["offset"], got["unit"]) == (want["slope"], want["offset"], want["unit"])
        total += n
    return total


def sweep(data: bytes, offsets: Any, folder: Path, full: Found) -> dict[str, int]:
    """Open ``data`` cut at each offset: complete samples (a prefix, flagged incomplete with a
    warning) or a FormatError. Counts of each outcome."""
    counts = {"opened": 0, "refused": 0}
    path = folder / "cut.tdms"
    for cut in sorted(set(offsets)):
        path.write_bytes(data[:cut])
        tree, warned, error = opened(path)
        what = f"cut at {cut} of {len(data)}"
        if tree is None:
            assert path.name in error, error
            counts["refused"] += 1
            continue
        counts["opened"] += 1
        assert_prefix(tree, full, what)
        incomplete = tree.attrs["metadata"].get("incomplete")
        if incomplete is not None:
            assert warned, what
            assert incomplete["reason"] in warned[0], (what, warned)
        else:
            assert not warned, what
    return counts


def segment_starts(data: bytes) -> list[int]:
    """Byte offsets of every segment of a complete TDMS file."""
    starts, pos = [], 0
    while pos < len(data):
        starts.append(pos)
        pos += 28 + struct.unpack("<Q", data[pos + 12:pos + 20])[0]
    return starts


@pytest.fixture
def rep(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    path = tmp_path / "rig.tdms"
    return path, make_tdms_file(path)


# --------------------------------------------------------------------------- the representative file


def test_groups_become_nodes_with_raw_values_calibration_units_and_times(
        rep: tuple[Path, dict[str, Any]]) -> None:
    path, expected = rep
    tree = dl.open_tree(path)
    dl.tree.check_tree(tree)
    runs = run_nodes(tree)
    assert list(runs) == [f"/{k}" for k in expected["nodes"]]
    root_id = content_id(path)
    assert tree.attrs["id"] == root_id
    assert tree.attrs["name"] == "bench rig"
    assert tree.attrs["description"] == "representative TDMS file"
    assert tree.attrs["created_at"] == "1970-01-01T00:00:00.000000Z"  # the index group's start
    for key, want in expected["nodes"].items():
        run = runs[f"/{key}"]
        assert run["channel"].values.tolist() == want["channels"]
        np.testing.assert_array_equal(run["value"].values, want["values"])
        np.testing.assert_array_equal(run["time"].values, want["times"])
        assert run["unit"].values.tolist() == want["units"]
        assert run["cal_slope"].values.tolist() == want["slopes"]
        assert run["cal_offset"].values.tolist() == want["offsets"]
        assert np.isnan(run["range_min"].values).all()
        assert np.isnan(run["range_max"].values).all()
        assert run.attrs["sample_rate"] == want["rate"]
        assert run.attrs["name"] == want["group"]
        assert run.attrs["id"] == node_id(root_id, key)
        assert run.attrs["calibrated"] is False
        np.testing.assert_array_equal(dl.calibrate(run)["value"].values, want["physical"])
        bad = np.isnan(want["values"])
        np.testing.assert_array_equal(run["quality"].values, np.where(bad, 2, 0))
    assert runs["/fast"].attrs["created_at"] == "2024-05-01T12:00:00.250000Z"
    assert bool(runs["/fast"]["quality"].values[1, 17] == dl.Quality.BAD)


def test_properties_and_notes_are_kept_in_metadata(rep: tuple[Path, dict[str, Any]]) -> None:
    path, expected = rep
    tree = dl.open_tree(path)
    root = tree.attrs["metadata"]
    assert root["format"] == "tdms"
    assert root["file"] == "rig.tdms"
    assert root["tdms_version"] == 4712
    assert root["properties"] == {"name": "bench rig", "description": "representative TDMS file",
                                  "author": "daqlab tests", "DateTime": "2024-05-01T12:00:00.250000000Z"}
    assert "incomplete" not in root
    runs = run_nodes(tree)
    fast = runs["/fast"].attrs["metadata"]
    assert fast["tdms_group"] == "fast"
    assert fast["properties"] == {"description": "1 kHz channels", "rack": 3}
    assert runs["/fast"].attrs["description"] == "1 kHz channels"
    accel = fast["channels"]["accel x"]
    assert accel["NI_ChannelName"] == "Dev1/ai0"
    assert accel["NI_Scale[0]_Linear_Slope"] == 0.01
    assert accel["NI_Scaling_Status"] == "unscaled"
    assert accel["wf_start_time"] == "2024-05-01T12:00:00.250000000Z"
    assert accel["wf_increment"] == 0.001
    # names that are not channel names, or clash once cleaned, are renamed and said so
    assert fast["renamed_channels"] == {"volts_2": "volts/2", "volts_2_2": "volts_2"}
    assert fast["channels"]["volts_2"]["tdms_name"] == "volts/2"
    slow = runs["/slow"].attrs["metadata"]
    assert slow["conversions"] == expected["applied"]["slow"]
    assert slow["skipped_channels"] == expected["skipped"]["slow"]
    for i, key in enumerate(("mixed", "mixed_2")):
        split = runs[f"/{key}"].attrs["metadata"]["split"]
        assert (split["group"], split["part"], split["of"]) == ("mixed", i + 1, 2)
    index = runs["/index"].attrs["metadata"]
    assert index["times_are_indices"] is True
    assert "sample indices" in index["time"]
    assert "split" not in fast
    assert "conversions" not in fast
    assert "incomplete" not in fast


def test_values_equal_nptdms_raw_read_and_calibrated_values_its_scaled_read(
        rep: tuple[Path, dict[str, Any]]) -> None:
    path, _ = rep
    ours = channels_of(dl.open_tree(path))
    lib = nptdms.TdmsFile.read(path)
    checked = 0
    for group in lib.groups():
        for ch in group.channels():
            if (group.name, ch.name) not in ours:
                assert ch.name == "comment"  # the string channel is left out
                continue
            got = ours[(group.name, ch.name)]
            physical = got["values"] * got["slope"] + got["offset"]
            if ch.name != "poly":  # (the polynomial's physical values are what daqlab keeps)
                np.testing.assert_array_equal(got["values"], ch.read_data(scaled=False).astype(np.float64))
            np.testing.assert_array_equal(physical, ch[:].astype(np.float64))
            checked += 1
    assert checked == 9


def test_open_run_needs_a_group_and_opens_each_node(rep: tuple[Path, dict[str, Any]]) -> None:
    path, expected = rep
    with pytest.raises(dl.DaqlabError, match=r"holds 5 runs .*'/fast', '/slow', '/mixed', '/mixed_2'"):
        dl.open_run(path)
    for key, want in expected["nodes"].items():
        run = dl.open_run(path, group=key)
        np.testing.assert_array_equal(run["value"].values, want["values"])


def test_each_node_saves_to_netcdf_and_opens_identical(rep: tuple[Path, dict[str, Any]],
                                                       tmp_path: Path) -> None:
    path, expected = rep
    for key in expected["nodes"]:
        run = dl.open_run(path, group=key)
        nc = dl.save(run, tmp_path / f"{key}.nc")
        back = dl.open_run(nc)
        names = ["value", "quality"]
        xr.testing.assert_identical(back[names].drop_attrs(deep=False), run[names].drop_attrs(deep=False))
        assert back.attrs["metadata"] == run.attrs["metadata"]
        assert back.attrs["sample_rate"] == run.attrs["sample_rate"]


def test_a_pipeline_on_a_node_equals_scipy(rep: tuple[Path, dict[str, Any]]) -> None:
    path, expected = rep
    want = expected["nodes"]["fast"]
    sos = scipy.signal.butter(4, 100.0, btype="lowpass", fs=1000.0, output="sos")
    for chunks in (None, {"time": 50}):
        run = dl.open_run(path, group="fast", chunks=chunks)
        out = dl.Pipeline([dl.processing.LowPass(cutoff=100.0)]).apply(run)
        for row in (0, 2):  # the channels without NaN: scipy's reference is for finite input
            np.testing.assert_allclose(out["value"].values[row],
                                       scipy.signal.sosfiltfilt(sos, want["values"][row]),
                                       rtol=1e-10, atol=1e-12)


def test_lazily_with_chunks_the_values_are_dask_and_the_same(rep: tuple[Path, dict[str, Any]]) -> None:
    path, expected = rep
    eager = channels_of(dl.open_tree(path))
    for chunks in ({}, {"time": 7}, {"channel": 1, "time": 16}, "auto"):
        tree = dl.open_tree(path, chunks=chunks)
        for run in run_nodes(tree).values():
            assert isinstance(run["value"].data, dask.array.Array)
            assert isinstance(run["quality"].data, dask.array.Array)
        lazy = channels_of(tree)
        assert lazy.keys() == eager.keys()
        for key, got in lazy.items():
            np.testing.assert_array_equal(got["values"], eager[key]["values"])
            np.testing.assert_array_equal(got["quality"], eager[key]["quality"])
        again = pickle.loads(pickle.dumps(tree))  # as dask.distributed sends it to workers
        for key, got in channels_of(again).items():
            np.testing.assert_array_equal(got["values"], eager[key]["values"])
    run = dl.open_run(path, group="fast", chunks={"time": 16})
    assert run["value"].chunks == ((1, 1, 1, 1), (16,) * 7 + (8,))
    # the file's own chunks: a channel per chunk where each channel's values lie together
    assert dl.open_run(path, group="fast", chunks={})["value"].chunks == ((1, 1, 1, 1), (120,))
    # any slice of the lazy array: the bytes of that slice only
    want = expected["nodes"]["fast"]["values"]
    np.testing.assert_array_equal(run["value"][:, 33:91].values, want[:, 33:91])
    np.testing.assert_array_equal(run["value"][1:3, ::7].values, want[1:3, ::7])


def test_open_tdms_directly_gives_the_same_tree(rep: tuple[Path, dict[str, Any]]) -> None:
    path, _ = rep
    xr.testing.assert_identical(open_tdms(path, None), dl.open_tree(path))


# --------------------------------------------------------------------------- scalings, time bases


def write(path: Path, *segments: list[Any]) -> Path:
    with nptdms.TdmsWriter(str(path)) as writer:
        for objects in segments:
            writer.write_segment(objects)
    return path


def test_linear_scalings_anywhere_become_calibrations_and_others_are_applied(tmp_path: Path) -> None:
    raw = np.array([-3, 0, 7, 1000, -32768, 32767], dtype=np.int16)
    chained = {"NI_Number_Of_Scales": 2, "NI_Scale[0]_Scale_Type": "Linear",
               "NI_Scale[0]_Linear_Slope": 3.0, "NI_Scale[0]_Linear_Y_Intercept": 0.25,
               "NI_Scale[1]_Scale_Type": "Linear", "NI_Scale[1]_Linear_Slope": -0.5,
               "NI_Scale[1]_Linear_Y_Intercept": 10.0, "NI_Scale[1]_Linear_Input_Source": 0}
    on_group = {"NI_Number_Of_Scales": 1, "NI_Scale[0]_Scale_Type": "Linear",
                "NI_Scale[0]_Linear_Slope": 1e-3, "NI_Scale[0]_Linear_Y_Intercept": -2.0}
    flat = {"NI_Number_Of_Scales": 1, "NI_Scale[0]_Scale_Type": "Linear",
            "NI_Scale[0]_Linear_Slope": 0.0, "NI_Scale[0]_Linear_Y_Intercept": 5.0}
    scaled = {**on_group, "NI_Scaling_Status": "scaled"}  # the values are physical already
    path = write(tmp_path / "scales.tdms", [
        nptdms.GroupObject("g", on_group),
        nptdms.ChannelObject("g", "from group", raw),
        nptdms.ChannelObject("g", "chained", raw, chained),
        nptdms.ChannelObject("g", "flat", raw, flat),
        nptdms.ChannelObject("g", "scaled", raw, scaled),
    ])
    # npTDMS (and so daqlab) falls back to the group's scaling for a channel whose own
    # properties say "scaled": only where the group has none are its values physical
    assert nptdms.TdmsFile.read(path)["g"]["scaled"][:].tolist() == (raw * 1e-3 - 2.0).tolist()
    run = dl.open_run(path)
    assert run["cal_slope"].values.tolist() == [1e-3, -1.5, 1.0, 1e-3]
    assert run["cal_offset"].values.tolist() == [-2.0, 0.25 * -0.5 + 10.0, 0.0, -2.0]
    assert run.attrs["metadata"]["conversions"] == {
        "flat": "applied: linear with slope 0.0 and offset 5.0"}
    lib = nptdms.TdmsFile.read(path)["g"]
    physical = dl.calibrate(run)["value"].values
    np.testing.assert_array_equal(physical[0], lib["from group"][:])
    np.testing.assert_allclose(physical[1], lib["chained"][:], rtol=1e-15)
    np.testing.assert_array_equal(physical[2], np.full(6, 5.0))
    np.testing.assert_array_equal(physical[3], lib["scaled"][:])
    np.testing.assert_array_equal(run["value"].values[[0, 1, 3]], np.tile(raw, (3, 1)))
    alone = write(tmp_path / "alone.tdms", [nptdms.ChannelObject("h", "scaled", raw, scaled)])
    run = dl.open_run(alone)
    assert (run["cal_slope"].values.tolist(), run["cal_offset"].values.tolist()) == ([1.0], [0.0])
    np.testing.assert_array_equal(run["value"].values[0], nptdms.TdmsFile.read(alone)["h"]["scaled"][:])


def test_times_from_waveform_properties_or_sample_indices(tmp_path: Path) -> None:
    start = np.datetime64("2023-01-02T03:04:05.123456", "us")
    path = write(tmp_path / "times.tdms", [
        nptdms.ChannelObject("wave", "x", np.arange(5.0), {"wf_start_time": start, "wf_increment": 0.25,
                                                           "wf_start_offset": 0.5}),
        nptdms.ChannelObject("started", "y", np.arange(3.0), {"wf_start_time": start}),
        nptdms.ChannelObject("bare", "z", np.arange(2.0), {"wf_increment": -1.0}),
        nptdms.ChannelObject("bare", "w", np.arange(2.0) + 5, {"wf_increment": "soon"}),
    ])
    runs = run_nodes(dl.open_tree(path))
    assert list(runs) == ["/bare", "/started", "/wave"]  # no usable time base: still one node
    assert runs["/bare"]["channel"].values.tolist() == ["z", "w"]
    t0 = start.astype("datetime64[ns]")
    np.testing.assert_array_equal(runs["/wave"]["time"].values,
                                  t0 + np.timedelta64(500, "ms") + np.arange(5) * np.timedelta64(250, "ms"))
    assert runs["/wave"].attrs["sample_rate"] == 4.0
    assert "time" not in runs["/wave"].attrs["metadata"]
    np.testing.assert_array_equal(runs["/started"]["time"].values, t0 + np.arange(3) * np.timedelta64(1, "s"))
    assert runs["/started"].attrs["metadata"]["times_are_indices"] is True
    np.testing.assert_array_equal(runs["/bare"]["time"].values, np.arange(2) * np.timedelta64(1, "s")
                                  + np.datetime64(0, "ns"))
    assert "wf_increment -1.0 is not a positive number" in runs["/bare"].attrs["metadata"]["time"]


def test_a_group_of_several_lengths_or_starts_is_split(tmp_path: Path) -> None:
    t1 = np.datetime64("2024-01-01T00:00:00", "us")
    t2 = np.datetime64("2024-01-01T00:00:01", "us")
    path = write(tmp_path / "split.tdms", [
        nptdms.ChannelObject("g", "a", np.arange(4.0), {"wf_start_time": t1, "wf_increment": 0.5}),
        nptdms.ChannelObject("g", "b", np.arange(3.0), {"wf_start_time": t1, "wf_increment": 0.5}),
        nptdms.ChannelObject("g", "c", np.arange(4.0), {"wf_start_time": t2, "wf_increment": 0.5}),
        nptdms.ChannelObject("g", "d", np.arange(4.0) * 2, {"wf_start_time": t1, "wf_increment": 0.5}),
    ])
    runs = run_nodes(dl.open_tree(path))
    assert {k: r["channel"].values.tolist() for k, r in runs.items()} == {
        "/g": ["a", "d"], "/g_2": ["b"], "/g_3": ["c"]}
    assert [r.attrs["metadata"]["split"]["part"] for r in runs.values()] == [1, 2, 3]
    assert str(runs["/g_3"]["time"].values[0]) == "2024-01-01T00:00:01.000000000"


def daqmx_file(path: Path, *, rows: int = 6, segments: int = 2) -> dict[str, NDArray[Any]]:
    """A DAQmx raw data file (npTDMS's generator): two int16 analog channels with a linear scale
    and a digital line, interleaved in rows of 5 bytes; its raw values by channel."""
    def prop_str(text: str) -> tuple[int, str]:
        return 0x20, gen.hexlify_value("<I", len(text.encode())) + gen.string_hexlify(text)

    def props(slope: float, offset: float, unit: str) -> dict[str, tuple[int, str]]:
        return {"NI_Number_Of_Scales": (7, gen.hexlify_value("<I", 2)),
                "NI_Scale[1]_Scale_Type": prop_str("Linear"),
                "NI_Scale[1]_Linear_Slope": (10, gen.hexlify_value("<d", slope)),
                "NI_Scale[1]_Linear_Y_Intercept": (10, gen.hexlify_value("<d", offset)),
                "NI_Scale[1]_Linear_Input_Source": (7, gen.hexlify_value("<I", 0)),
                "NI_Scaling_Status": prop_str("unscaled"), "unit_string": prop_str(unit),
                "wf_increment": (10, gen.hexlify_value("<d", 0.002))}

    rng = np.random.default_rng(5)
    a = rng.integers(-30000, 30000, rows * segments).astype(np.int16)
    b = rng.integers(-30000, 30000, rows * segments).astype(np.int16)
    d = rng.integers(0, 256, rows * segments).astype(np.uint8)
    f = gen.GeneratedFile()
    for s in range(segments):
        part = slice(s * rows, (s + 1) * rows)
        data = b"".join(struct.pack("<hhB", x, y, z) for x, y, z in
                        zip(a[part].tolist(), b[part].tolist(), d[part].tolist(), strict=True))
        if s == 0:
            meta = gen.segment_objects_metadata(
                gen.root_metadata(), gen.group_metadata(),
                daqmx.daqmx_channel_metadata("ai0", rows, [5], [daqmx.daqmx_scaler_metadata(0, 3, 0)],
                                             props(3.0517578125e-4, 0.01, "V")),
                daqmx.daqmx_channel_metadata("ai1", rows, [5], [daqmx.daqmx_scaler_metadata(0, 3, 2)],
                                             props(-2e-3, 1.5, "mA")),
                daqmx.daqmx_channel_metadata("line3", rows, [5], [daqmx.digital_scaler_metadata(0, 0, 35)],
                                             {"wf_increment": (10, gen.hexlify_value("<d", 0.002))},
                                             digital_line_scaler=True))
            f.add_segment(daqmx.segment_toc(), meta, data, binary_data=True)
        else:  # no metadata: the previous segment's objects and layout
            f.add_segment(("kTocRawData", "kTocDAQmxRawData"), "", data, binary_data=True)
    path.write_bytes(f._get_contents())
    return {"ai0": a, "ai1": b, "line3": (d >> 3) & 1}


def test_daqmx_raw_data_keeps_raw_values_with_the_linear_scale(tmp_path: Path) -> None:
    path = tmp_path / "daqmx.tdms"
    raw = daqmx_file(path)
    # interleaved in the file: each chunk holds every channel
    assert dl.open_run(path, chunks={})["value"].chunks == ((3,), (12,))
    for chunks in (None, {"time": 5}):
        run = dl.open_run(path, chunks=chunks)
        assert run["channel"].values.tolist() == ["ai0", "ai1", "line3"]
        np.testing.assert_array_equal(run["value"].values, np.vstack(list(raw.values())).astype(np.float64))
        assert run["cal_slope"].values.tolist() == [3.0517578125e-4, -2e-3, 1.0]
        assert run["cal_offset"].values.tolist() == [0.01, 1.5, 0.0]
        assert run["unit"].values.tolist() == ["V", "mA", ""]
        assert run.attrs["sample_rate"] == 500.0
        assert run.attrs["metadata"]["conversions"] == {
            "line3": "raw: DAQmx raw data without scaling properties"}
        lib = nptdms.TdmsFile.read(path)["Group"]
        physical = dl.calibrate(run)["value"].values
        for i, name in enumerate(("ai0", "ai1")):
            np.testing.assert_array_equal(run["value"].values[i], lib[name].raw_scaler_data[0])
            np.testing.assert_array_equal(physical[i], lib[name][:])
        np.testing.assert_array_equal(run["value"].values[2], lib["line3"].raw_scaler_data[0])


def test_daqmx_buffers_of_several_cards_are_read_as_npTDMS_reads_them(tmp_path: Path) -> None:
    """Two raw data buffers (two cards) per chunk, two segments, cut at every byte."""
    f = gen.GeneratedFile()
    scalers = [daqmx.daqmx_scaler_metadata(0, 3, off, buf) for buf in (0, 1) for off in (0, 2)]
    meta = gen.segment_objects_metadata(gen.root_metadata(), gen.group_metadata(), *[
        daqmx.daqmx_channel_metadata(f"ch{i}", 3, [4, 4], [sc]) for i, sc in enumerate(scalers)])
    rng = np.random.default_rng(9)
    raw = rng.integers(-3000, 3000, size=(2, 4, 3)).astype(np.int16)  # segment, channel, row
    for seg in range(2):
        rows = b"".join(struct.pack("<hh", *raw[seg, [c, c + 1], r].tolist())
                        for c in (0, 2) for r in range(3))
        f.add_segment(daqmx.segment_toc(), meta, rows, binary_data=True)
    path = tmp_path / "cards.tdms"
    path.write_bytes(f._get_contents())
    run = dl.open_run(path)
    np.testing.assert_array_equal(run["value"].values, np.hstack([raw[0], raw[1]]).astype(np.float64))
    lib = nptdms.TdmsFile.read(path)["Group"]
    for i in range(4):
        np.testing.assert_array_equal(run["value"].values[i], lib[f"ch{i}"].raw_data)
    data = path.read_bytes()
    counts = sweep(data, range(len(data)), tmp_path, full_channels(path))
    assert counts["opened"] > 0


def test_big_endian_segments(tmp_path: Path) -> None:
    """A segment written big-endian (kTocBigEndian), two channels, contiguous then interleaved."""
    def text(s: str) -> bytes:
        return struct.pack(">I", len(s)) + s.encode()

    def channel(name: str, tds_type: int, n: int) -> bytes:
        return text(f"/'g'/'{name}'") + struct.pack(">IIIQI", 20, tds_type, 1, n, 0)

    a = np.array([1.5, -2.25, 3.0], ">f8")
    b = np.array([7, -8, 9], ">i4")
    meta = struct.pack(">I", 2) + channel("a", 10, 3) + channel("b", 3, 3)
    segments = [(0b1001110, meta, a.tobytes() + b.tobytes()),  # metadata, raw, new list, big-endian
                (0b1101110, meta, b"".join(a[i:i + 1].tobytes() + b[i:i + 1].tobytes() for i in range(3)))]
    out = b""
    for toc, m, d in segments:
        out += b"TDSm" + struct.pack("<i", toc) + struct.pack(">iQQ", 4713, len(m) + len(d), len(m)) + m + d
    path = tmp_path / "big_endian.tdms"
    path.write_bytes(out)
    run = dl.open_run(path)
    np.testing.assert_array_equal(run["value"].values, [np.tile(a, 2), np.tile(b, 2)])
    lib = nptdms.TdmsFile.read(path)["g"]
    np.testing.assert_array_equal(run["value"].values, [lib["a"][:], lib["b"][:]])


def test_through_npTDMS_alone_the_values_are_the_same(rep: tuple[Path, dict[str, Any]], tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Where daqlab cannot tell where a channel's values lie (npTDMS's internals changed),
    npTDMS reads them: the same tree."""
    path, _ = rep
    daqmx_path = tmp_path / "daqmx.tdms"
    daqmx_file(daqmx_path)
    fast = {p: (dl.open_tree(p), dl.open_tree(p, chunks={"time": 5})) for p in (path, daqmx_path)}

    def changed(*args: Any) -> Any:
        raise AttributeError("'TdmsReader' object has no attribute '_segments'")

    monkeypatch.setattr("daqlab.io._tdms._plan", changed)
    for p, (eager, lazy) in fast.items():
        xr.testing.assert_identical(dl.open_tree(p), eager)
        for key, got in channels_of(dl.open_tree(p, chunks={"time": 5})).items():
            np.testing.assert_array_equal(got["values"], channels_of(lazy)[key]["values"])


# --------------------------------------------------------------------------- npTDMS's own layouts


def scenario_cases() -> list[Any]:
    return [pytest.param(p.values[0], p.values[1], id=p.id) for p in scenarios.get_scenarios()]


@pytest.mark.parametrize(("generated", "expected"), scenario_cases())
def test_every_layout_npTDMS_tests_reads_as_npTDMS_expects(generated: Any, expected: dict[Any, Any],
                                                           tmp_path: Path) -> None:
    path = tmp_path / "case.tdms"
    path.write_bytes(generated._get_contents())
    tree, warned, error = opened(path)
    numeric = {k: np.asarray(v) for k, v in expected.items() if np.asarray(v).dtype.kind in "iufb"}
    if not numeric:
        assert tree is None
        assert "holds no channel of numbers" in error
        return
    assert tree is not None, error
    ours = channels_of(tree)
    incomplete = tree.attrs["metadata"].get("incomplete")
    assert bool(incomplete) == bool(warned)
    for key, want in numeric.items():
        got = ours[key]
        physical = got["values"] * got["slope"] + got["offset"]
        n = physical.size
        np.testing.assert_array_equal(physical, want[:n].astype(np.float64))
        if n < want.size:  # only in a file cut short, to the length of the others
            dropped = incomplete["samples_dropped"][got["node"].strip("/")]
            assert dropped[got["name"]] == want.size - n
    for key in set(expected) - set(numeric):
        assert key not in ours


def full_channels(path: Path) -> Found:
    tree, warned, error = opened(path)
    assert tree is not None, error
    assert not warned
    return channels_of(tree)


@pytest.mark.parametrize("name", [
    "chunked_interleaved_segment", "add_new_channel", "no_metadata_segment",
    pytest.param("alternating_data_objects_reusing_obj_list", marks=pytest.mark.slow),
    pytest.param("repeated_objects_without_data_in_segment_and_added_object", marks=pytest.mark.slow),
    pytest.param("chunked_segment", marks=pytest.mark.slow),
])
def test_cut_at_every_byte_opens_complete_samples_or_refuses(name: str, tmp_path: Path) -> None:
    generated = next(p.values[0] for p in scenarios.get_scenarios() if p.id == name)
    path = tmp_path / "full.tdms"
    data = generated._get_contents()
    path.write_bytes(data)
    counts = sweep(data, range(len(data)), tmp_path, full_channels(path))
    assert counts["opened"] > 0
    assert counts["refused"] > 0


def test_daqmx_cut_at_every_byte_opens_complete_samples_or_refuses(tmp_path: Path) -> None:
    path = tmp_path / "full.tdms"
    daqmx_file(path, rows=4)
    data = path.read_bytes()
    counts = sweep(data, range(len(data)), tmp_path, full_channels(path))
    assert counts["opened"] > 0
    assert counts["refused"] > 0


@pytest.mark.parametrize("thorough", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_representative_file_cut_around_every_segment(rep: tuple[Path, dict[str, Any]], tmp_path: Path,
                                                      thorough: bool) -> None:
    path, _ = rep
    data = path.read_bytes()
    starts = segment_starts(data)
    assert len(starts) == 3
    # around each later segment's lead-in, in its metadata, its first samples (the last
    # segment only, unless thorough), and offsets spread over the whole file
    offsets = np.linspace(0, len(data), 60 if thorough else 12).astype(int).tolist()
    for s in starts[1:] if thorough else starts[2:]:
        data_at = s + 28 + struct.unpack("<Q", data[s + 20:s + 28])[0]
        step = 1 if thorough else 3
        offsets += [*range(s - 2, s + 30, step), *range(s + 30, data_at, 9 * step),
                    *range(data_at - 2, data_at + 40, step)]
    offsets += list(range(len(data) - 24, len(data) + 1, step))
    sweep(data, offsets, tmp_path, full_channels(path))
    # cut inside the last segment's samples: 40 int16 of 'accel x' and 15 float64 of 'volts/2'
    # are whole; the node keeps what every channel has (80 samples) and says what it left out
    data_at = starts[2] + 28 + struct.unpack("<Q", data[starts[2] + 20:starts[2] + 28])[0]
    cut = data_at + 80 + 15 * 8 + 3
    (tmp_path / "mid.tdms").write_bytes(data[:cut])
    with pytest.warns(dl.IncompleteFileWarning, match=r"raw data of segment 2 is cut short"):
        tree = dl.open_tree(tmp_path / "mid.tdms")
    meta = tree.attrs["metadata"]["incomplete"]
    assert meta["segment"] == 2
    assert meta["segment_offset"] == starts[2]
    assert meta["bytes_present"] == cut - starts[2]
    assert meta["bytes_expected"] == len(data) - starts[2]
    assert meta["samples_dropped"] == {"fast": {"accel x": 40, "volts_2": 15}}
    fast = run_nodes(tree)["/fast"]
    assert fast.sizes["time"] == 80
    assert fast.attrs["metadata"]["incomplete"]["samples_dropped"] == {"accel x": 40, "volts_2": 15}
    assert "incomplete" not in run_nodes(tree)["/slow"].attrs["metadata"]


# --------------------------------------------------------------------------- being written


def test_a_file_being_written_by_another_thread_opens_with_what_is_complete(tmp_path: Path) -> None:
    """A writer thread appends segments as LabVIEW does (the lead-in first, its length unset
    until the segment is whole); the reader opens the file after every piece."""
    rng = np.random.default_rng(3)
    blocks = [rng.normal(size=(2, 25)) for _ in range(4)]
    wf = {"wf_start_time": np.datetime64("2025-01-01", "us"), "wf_increment": 0.01, "unit_string": "V"}
    pieces: list[tuple[int, bytes]] = []  # (offset, bytes) in the order they are written
    stream = io.BytesIO()
    with nptdms.TdmsWriter(stream) as writer:
        for i, block in enumerate(blocks):
            at = stream.tell()
            writer.write_segment([nptdms.ChannelObject("g", f"c{c}", block[c], wf if i == 0 else None)
                                  for c in range(2)])
            seg = stream.getvalue()[at:]
            unset = seg[:12] + b"\xff" * 8 + seg[20:]
            pieces += [(at, unset[:28]), (at + 28, unset[28:60]), (at + 60, unset[60:])]
            pieces += [(at + 12, seg[12:20])]  # the length, once the segment is whole
    path = tmp_path / "growing.tdms"
    path.write_bytes(b"")
    ready: queue.Queue[int] = queue.Queue()
    go = threading.Event()
    failed: list[BaseException] = []

    def writer_thread() -> None:
        try:
            with path.open("r+b") as f:
                for i, (at, chunk) in enumerate(pieces):
                    f.seek(at)
                    f.write(chunk)
                    f.flush()
                    ready.put(i)
                    if not go.wait(timeout=30):
                        raise TimeoutError("the reader did not answer")
                    go.clear()
        except BaseException as exc:
            failed.append(exc)
            ready.put(-1)

    thread = threading.Thread(target=writer_thread, name="tdms-test-writer")
    thread.start()
    full = np.hstack(blocks)
    lazy: tuple[xr.Dataset, int] | None = None
    try:
        for i in range(len(pieces)):
            assert ready.get(timeout=30) == i, failed
            tree, warned, error = opened(path)
            if tree is None:
                assert "growing.tdms" in error
            else:
                run = run_nodes(tree)["/g"]
                n = run.sizes["time"]
                np.testing.assert_array_equal(run["value"].values, full[:, :n])
                assert bool(warned) == (i % 4 != 3)  # until the segment's length is set
                if lazy is None and n:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", dl.IncompleteFileWarning)
                        lazy = (run_nodes(dl.open_tree(path, chunks={}))["/g"], n)
            go.set()
    finally:
        go.set()
        thread.join(timeout=30)
    assert not failed
    assert not thread.is_alive()
    assert n == 100
    assert lazy is not None
    # a tree opened lazily while the file was written reads the same values after it grew
    np.testing.assert_array_equal(lazy[0]["value"].values, full[:, :lazy[1]])


# --------------------------------------------------------------------------- wrong input


def test_wrong_input_is_a_format_error_naming_the_file(tmp_path: Path) -> None:
    both = {
        "empty.tdms": b"",
        "garbage.tdms": b"TDSm" + bytes(range(256)) * 4,
        "picture.tdms": b"\x89PNG\r\n\x1a\n" + bytes(100),
        "index.tdms": b"TDSh" + bytes(60),
    }
    other_formats = {  # detection opens these as what they are; the TDMS reader refuses them
        "csv.tdms": b"timestamp_ms,value,channel,quality\n0,1.0,a,0\n",
        "wav.tdms": b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(40),
    }
    for name, data in {**both, **other_formats}.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(dl.FormatError, match=name.replace(".", r"\.")):
            open_tdms(path, None)
        if name in both:
            with pytest.raises(dl.FormatError, match=name.replace(".", r"\.")):
                dl.open_tree(path)
    folder = tmp_path / "folder.tdms"
    folder.mkdir()
    with pytest.raises(dl.FormatError, match=r"folder\.tdms"):
        open_tdms(folder, None)
    with pytest.raises(dl.FormatError, match=r"folder\.tdms"):
        dl.open_tree(folder)
    text_only = write(tmp_path / "text.tdms", [nptdms.ChannelObject("g", "s", ["a", "b"])])
    with pytest.raises(dl.FormatError, match=r"text\.tdms holds no channel of numbers .*String"):
        dl.open_tree(text_only)


def test_a_corrupt_segment_is_a_format_error(rep: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    path, _ = rep
    data = bytearray(path.read_bytes())
    second = segment_starts(bytes(data))[1]
    bad = tmp_path / "bad.tdms"
    bad.write_bytes(bytes(data[:second]) + b"XXXX" + bytes(data[second + 4:]))
    with pytest.raises(dl.FormatError, match=rf"bad\.tdms .*b'XXXX' at byte {second}"):
        dl.open_tree(bad)


# --------------------------------------------------------------------------- big files, lazily


RSS_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    import daqlab as dl
    import dask, h5netcdf, nptdms, scipy.signal  # everything the run needs, imported first
    from daqlab.processing import LowPass
    src, dst = sys.argv[1], sys.argv[2]
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    dl.Pipeline([LowPass(cutoff=1000.0)]).run(src, dst, chunk_size=1 << 16, progress=False)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"base": base, "peak": peak}))
""")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_pipeline_streams_a_big_file_with_little_memory(tmp_path: Path) -> None:
    """A 256 MiB TDMS file through ``Pipeline.run`` in a fresh process: its peak RSS grows by
    less than half the file's samples. (The run's time coordinate, 8 bytes a sample, stays in
    memory in several copies, as for every source: with few channels it alone would pass half
    the samples' size, so the file has 32 channels.)"""
    channels, n, segments = 32, 1 << 20, 4
    src, dst = tmp_path / "big.tdms", tmp_path / "out.nc"
    writer = textwrap.dedent(f"""
        import numpy as np, nptdms
        rng = np.random.default_rng(1)
        with nptdms.TdmsWriter({str(src)!r}) as w:
            for s in range({segments}):
                block = rng.normal(size=({channels}, {n // segments}))
                w.write_segment([nptdms.ChannelObject("g", f"c{{c}}", block[c],
                                 {{"wf_increment": 1e-4}} if s == 0 else None) for c in range({channels})])
    """)
    subprocess.run([sys.executable, "-c", writer], check=True, timeout=300, cwd=ROOT)
    data_bytes = channels * n * 8
    assert src.stat().st_size > data_bytes
    done = subprocess.run([sys.executable, "-c", RSS_SCRIPT, str(src), str(dst)], capture_output=True,
                          text=True, timeout=600, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr
    rss = json.loads(done.stdout.strip().splitlines()[-1])
    grew = rss["peak"] - rss["base"]
    assert grew < 0.5 * data_bytes, f"peak RSS grew {grew / 2**20:.0f} MiB for {data_bytes / 2**20:.0f} MiB"
    out = dl.open_run(dst, chunks={})
    with nptdms.TdmsFile.open(src) as lib:
        whole = lib["g"]["c0"][:]
    sos = scipy.signal.butter(4, 1000.0, fs=1e4, output="sos")
    np.testing.assert_allclose(out["value"][0].values, scipy.signal.sosfiltfilt(sos, whole),
                               rtol=1e-9, atol=1e-9)
