"""XDF (Lab Streaming Layer recordings): daqlab's own chunk parser against the numbers written
(tests/io/make_xdf.py writes the published layout byte by byte) and against pyxdf's reading of
the same complete files; truncation at every byte offset; damaged and foreign files."""

from __future__ import annotations

import datetime as dt
import gzip
import importlib
import json
import struct
import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.signal
import xarray as xr
from numpy.testing import assert_array_equal

import daqlab as dl
from daqlab.io._foreign import content_id, estimate_rate
from daqlab.io._xdf import open_xdf
from daqlab.tree import check_tree, is_events
from tests.io.make_xdf import XdfWriter, make_xdf_file

pyxdf = importlib.import_module("pyxdf")  # a dev dependency: missing, these tests fail


# --------------------------------------------------------------------------- helpers


def _pyxdf(path: Path) -> dict[str, dict[str, Any]]:
    """pyxdf's reading (clock sync on, no dejitter: daqlab's choice), by stream name."""
    streams, _ = pyxdf.load_xdf(str(path), dejitter_timestamps=False)
    return {s["info"]["name"][0]: s for s in streams}


def _origin_ns(text: str) -> int:
    when = dt.datetime.fromisoformat(text).astimezone(dt.UTC).replace(tzinfo=None)
    return int(np.datetime64(when, "ns").astype(np.int64))


def _expected_ns(ts: Any, origin: int, base: float) -> Any:
    """daqlab's documented mapping of (corrected) LSL seconds to UTC ns."""
    return origin + np.rint((np.asarray(ts) - base) * 1e9).astype(np.int64)


def _ds(tree: xr.DataTree, key: str) -> xr.Dataset:
    """The node ``key`` of ``tree`` as a Dataset."""
    node = tree[key]
    assert isinstance(node, xr.DataTree)
    return node.to_dataset(inherit=False)


def _ns(node: xr.Dataset) -> Any:
    return node["time"].values.astype("datetime64[ns]").view(np.int64)


def _try_open(opener: Any, path: Path) -> tuple[xr.DataTree | None, str, list[type[Warning]]]:
    """``opener(path)``'s tree (or None and the FormatError's message) and the warnings' kinds."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            tree, message = opener(path), ""
        except dl.FormatError as exc:
            tree, message = None, str(exc)
    return tree, message, [w.category for w in caught]


def _open_quiet(path: Path) -> xr.DataTree:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a complete file opens without a warning
        return dl.open_tree(path)


@pytest.fixture
def rep(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    path = tmp_path / "session 1 (µ).xdf"
    return path, make_xdf_file(path)


# --------------------------------------------------------------------------- the representative file


def test_values_channels_units_as_written(rep: tuple[Path, dict[str, Any]]) -> None:
    path, exp = rep
    tree = _open_quiet(path)
    check_tree(tree)
    assert sorted(tree.children) == sorted([*exp["nodes"], *exp["events"]])
    for key, want in exp["nodes"].items():
        run = _ds(tree, key)
        dl.validate(run)
        assert run.attrs["name"] == want["name"]
        assert run["channel"].values.tolist() == want["channels"]
        assert run["unit"].values.tolist() == want["units"]
        assert_array_equal(run["value"].values, want["values"])
        assert_array_equal(run["cal_slope"].values, want["slopes"])
        assert_array_equal(run["cal_offset"].values, want["offsets"])
        assert run.attrs["calibrated"] is False
        bad = ~np.isfinite(want["values"])
        assert_array_equal(run["quality"].values, np.where(bad, int(dl.Quality.BAD), 0))
        if want["rate"] is not None:
            assert run.attrs["sample_rate"] == want["rate"]
        else:
            assert run.attrs["sample_rate"] == estimate_rate([_ns(run)])
            assert "estimated" in run.attrs["metadata"]["sample_rate"]
    assert int((_ds(tree, "EEG")["quality"].values == dl.Quality.BAD).sum()) == 1
    meta = tree["EEG"].attrs["metadata"]
    assert meta["renamed_channels"] == {"C3_ref": "C3/ref", "Fz_2": "Fz"}
    assert meta["channel_types"] == ["EEG"] * 4


def test_times_equal_pyxdf_and_follow_the_clock_offsets(rep: tuple[Path, dict[str, Any]]) -> None:
    path, exp = rep
    tree = _open_quiet(path)
    ref = _pyxdf(path)
    origin = _origin_ns(exp["datetime"])
    base = min(float(s["time_stamps"].min()) for s in ref.values() if s["time_stamps"].size)
    tb = tree.attrs["metadata"]["time_base"]
    assert tb["kind"] == "file_header_datetime"
    assert tb["lsl_seconds_at_datetime"] == base
    assert tree.attrs["created_at"] == "2024-03-05T13:30:00.000000Z"  # 14:30 at +01:00
    for key, want in {**exp["nodes"], **exp["events"]}.items():
        got = _ns(_ds(tree, key))
        stamps = ref[want["name"]]["time_stamps"]
        assert_array_equal(got, _expected_ns(stamps, origin, base))  # exactly pyxdf's seconds
        # and independently: the written LSL times moved by the written offsets' trend
        offs = np.array(want.get("clock_offsets") or [(0.0, 0.0)])
        if len(offs) > 1:
            slope, icpt = np.polyfit(offs[:, 0], offs[:, 1], 1)
            lsl = np.asarray(want["lsl_times"])
            assert np.abs((got - origin) / 1e9 + base - (lsl + icpt + slope * lsl)).max() < 2e-7
    sync = tree["EEG"].attrs["metadata"]["clock_sync"]
    assert sync["applied"]
    assert len(sync["segments"]) == 1
    assert sync["segments"][0]["last_sample"] == 249
    assert tree["EEG"].attrs["metadata"]["clock_offsets"] == {
        "collection_times": [t for t, _ in exp["nodes"]["EEG"]["clock_offsets"]],
        "values": [v for _, v in exp["nodes"]["EEG"]["clock_offsets"]]}
    assert tree["EEG"].attrs["metadata"]["dejittered"] is False


def test_values_equal_pyxdf(rep: tuple[Path, dict[str, Any]]) -> None:
    path, exp = rep
    tree = open_xdf(path, None)  # the module's function, as the format table calls it
    ref = _pyxdf(path)
    for key, want in exp["nodes"].items():
        assert_array_equal(_ds(tree, key)["value"].values,
                           np.asarray(ref[want["name"]]["time_series"], np.float64).T)
    labels = [row[0] for row in ref["Markers"]["time_series"]]
    assert _ds(tree, "Markers")["label"].values.tolist() == labels == exp["events"]["Markers"]["labels"]


def test_events_node_and_metadata(rep: tuple[Path, dict[str, Any]]) -> None:
    path, _exp = rep
    tree = _open_quiet(path)
    ev = _ds(tree, "Markers")
    assert is_events(ev)
    assert ev["label"].values.tolist() == ["start", "Stimulus ✓", "resp/left", "", "pause, then go", "end"]
    assert np.isnan(ev["duration"].values).all()
    meta = ev.attrs["metadata"]
    assert meta["stream_info"]["type"] == "Markers"
    assert meta["stream_info"]["channel_format"] == "string"
    assert meta["footer"]["sample_count"] == "6"
    root = tree.attrs
    assert root["id"] == content_id(path)
    assert root["name"] == "session 1 (µ)"
    rmeta = root["metadata"]
    assert rmeta["format"] == "xdf"
    assert rmeta["file"] == path.name
    assert rmeta["file_header"] == {"version": "1.0", "datetime": "2024-03-05T14:30:00+0100"}
    assert [s["node"] for s in rmeta["streams"]] == ["EEG", "Accel_IMU", "Temperature", "Markers"]
    assert "incomplete" not in rmeta
    assert rmeta["skipped_chunks"] == {"Boundary": 1}
    eeg = tree["EEG"].attrs["metadata"]
    assert eeg["stream_info"]["source_id"] == "amp-001"
    assert eeg["stream_info"]["hostname"] == "testhost"
    assert eeg["desc"]["channels"]["channel"][1] == {"label": "C3/ref", "unit": "microvolts", "type": "EEG"}
    assert eeg["footer"]["sample_count"] == "250"


def test_open_run_save_open_identical(rep: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    path, exp = rep
    with pytest.raises(dl.NotFoundError, match="EEG"):
        dl.open_run(path)  # three runs: the error names the groups
    for key in exp["nodes"]:
        run = dl.open_run(path, group=key)
        out = dl.save(run, tmp_path / f"{key}.nc")
        back = dl.open_run(out)
        xr.testing.assert_identical(back[["value", "quality"]].reset_coords(drop=False),
                                    run[["value", "quality"]].reset_coords(drop=False))
        assert back.attrs["metadata"] == run.attrs["metadata"]


def test_pipeline_lowpass_equals_scipy(rep: tuple[Path, dict[str, Any]]) -> None:
    path, exp = rep
    run = dl.open_run(path, group="Accel_IMU")
    out = dl.Pipeline([dl.processing.LowPass(cutoff=5.0)]).apply(run)
    sos = scipy.signal.butter(4, 5.0, btype="lowpass", fs=25.0, output="sos")
    want = scipy.signal.sosfiltfilt(sos, exp["nodes"]["Accel_IMU"]["values"], axis=-1)
    np.testing.assert_allclose(out["value"].values, want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("chunks", [{}, {"time": 100}], ids=["file-chunks", "time-100"])
def test_lazy_chunks(rep: tuple[Path, dict[str, Any]], chunks: dict[str, Any]) -> None:
    path, exp = rep
    tree = dl.open_tree(path, chunks=chunks)
    for key, want in exp["nodes"].items():
        value = _ds(tree, key)["value"]
        assert value.chunks is not None
        assert _ds(tree, key)["quality"].chunks is not None
        assert_array_equal(value.values, want["values"])
    assert tree.attrs["metadata"]["reading"].startswith("whole file read into memory")


# --------------------------------------------------------------------------- layouts and clocks


def _info(**kw: Any) -> dict[str, Any]:
    return {"type": "Test", **kw}


def test_every_numeric_format_and_length_byte_counts(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    data: dict[str, Any] = {
        "int8": rng.integers(-128, 128, size=(7, 2)),
        "int16": rng.integers(-2**15, 2**15, size=(7, 2)),
        "int32": rng.integers(-2**31, 2**31, size=(7, 2)),
        "int64": np.array([[2**53, -2**53]] * 7) - rng.integers(0, 1000, size=(7, 2)),
        "float32": rng.normal(size=(7, 2)).astype(np.float32),
        "double64": rng.normal(size=(7, 2)) * 1e300,
    }
    trees = []
    for nb in (None, 8):
        path = tmp_path / f"formats-{nb}.xdf"
        with XdfWriter(path, length_bytes=nb) as w:
            for sid, fmt in enumerate(data, 1):
                w.stream_header(sid, name=fmt, channel_format=fmt, nominal_srate=50.0, channels=2)
            for sid, v in enumerate(data.values(), 1):
                w.samples(sid, v[:3], [1.0, 1.02, None], count_bytes=nb)
                w.samples(sid, v[3:], [None, 1.08, None, 1.12], count_bytes=nb)
            for sid in range(1, len(data) + 1):
                w.stream_footer(sid, first=1.0, last=1.12, count=7)
        trees.append(_open_quiet(path))
        ref = _pyxdf(path)
        for fmt, v in data.items():
            run = _ds(trees[-1], fmt)
            assert run["channel"].values.tolist() == ["ch0", "ch1"]
            assert_array_equal(run["value"].values, v.T.astype(np.float64))
            assert_array_equal(run["value"].values, np.asarray(ref[fmt]["time_series"], np.float64).T)
            assert_array_equal(_ns(run), _expected_ns(ref[fmt]["time_stamps"], 0, 0.0))
    assert trees[0]["int64"].attrs["metadata"]["precision"].startswith("int64 values beyond 2**53")
    for fmt in data:
        assert_array_equal(_ds(trees[0], fmt)["value"].values, _ds(trees[1], fmt)["value"].values)
        assert_array_equal(_ns(_ds(trees[0], fmt)), _ns(_ds(trees[1], fmt)))


def test_deduced_timestamps_sum_as_pyxdf(tmp_path: Path) -> None:
    """Unstamped samples: previous + 1/rate, summed one by one (long and short runs, stream
    start without any stamp), so that the times equal pyxdf's to the bit."""
    path = tmp_path / "deduced.xdf"
    n = 300
    v = np.arange(n, dtype=np.float64)[:, None]
    with XdfWriter(path) as w:
        w.stream_header(1, name="s", channel_format="double64", nominal_srate=300.0, channels=1)
        w.samples(1, v[:100], [None] * 100)  # 0 + k/300, one chunk
        w.samples(1, v[100:150], [1000.0 + 0.1 * i if i % 7 == 0 else None for i in range(50)])
        w.samples(1, v[150:], [2000.0 + i / 100 if i in (0, 100) else None for i in range(150)])
        w.stream_footer(1, first=0.0, last=0.0, count=n)
    ref = _pyxdf(path)["s"]["time_stamps"]
    run = _ds(_open_quiet(path), "s")
    assert_array_equal(_ns(run), _expected_ns(ref, 0, 0.0))
    assert _ns(run)[0] == round(1e9 / 300)
    assert_array_equal(run["value"].values[0], np.arange(n))


def test_clock_resets_segmented_as_pyxdf(tmp_path: Path) -> None:
    """A clock reset (the sender restarted): two clock segments, each with its own line."""
    path = tmp_path / "reset.xdf"
    rng = np.random.default_rng(5)
    with XdfWriter(path) as w:
        w.stream_header(1, name="s", channel_format="float32", nominal_srate=10.0, channels=1)
        for k in range(20):  # segment 1: LSL 1000..., offset ~0.5
            w.samples(1, [[k]], [1000.0 + 5 * k])
            w.clock_offset(1, 1000.0 + 5 * k, 0.5 + 1e-5 * rng.normal())
        for k in range(20):  # segment 2: the sender's clock restarted at 10, offset ~1300
            w.samples(1, [[20 + k]], [10.0 + 5 * k])
            w.clock_offset(1, 10.0 + 5 * k, 1300.0 + 1e-5 * rng.normal())
        w.stream_footer(1, first=1000.0, last=105.0, count=40)
    ref = _pyxdf(path)["s"]
    assert len(ref["info"]["clock_segments"]) == 2
    run = _ds(_open_quiet(path), "s")
    assert_array_equal(_ns(run), _expected_ns(ref["time_stamps"], 0, 0.0))
    assert_array_equal(run["value"].values[0], np.arange(40))
    segments = run.attrs["metadata"]["clock_sync"]["segments"]
    assert [(s["first_sample"], s["last_sample"]) for s in segments] == [(0, 19), (20, 39)]


def test_pylsl67_extra_sample_and_garbage_offset_dropped_as_pyxdf(tmp_path: Path) -> None:
    path = tmp_path / "pylsl67.xdf"
    with XdfWriter(path) as w:
        w.stream_header(1, name="s", channel_format="int32", nominal_srate=1.0, channels=1)
        for k in range(6):
            w.samples(1, [[k]], [50.0 + k])
            w.clock_offset(1, 50.0 + k, -0.25)
        w.clock_offset(1, 9e9, 12345.0)  # the bug's garbage, with one sample too many below
        w.stream_footer(1, first=50.0, last=54.0, count=5)
    ref = _pyxdf(path)["s"]
    run = _ds(_open_quiet(path), "s")
    assert len(ref["time_stamps"]) == run.sizes["time"] == 5
    assert_array_equal(_ns(run), _expected_ns(ref["time_stamps"], 0, 0.0))
    sync = run.attrs["metadata"]["clock_sync"]
    assert sync["dropped_samples"] == 1
    assert sync["dropped_last_offset"] == {"time": 9e9, "value": 12345.0}


def test_epoch_time_base_without_datetime_and_strings(tmp_path: Path) -> None:
    path = tmp_path / "plain.xdf"
    with XdfWriter(path) as w:
        w.stream_header(1, name="m", channel_format="string", nominal_srate=0.0, channels=2)
        w.samples(1, [["a", "b/β"], ["", "x"]], [12.5, None])
        w.samples(1, [["late", "z"]], [11.0])  # goes back: events are sorted by time
        w.stream_footer(1, first=12.5, last=11.0, count=3)
    tree = _open_quiet(path)
    ev = _ds(tree, "m")
    assert_array_equal(_ns(ev), [11_000_000_000, 12_500_000_000, 12_500_000_000])
    labels = ev["label"].values.tolist()
    assert [json.loads(x) for x in labels] == [["late", "z"], ["a", "b/β"], ["", "x"]]
    assert ev.attrs["metadata"]["label_encoding"].startswith("JSON array")
    assert tree.attrs["metadata"]["time_base"]["kind"] == "epoch_plus_lsl_seconds"


@pytest.mark.parametrize("when", ["9999-12-31T23:59:59-0500", "yesterday"])
def test_unusable_timestamps_and_datetime_are_said(tmp_path: Path, when: str) -> None:
    path = tmp_path / "odd.xdf"
    with XdfWriter(path, datetime=when) as w:
        w.stream_header(1, name="s", channel_format="double64", nominal_srate=1.0, channels=1)
        w.samples(1, [[1.0], [2.0], [3.0], [4.0]], [10.0, 11.0, float("nan"), 1e300])
        w.stream_footer(1, first=10.0, last=1e300, count=4)
    tree = _open_quiet(path)
    run = _ds(tree, "s")
    assert_array_equal(run["value"].values[0], [1.0, 2.0])
    assert_array_equal(_ns(run), [10_000_000_000, 11_000_000_000])
    assert run.attrs["metadata"]["samples_dropped_for_bad_timestamps"] == 2
    base = tree.attrs["metadata"]["time_base"]
    assert base["kind"] == "epoch_plus_lsl_seconds"
    assert repr(when) in base["note"]


def test_unfinalised_recording_and_marker_only_file(tmp_path: Path) -> None:
    """No StreamFooter (the recorder never finished): opened, flagged incomplete; a file of
    markers only is a tree of one events node."""
    path = tmp_path / "markers.xdf"
    with XdfWriter(path) as w:
        w.stream_header(1, name="Markers", channel_format="string", nominal_srate=0.0, channels=1)
        w.samples(1, [["a"], ["b"]], [1.0, 2.0])
    with pytest.warns(dl.IncompleteFileWarning, match="not finalised: no StreamFooter for Markers"):
        tree = dl.open_tree(path)
    assert list(tree.children) == ["Markers"]
    assert _ds(tree, "Markers")["label"].values.tolist() == ["a", "b"]
    assert tree.attrs["metadata"]["incomplete"]["streams_without_footer"] == ["Markers"]
    assert "no StreamFooter" in tree["Markers"].attrs["metadata"]["incomplete"]["reason"]


def test_times_going_back_are_sorted_and_said(tmp_path: Path) -> None:
    path = tmp_path / "back.xdf"
    with XdfWriter(path) as w:
        w.stream_header(1, name="s", channel_format="int16", nominal_srate=2.0, channels=1)
        w.samples(1, [[1], [2], [3], [4]], [10.0, 10.5, 10.25, 11.0])
        w.stream_footer(1, first=10.0, last=11.0, count=4)
    run = _ds(_open_quiet(path), "s")
    assert_array_equal(run["value"].values[0], [1, 3, 2, 4])
    assert_array_equal(_ns(run), [10_000_000_000, 10_250_000_000, 10_500_000_000, 11_000_000_000])
    assert "sorted" in run.attrs["metadata"]["samples_reordered"]


def test_duplicate_stream_names_and_missing_desc(tmp_path: Path) -> None:
    path = tmp_path / "dups.xdf"
    with XdfWriter(path) as w:
        for sid in (7, 9):
            w.stream_header(sid, name="EEG", channel_format="float32", nominal_srate=4.0,
                            channels=[("a", "V", ""), ("", "V", "")] if sid == 7 else 3)
            w.samples(sid, np.full((2, 2 if sid == 7 else 3), sid), [1.0, 1.25])
            w.stream_footer(sid, first=1.0, last=1.25, count=2)
    tree = _open_quiet(path)
    assert sorted(tree.children) == ["EEG", "EEG_2"]
    assert tree["EEG"].attrs["name"] == tree["EEG_2"].attrs["name"] == "EEG"
    assert _ds(tree, "EEG")["channel"].values.tolist() == ["a", "ch1"]
    assert _ds(tree, "EEG_2")["channel"].values.tolist() == ["ch0", "ch1", "ch2"]
    assert_array_equal(_ds(tree, "EEG_2")["value"].values, np.full((3, 2), 9.0))


@pytest.mark.parametrize("kind", ["gzip", "zlib"])
def test_compressed_xdfz(rep: tuple[Path, dict[str, Any]], tmp_path: Path, kind: str) -> None:
    path, exp = rep
    data = path.read_bytes()
    packed = gzip.compress(data) if kind == "gzip" else zlib.compress(data)
    z = tmp_path / "rec.xdfz"
    z.write_bytes(packed)
    plain, tree = _open_quiet(path), open_xdf(z, None)
    assert tree.attrs["metadata"]["compression"] == kind
    for key in exp["nodes"]:
        assert_array_equal(_ds(tree, key)["value"].values, _ds(plain, key)["value"].values)
        assert_array_equal(_ns(_ds(tree, key)), _ns(_ds(plain, key)))
    if kind == "gzip":  # pyxdf reads gzip .xdfz (LabRecorder's zlib ones it cannot)
        assert_array_equal(_ds(tree, "EEG")["value"].values,
                           np.asarray(_pyxdf(z)["EEG"]["time_series"], np.float64).T)
    z.write_bytes(packed[: len(packed) * 2 // 3])  # a compressed file cut short
    with pytest.warns(dl.IncompleteFileWarning, match="compressed stream"):
        cut = open_xdf(z, None)
    n = cut["EEG"].sizes["time"]
    assert 0 < n < 250
    assert_array_equal(_ds(cut, "EEG")["value"].values, exp["nodes"]["EEG"]["values"][:, :n])


# --------------------------------------------------------------------------- damage and truncation


def _sweep_file(path: Path) -> None:
    """A small file with every kind of chunk: a numeric stream with mixed stamps, a marker
    stream, clock offsets (the last two rounds only: fitting them is what costs time), a
    boundary, footers."""
    with XdfWriter(path, datetime="2025-06-01T12:00:00+0000") as w:
        w.stream_header(1, name="sig", channel_format="float32", nominal_srate=10.0, channels=2,
                        minimal=True)
        w.stream_header(3, name="mk", channel_format="string", nominal_srate=0.0, channels=1,
                        minimal=True)
        for c in range(4):
            t = 100.0 + 0.5 * c
            w.samples(1, np.arange(6 * c, 6 * c + 6, dtype=np.float32).reshape(3, 2),
                      [t + 0.1 * i if (i + c) % 2 == 0 else None for i in range(3)])
            if c >= 2:
                w.clock_offset(1, t, -0.01 - 0.001 * c)
            if c % 2:
                w.samples(3, [[f"m{c}"]], [t + 0.05])
            if c == 1:
                w.boundary()
        for sid in (1, 3):
            w.stream_footer(sid, first=100.0, last=102.0, count=4)


def _check_prefix(tree: xr.DataTree, full: xr.DataTree) -> None:
    """Every node of ``tree`` holds a prefix of the same node of the complete file."""
    if any(not is_events(n.to_dataset()) for n in tree.children.values()):
        check_tree(tree)  # every run valid (a tree of markers only holds no run to check)
    for key, node in tree.children.items():
        ds, whole = node.to_dataset(), _ds(full, key)
        if is_events(ds):
            n = ds.sizes["event"]
            assert ds["label"].values.tolist() == whole["label"].values.tolist()[:n]
        else:
            n = ds.sizes["time"]
            assert_array_equal(ds["value"].values, whole["value"].values[:, :n])
            assert ds["channel"].values.tolist() == whole["channel"].values.tolist()
    assert list(tree.children) == list(full.children)[:len(tree.children)]


@pytest.mark.parametrize("part", [0, 1, 2], ids=["offsets-0-mod-3", "offsets-1-mod-3", "offsets-2-mod-3"])
def test_truncated_at_every_byte(tmp_path: Path, part: int) -> None:
    """Each prefix of a small file opens with values equal to a prefix of the complete file's
    (flagged incomplete, with a warning), or raises a FormatError (nothing past the file
    header: no whole stream header yet)."""
    src = tmp_path / "full.xdf"
    _sweep_file(src)
    data = src.read_bytes()
    full = _open_quiet(src)
    assert [full[k].sizes.get("time", full[k].sizes.get("event")) for k in full.children] == [12, 2]
    first_header_end = data.index(b"</info>", data.index(b"<name>sig</name>")) + len(b"</info>")
    cut = tmp_path / "cut.xdf"
    for size in range(part, len(data), 3):  # every offset, in three tests of equal work
        cut.write_bytes(data[:size])
        tree, refused, caught = _try_open(lambda p: open_xdf(p, None), cut)
        if tree is None:
            assert "cut.xdf" in refused
            assert not caught
            assert size < first_header_end, size  # only before one whole stream header
            continue
        assert size >= first_header_end, size
        assert caught == [dl.IncompleteFileWarning], size
        assert "incomplete" in tree.attrs["metadata"], size
        _check_prefix(tree, full)


def test_truncated_representative_file_through_open_tree(rep: tuple[Path, dict[str, Any]],
                                                         tmp_path: Path) -> None:
    path, _exp = rep
    data = path.read_bytes()
    full = _open_quiet(path)
    sizes = set(np.linspace(0, len(data) - 1, 40).astype(int).tolist())
    pos = 4
    while pos < len(data):  # and every offset around each chunk boundary
        nb = data[pos]
        end = pos + 1 + nb + int.from_bytes(data[pos + 1:pos + 1 + nb], "little")
        sizes.update(range(max(end - 1, 0), min(end + 2, len(data))))
        pos = end
    cut = tmp_path / "cut.xdf"
    for size in sorted(sizes):
        cut.write_bytes(data[:size])
        tree, refused, caught = _try_open(dl.open_tree, cut)
        if tree is None:
            assert "cut.xdf" in refused
            assert not caught
            continue
        assert caught == [dl.IncompleteFileWarning], size
        _check_prefix(tree, full)
        meta = tree.attrs["metadata"]["incomplete"]
        assert meta["reason"]
        if "cut_chunk" in meta:
            assert meta["bytes_unread"] == size - meta["cut_chunk"]["at_byte"]


def test_cut_samples_chunk_is_dropped_whole_and_counted(rep: tuple[Path, dict[str, Any]],
                                                        tmp_path: Path) -> None:
    path, _exp = rep
    data = path.read_bytes()
    full = _open_quiet(path)
    # the third EEG Samples chunk (stream id 1): cut one byte before its end
    starts = [i for i in range(len(data) - 7) if data[i:i + 1] in (b"\x01", b"\x04")
              and data[i + 1 + data[i] : i + 3 + data[i]] == b"\x03\x00"
              and data[i + 3 + data[i] : i + 7 + data[i]] == b"\x01\x00\x00\x00"]
    third = starts[2]
    length = int.from_bytes(data[third + 1:third + 1 + data[third]], "little")
    cut = tmp_path / "cut.xdf"
    cut.write_bytes(data[:third + 1 + data[third] + length - 1])
    with pytest.warns(dl.IncompleteFileWarning, match="cut short"):
        tree = dl.open_tree(cut)
    assert tree["EEG"].sizes["time"] == 64  # two chunks of 32; the third one (32) dropped whole
    assert_array_equal(_ds(tree, "EEG")["value"].values, _ds(full, "EEG")["value"].values[:, :64])
    assert tree["EEG"].attrs["metadata"]["incomplete"]["samples_dropped"] == 32
    assert tree.attrs["metadata"]["incomplete"]["cut_chunk"]["stream_id"] == 1


def test_damaged_chunks_are_skipped_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "damaged.xdf"
    with XdfWriter(path) as w:
        w.stream_header(1, name="s", channel_format="int16", nominal_srate=1.0, channels=1)
        w.samples(1, [[1], [2]], [1.0, 2.0])
        w.samples(1, [[3], [4]], [3.0, 4.0])  # its length's byte count is broken below
        w.samples(1, [[5]], [5.0])
        w.boundary()  # where reading resumes
        w.samples(1, [[6], [7]], [6.0, 7.0])
        w.chunk(3, b"\x01\x00\x00\x00\x01\x01\x05" + b"\x00" * 9)  # timestamp flag 5: damaged
        w.chunk(9, b"future")  # an unknown tag: skipped
        w.samples(1, [[8]], [8.0])
        w.samples(1, [[9]], [9.0])  # its length is made to run past the file's end below
        w.boundary()
        w.samples(1, [[10]], [10.0])
        w.stream_footer(1, first=1.0, last=10.0, count=10)
    data = bytearray(path.read_bytes())

    def chunk_of(count: int, stamp: float) -> int:  # where the Samples chunk starting so begins
        return data.index(b"\x03\x00\x01\x00\x00\x00\x01" + bytes([count]) + b"\x08"
                          + struct.pack("<d", stamp)) - 2

    broken_nb, huge = chunk_of(2, 3.0), chunk_of(1, 9.0)
    data[broken_nb] = 3  # not 1, 4 or 8
    data[huge] = 8  # now 8 length bytes: the length, tag, stream id... a length past the end
    path.write_bytes(bytes(data))
    with pytest.warns(dl.IncompleteFileWarning, match="damaged"):
        tree = dl.open_tree(path)
    assert_array_equal(_ds(tree, "s")["value"].values[0], [1, 2, 6, 7, 8, 10])
    damaged = tree.attrs["metadata"]["incomplete"]["damaged_chunks"]
    assert [d["at_byte"] for d in damaged] == [broken_nb, damaged[1]["at_byte"], huge]
    assert "boundary" in damaged[0]["reason"]
    assert "timestamp of 5 bytes" in damaged[1]["reason"]
    assert "past the end of the file" in damaged[2]["reason"]
    assert "cut_chunk" not in tree.attrs["metadata"]["incomplete"]
    assert tree.attrs["metadata"]["skipped_chunks"] == {"tag 9": 1}  # the boundaries: found by the scan


@pytest.mark.parametrize("content", [
    b"", b"XDF", b"XDF:", b"XDF:\x01", b"XDF:" + bytes(np.random.default_rng(1).integers(0, 256, 300)),
    b"XDF:\x01\x07\x01\x00<info/>\x01\x07\x02\x00\x01\x00\x00\x00<a",
], ids=["empty", "short-magic", "magic-only", "cut-header", "garbage", "bad-stream-header"])
def test_wrong_files_raise_format_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "wrong.xdf"
    path.write_bytes(content)
    for opener in (dl.open_tree, lambda p: open_xdf(p, None)):
        with warnings.catch_warnings(record=True), pytest.raises(dl.FormatError, match=r"wrong\.xdf"):
            opener(path)


@pytest.mark.parametrize("content", [
    b"timestamp_ms,value,channel,quality\n0,1.0,a,0\n", b"RIFF\x24\x00\x00\x00WAVEfmt ",
    b"\x89HDF\r\n\x1a\n" + bytes(100), b"\x1f\x8b\x08\x00" + bytes(20),
], ids=["csv", "wav", "hdf5", "not-gzip"])
def test_other_formats_named_xdf_raise_format_error(tmp_path: Path, content: bytes) -> None:
    """The XDF reader refuses another format's bytes (open_tree detects formats by content and
    opens such a file with its own format's reader)."""
    path = tmp_path / "other.xdf"
    path.write_bytes(content)
    with pytest.raises(dl.FormatError, match=r"other\.xdf is not an XDF file"):
        open_xdf(path, None)


def test_directory_and_missing_stream_header_raise(tmp_path: Path) -> None:
    folder = tmp_path / "folder.xdf"
    folder.mkdir()
    for opener in (dl.open_tree, lambda p: open_xdf(p, None)):
        with pytest.raises(dl.FormatError, match=r"folder\.xdf"):
            opener(folder)
    path = tmp_path / "header-only.xdf"
    XdfWriter(path).close()
    with pytest.raises(dl.FormatError, match="no complete XDF stream header"):
        dl.open_tree(path)
