"""EDF, EDF+ and BDF files (written with pyEDFlib) open as trees of runs, one per rate."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pyedflib
import pytest
import scipy.signal
import xarray as xr

import daqlab as dl
from daqlab.io._edf import open_edf
from daqlab.io._foreign import content_id
from daqlab.tree import run_nodes
from tests.io.make_edf import ANNOTATIONS, SIGNALS, START, START_IN_FILE, make_edf_file

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["edf", "bdf"])
def written(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    path = tmp_path / f"rec.{request.param}"
    return path, make_edf_file(path, bdf=request.param == "bdf")


def _times(start: np.datetime64, n: int, rate: float) -> Any:
    return start + np.rint(np.arange(n) * 1e9 / rate).astype("timedelta64[ns]")


def test_every_rate_is_a_node_with_the_raw_samples_scaling_units_ranges_and_times(
        written: tuple[Path, dict[str, Any]]) -> None:
    path, exp = written
    tree = dl.open_tree(path)
    assert sorted(tree.children) == ["1Hz", "256Hz", "32Hz", "annotations"]
    runs = run_nodes(tree)
    assert sorted(runs) == sorted(exp["nodes"])
    for key, node in exp["nodes"].items():
        run = runs[key]
        dl.validate(run)
        assert run["channel"].values.tolist() == node["channels"]
        assert run["unit"].values.tolist() == node["units"]
        np.testing.assert_array_equal(run["value"].values, node["raw"])
        assert run["cal_slope"].values.tolist() == node["slope"]
        assert run["cal_offset"].values.tolist() == node["offset"]
        assert list(zip(run["range_min"].values.tolist(), run["range_max"].values.tolist(),
                        strict=True)) == node["range"]
        assert run.attrs["sample_rate"] == node["rate"]
        assert not run.attrs["calibrated"]
        np.testing.assert_array_equal(run["time"].values,
                                      _times(START_IN_FILE, node["raw"].shape[1], node["rate"]))
        # clipped samples sit at the digital limits, inside the range: not flagged
        assert (run["quality"].values == 0).all()
        np.testing.assert_allclose(dl.calibrate(run)["value"].values, node["values"], rtol=1e-15)
        signals = run.attrs["metadata"]["signals"]
        assert [signals[c]["label"] for c in node["channels"]] == node["labels"]
        assert {s["prefilter"] for s in signals.values()} == {"HP:0.1Hz LP:75Hz"}
        assert [signals[c]["transducer"] for c in node["channels"]] == [
            f"{label} electrode" for label in node["labels"]]
    assert runs["/256Hz"].attrs["metadata"]["renamed"] == {"ECG I_II": "ECG I/II",
                                                          "EEG Fp1_2": "EEG Fp1"}
    attrs = tree.attrs
    assert attrs["id"] == content_id(path)
    assert attrs["name"] == "rec"
    assert attrs["created_at"] == "2024-03-01T12:30:15.250000Z"
    meta = attrs["metadata"]
    assert meta["format"] == "edf"
    assert meta["file"] == path.name
    assert meta["edf_type"] == ("BDF+C" if path.suffix == ".bdf" else "EDF+C")
    assert meta["start"] == "2024-03-01T12:30:15.250000000Z"
    assert meta["records"] == meta["records_declared"] == 8
    assert meta["patient_fields"] == {"code": "MCH-0234567", "sex": "M", "birthdate": "X",
                                      "name": "Haagse_Harry", "additional": ""}
    assert meta["recording_fields"]["technician"] == "daqlab"
    assert meta["recording_fields"]["equipment"] == "bench"
    assert "incomplete" not in meta


def test_the_subsecond_start_is_the_one_in_the_file(tmp_path: Path) -> None:
    # pyEDFlib 0.1.42 writes microsecond x 100 in 100 ns units (25 ms -> "+0.25" in the
    # file) and reads it back divided by 100; daqlab reads what the file says
    path = tmp_path / "rec.edf"
    make_edf_file(path)
    header_bytes = int(path.read_bytes()[184:192])
    assert b"+0.2500000\x14\x14" in path.read_bytes()[header_bytes:header_bytes + 8000]
    run = dl.open_run(path, group="256Hz")
    assert run["time"].values[0] == START_IN_FILE
    with pyedflib.EdfReader(str(path)) as reader:
        assert reader.getStartdatetime() == START  # pyEDFlib's own round trip


def test_annotations_are_an_events_node_as_pyedflib_reads_them(
        written: tuple[Path, dict[str, Any]]) -> None:
    path, exp = written
    events = dl.open_tree(path)["annotations"].to_dataset()
    np.testing.assert_array_equal(events["time"].values, exp["events"]["times"])
    assert events["label"].values.tolist() == exp["events"]["labels"]
    np.testing.assert_array_equal(events["duration"].values, exp["events"]["durations"])
    with pyedflib.EdfReader(str(path)) as reader:
        onsets, durations, texts = reader.readAnnotations()
    assert texts.tolist() == [a[2] for a in ANNOTATIONS]
    np.testing.assert_array_equal(onsets, [a[0] for a in ANNOTATIONS])
    np.testing.assert_array_equal(np.where(durations < 0, np.nan, durations),
                                  exp["events"]["durations"])


def test_raw_values_equal_pyedflib_digital_reads_and_calibrated_ones_its_physical_reads(
        written: tuple[Path, dict[str, Any]]) -> None:
    path, _ = written
    runs = run_nodes(dl.open_tree(path))
    with pyedflib.EdfReader(str(path)) as reader:
        for i, (_, _, rate, _, _, _, _) in enumerate(SIGNALS):
            run = runs[f"/{rate}Hz"]
            label = reader.getLabel(i)
            row = next(k for k, s in run.attrs["metadata"]["signals"].items() if s["index"] == i)
            assert run.attrs["metadata"]["signals"][row]["label"] == label
            np.testing.assert_array_equal(run["value"].sel(channel=row).values,
                                          reader.readSignal(i, digital=True))
            physical = dl.calibrate(run)["value"].sel(channel=row).values
            np.testing.assert_allclose(physical, reader.readSignal(i, digital=False), rtol=1e-12,
                                       atol=1e-12 * abs(float(reader.getPhysicalMaximum(i))))


def test_physical_values_beyond_the_range_are_clipped_and_digital_ones_beyond_flagged(
        tmp_path: Path) -> None:
    path = tmp_path / "clip.edf"
    w = pyedflib.EdfWriter(str(path), 1, file_type=pyedflib.FILETYPE_EDFPLUS)
    w.setSignalHeaders([{"label": "x", "dimension": "V", "sample_frequency": 4, "physical_min": -1.0,
                         "physical_max": 1.0, "digital_min": -2048, "digital_max": 2047}])
    w.writeSamples([np.array([-1.5, -1.0, 0.5, 1.5])])
    w.close()
    run = dl.open_run(path)
    np.testing.assert_array_equal(run["value"].values, [[-2048, -2048, 1023, 2047]])
    np.testing.assert_allclose(dl.calibrate(run)["value"].values, [[-1, -1, 2047 / 4095, 1]],
                               rtol=1e-15)
    assert run["quality"].values.tolist() == [[0, 0, 0, 0]]
    # narrow the declared digital range in the header: the extreme samples now lie beyond it
    data = bytearray(path.read_bytes())
    dmin_at, dmax_at = 256 + 2 * (16 + 80 + 8 + 8 + 8), 256 + 2 * (16 + 80 + 8 + 8 + 8 + 8)
    assert data[dmin_at:dmin_at + 8] == b"-2048   "
    assert data[dmax_at:dmax_at + 8] == b"2047    "
    data[dmin_at:dmin_at + 8], data[dmax_at:dmax_at + 8] = b"-2000   ", b"2000    "
    path.write_bytes(bytes(data))
    run = dl.open_run(path)
    assert run["quality"].values.tolist() == [[1, 1, 0, 1]]
    with pyedflib.EdfReader(str(path)) as reader:
        np.testing.assert_allclose(dl.calibrate(run)["value"].values[0], reader.readSignal(0),
                                   rtol=1e-12)


def test_a_plain_edf_file_has_no_annotations_node_and_whole_second_start(tmp_path: Path) -> None:
    path = tmp_path / "plain.edf"
    w = pyedflib.EdfWriter(str(path), 2, file_type=pyedflib.FILETYPE_EDF)
    w.setSignalHeaders([{"label": n, "dimension": "uV", "sample_frequency": 10, "physical_min": -1.0,
                         "physical_max": 1.0, "digital_min": -32768, "digital_max": 32767}
                        for n in ("a", "b")])
    w.setStartdatetime(START.replace(microsecond=0))
    w.writeSamples([np.arange(30, dtype=np.int32), -np.arange(30, dtype=np.int32)], digital=True)
    w.close()
    tree = dl.open_tree(path)
    assert list(tree.children) == ["10Hz"]
    assert tree.attrs["metadata"]["edf_type"] == "EDF"
    run = dl.open_run(path)
    np.testing.assert_array_equal(run["value"].values, [np.arange(30), -np.arange(30)])
    assert str(run["time"].values[0]) == "2024-03-01T12:30:15.000000000"


def test_open_run_needs_a_group_and_opens_each(written: tuple[Path, dict[str, Any]]) -> None:
    path, exp = written
    with pytest.raises(dl.DaqlabError, match=r"'/256Hz', '/32Hz', '/1Hz'"):
        dl.open_run(path)
    for key, node in exp["nodes"].items():
        run = dl.open_run(path, group=key.strip("/"))
        np.testing.assert_array_equal(run["value"].values, node["raw"])


def test_each_node_survives_a_netcdf_round_trip(written: tuple[Path, dict[str, Any]],
                                                tmp_path: Path) -> None:
    path, exp = written
    for key in exp["nodes"]:
        run = dl.open_run(path, group=key)
        saved = dl.save(run, tmp_path / f"{key.strip('/')}.nc")
        back = dl.open_run(saved)
        xr.testing.assert_identical(back.reset_coords(drop=False)[["value", "quality"]],
                                    run.reset_coords(drop=False)[["value", "quality"]])
        xr.testing.assert_identical(back.coords.to_dataset(), run.coords.to_dataset())
        assert back.attrs == run.attrs


def test_a_pipeline_runs_on_a_node_as_scipy_does(written: tuple[Path, dict[str, Any]]) -> None:
    path, exp = written
    run = dl.calibrate(dl.open_run(path, group="256Hz", chunks={"time": 300}))
    out = dl.Pipeline([lambda r: dl.processing.lowpass(r, 30.0, order=4)]).apply(run)
    sos = scipy.signal.butter(4, 30.0, "lowpass", fs=256.0, output="sos")
    expected = scipy.signal.sosfiltfilt(sos, exp["nodes"]["/256Hz"]["values"], axis=-1)
    np.testing.assert_allclose(out["value"].values, expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("chunks", [{}, {"time": 100}, "auto", {"channel": 1, "time": 77}])
def test_chunks_give_dask_arrays_that_compute_to_the_same_values(
        written: tuple[Path, dict[str, Any]], chunks: Any) -> None:
    path, exp = written
    eager = dl.open_tree(path)
    lazy = dl.open_tree(path, chunks=chunks)
    for key, node in exp["nodes"].items():
        ds = lazy[key].to_dataset()
        assert ds["value"].chunks is not None
        assert ds["quality"].chunks is not None
        if chunks == {"time": 100}:
            assert ds["value"].chunks[1][0] == min(100, node["raw"].shape[1])
        xr.testing.assert_identical(ds.compute(), eager[key].to_dataset())
    direct = open_edf(path, chunks={})
    np.testing.assert_array_equal(direct["256Hz"].to_dataset()["value"][:, 250:530].values,
                                  exp["nodes"]["/256Hz"]["raw"][:, 250:530])


def test_a_lazy_tree_refuses_a_file_changed_after_it_was_opened(tmp_path: Path) -> None:
    path = tmp_path / "rec.edf"
    make_edf_file(path)
    run = dl.open_run(path, group="256Hz", chunks={})
    make_edf_file(path, seconds=9)
    with pytest.raises(dl.FormatError, match="changed after it was opened"):
        run["value"].values  # noqa: B018


def test_a_file_cut_short_opens_with_its_complete_records(tmp_path: Path) -> None:
    path = tmp_path / "rec.edf"
    exp = make_edf_file(path)
    data = path.read_bytes()
    header_bytes = int(data[184:192])
    record = (len(data) - header_bytes) // 8
    cut = tmp_path / "cut.edf"
    cut.write_bytes(data[:header_bytes + 3 * record + 100])
    with pytest.warns(dl.IncompleteFileWarning, match=r"cut\.edf.*shorter than its header says"):
        tree = dl.open_tree(cut)
    meta = tree.attrs["metadata"]
    assert meta["incomplete"] == {
        "reason": "the file is shorter than its header says (cut short); the complete data "
                  "records are read",
        "records_declared": 8, "records_read": 3, "bytes_unread": 5 * record - 100,
        "bytes_dropped": 100}
    for key, node in exp["nodes"].items():
        run = tree[key.strip("/")].to_dataset()
        n = 3 * int(node["rate"])
        np.testing.assert_array_equal(run["value"].values, node["raw"][:, :n])
        assert run.attrs["metadata"]["incomplete"] == meta["incomplete"]
    events = tree["annotations"].to_dataset()  # pyEDFlib writes annotation i into record i
    assert events["label"].values.tolist() == ["recording start", "blink", "ünïcode marker"]
    np.testing.assert_array_equal(events["time"].values, exp["events"]["times"][:3])


def test_a_file_being_written_opens_with_the_records_so_far(tmp_path: Path) -> None:
    path, copy = tmp_path / "live.edf", tmp_path / "copy.edf"
    w = pyedflib.EdfWriter(str(path), 1, file_type=pyedflib.FILETYPE_EDFPLUS)
    try:
        w.setSignalHeaders([{"label": "x", "dimension": "V", "sample_frequency": 10,
                             "physical_min": -1.0, "physical_max": 1.0, "digital_min": -32768,
                             "digital_max": 32767}])
        for k in range(5):
            w.writeSamples([np.arange(10 * k, 10 * k + 10, dtype=np.int32)], digital=True)
        shutil.copy(path, copy)
    finally:
        w.close()
    assert copy.read_bytes()[236:244] == b"-1      "
    with pytest.warns(dl.IncompleteFileWarning, match="still being written"):
        run = dl.open_run(copy)
    assert run["value"].values.tolist() == [list(range(50))]
    assert run.attrs["metadata"]["incomplete"]["records_read"] == 5


def test_trailing_bytes_after_the_declared_records_are_ignored_and_said(tmp_path: Path) -> None:
    path = tmp_path / "rec.edf"
    exp = make_edf_file(path)
    with path.open("ab") as f:
        f.write(b"\x00" * 77)
    tree = dl.open_tree(path)
    assert tree.attrs["metadata"]["trailing_bytes"] == 77
    assert "incomplete" not in tree.attrs["metadata"]
    np.testing.assert_array_equal(tree["1Hz"].to_dataset()["value"].values, exp["nodes"]["/1Hz"]["raw"])


def _make_discontinuous(path: Path, onsets: list[int]) -> None:
    """An EDF+D file: pyEDFlib writes EDF+C (1 s records, 4 Hz); the reserved field and each
    record's time-keeping annotation are rewritten to place the records at ``onsets`` (s)."""
    w = pyedflib.EdfWriter(str(path), 1, file_type=pyedflib.FILETYPE_EDFPLUS)
    w.setSignalHeaders([{"label": "x", "dimension": "V", "sample_frequency": 4, "physical_min": -1.0,
                         "physical_max": 1.0, "digital_min": -32768, "digital_max": 32767}])
    w.setStartdatetime(START.replace(microsecond=0))
    w.writeSamples([np.arange(4 * len(onsets), dtype=np.int32)], digital=True)
    w.writeAnnotation(onsets[-1] + 0.5, -1, "late")
    w.close()
    data = bytearray(path.read_bytes())
    header_bytes = int(data[184:192])
    annot_bytes = int(data[256 + 2 * 216 + 8: 256 + 2 * 216 + 16]) * 2  # its 2nd signal
    record = 8 + annot_bytes
    assert data[192:197] == b"EDF+C"
    data[192:197] = b"EDF+D"
    for r, onset in enumerate(onsets):
        at = header_bytes + r * record + 8
        slot = bytes(data[at:at + annot_bytes])
        keep = slot.split(b"\x00", 1)[1]  # the annotations after the time-keeping one
        data[at:at + annot_bytes] = (f"+{onset}\x14\x14\x00".encode() + keep)[:annot_bytes].ljust(
            annot_bytes, b"\x00")
    path.write_bytes(bytes(data))


def test_edf_plus_d_records_are_stamped_at_their_onsets(tmp_path: Path) -> None:
    path = tmp_path / "gaps.edf"
    _make_discontinuous(path, [0, 1, 5, 6, 10])
    with pytest.raises(OSError, match="discontinuous"):
        pyedflib.EdfReader(str(path))  # pyEDFlib refuses EDF+D
    tree = dl.open_tree(path)
    assert tree.attrs["metadata"]["edf_type"] == "EDF+D"
    run = tree["4Hz"].to_dataset()
    np.testing.assert_array_equal(run["value"].values, [np.arange(20)])
    start = np.datetime64("2024-03-01T12:30:15", "ns")
    expected = np.concatenate([_times(start + np.timedelta64(s, "s"), 4, 4.0) for s in (0, 1, 5, 6, 10)])
    np.testing.assert_array_equal(run["time"].values, expected)
    assert run.attrs["sample_rate"] == 4.0
    events = tree["annotations"].to_dataset()
    assert events["label"].values.tolist() == ["late"]
    assert events["time"].values[0] == start + np.timedelta64(10_500, "ms")


def test_edf_plus_d_records_that_go_back_in_time_are_a_format_error(tmp_path: Path) -> None:
    path = tmp_path / "back.edf"
    _make_discontinuous(path, [0, 5, 3])
    with pytest.raises(dl.FormatError, match=r"back\.edf.*overlap or go back in time"):
        dl.open_tree(path)


def _edf_header(tmp_path: Path) -> bytearray:
    path = tmp_path / "good.edf"
    make_edf_file(path)
    return bytearray(path.read_bytes())


@pytest.mark.parametrize(("damage", "pattern"), [
    (lambda d: b"", r"cut short inside its EDF/BDF header \(0 of 256 bytes\)"),
    (lambda d: d[:300], r"cut short inside its EDF/BDF header \(300 of 1792 bytes\)"),
    (lambda d: b"0       " + bytes(range(256)) * 8, r"not a whole number"),
    (lambda d: d[:252] + b"x   " + d[256:], r"number of signals is 'x'"),
    (lambda d: d[:168] + b"01:03:24" + d[176:], r"start date '01:03:24'"),
    (lambda d: d[:236] + b"-5      " + d[244:], r"-5 data records"),
    (lambda d: b"RIFF\x00\x00\x00\x00WAVEfmt " + bytes(300), r"not EDF or BDF"),
])
def test_damaged_or_foreign_files_are_format_errors_naming_the_file(
        tmp_path: Path, damage: Any, pattern: str) -> None:
    path = tmp_path / "bad.edf"
    path.write_bytes(bytes(damage(_edf_header(tmp_path))))
    with pytest.raises(dl.FormatError, match=pattern) as info:
        open_edf(path, None)
    assert "bad.edf" in str(info.value)


def test_the_public_calls_refuse_bad_files_with_format_errors(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.edf"
    garbage.write_bytes(b"0       " + b"\xfe" * 400)
    folder = tmp_path / "folder.edf"
    folder.mkdir()
    wav = tmp_path / "sound.edf"
    wav.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(28))
    for path in (garbage, folder, wav):
        with pytest.raises(dl.FormatError, match=path.name):
            dl.open_tree(path)
    empty = tmp_path / "empty.edf"
    empty.write_bytes(b"")
    with pytest.raises(dl.FormatError, match=r"empty\.edf"):
        dl.open_tree(empty)


def test_text_fields_pyedflib_refuses_are_read_and_its_complaint_kept(tmp_path: Path) -> None:
    data = _edf_header(tmp_path)
    data[256:272] = "EEG\x01Fp1 é".encode().ljust(16)  # a control character and UTF-8 in a label
    unit_at = 256 + 6 * (16 + 80)
    assert data[unit_at:unit_at + 8] == b"uV      "
    data[unit_at:unit_at + 8] = b"\xb5V      "  # "µV" in Latin-1, as some devices write it
    path = tmp_path / "latin.edf"
    path.write_bytes(bytes(data))
    with pytest.raises(OSError, match="label is incorrect"):
        pyedflib.EdfReader(str(path))
    tree = dl.open_tree(path)
    run = tree["256Hz"].to_dataset()
    assert run["channel"].values.tolist()[0] == "EEGFp1 é"
    assert run["unit"].values.tolist()[0] == "µV"
    assert run.attrs["metadata"]["renamed"]["EEGFp1 é"] == "EEG\x01Fp1 é"
    assert tree.attrs["metadata"]["compliance"].startswith(
        "pyEDFlib refuses a text field (the file is not EDF(+) or BDF(+) compliant the label is incorrect)")


def test_a_file_whose_structure_pyedflib_refuses_is_a_format_error_with_its_reason(tmp_path: Path) -> None:
    data = _edf_header(tmp_path)
    header_bytes = int(data[184:192])
    record = (len(data) - header_bytes) // 8
    at = header_bytes + 3 * record - 114  # record 2's annotations: its time-keeping TAL first
    assert data[at:at + 12] == b"+2.2500000\x14\x14"
    data[at:at + 3] = b"+2x"
    path = tmp_path / "tal.edf"
    path.write_bytes(bytes(data))
    with pytest.raises(dl.FormatError, match=r"tal\.edf is not a compliant EDF\+C file: pyEDFlib says "
                                             r"'the file is not EDF\(\+\) or BDF\(\+\) compliant \(it "
                                             r"contains format errors\)'"):
        dl.open_tree(path)


def test_a_missing_pyedflib_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "rec.edf"
    make_edf_file(path)
    monkeypatch.setitem(sys.modules, "pyedflib", None)
    with pytest.raises(dl.MissingExtraError, match=r"daqlab\[formats\]"):
        dl.open_tree(path)


# --------------------------------------------------------------------------- truncation sweep

def sweep(path: str, offsets: list[int]) -> None:
    """Open ``path`` cut at each offset (in this process: the test runs it in a subprocess);
    print one JSON line per offset saying what happened and whether the values are a prefix."""
    full = Path(path).read_bytes()
    reference = dl.open_tree(path)
    refs = run_nodes(reference)
    ref_events = reference["annotations"].to_dataset()
    cut = Path(path).with_name("cut" + Path(path).suffix)
    for k in offsets:
        cut.write_bytes(full[:k])
        result: dict[str, Any] = {"offset": k}
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            try:
                tree = dl.open_tree(cut)
            except dl.FormatError as exc:
                result.update(kind="error", ok=cut.name in str(exc))
                print(json.dumps(result), flush=True)
                continue
        meta = tree.attrs["metadata"]
        warned = [w for w in seen if issubclass(w.category, dl.IncompleteFileWarning)]
        ok = ("incomplete" in meta) == (k < len(full)) == bool(warned) and len(seen) == len(warned)
        runs = run_nodes(tree)
        ok &= sorted(runs) == sorted(refs)
        records = meta["records"]
        for key, run in runs.items():
            ref = refs[key]
            n = run.sizes["time"]
            ok &= n == records * int(ref.attrs["sample_rate"])
            ok &= bool(np.array_equal(run["value"].values, ref["value"].values[:, :n]))
            ok &= bool(np.array_equal(run["time"].values, ref["time"].values[:n]))
            ok &= bool(np.array_equal(run["quality"].values, ref["quality"].values[:, :n]))
        events = tree["annotations"].to_dataset() if "annotations" in tree.children else None
        m = 0 if events is None else events.sizes["event"]
        if events is not None:
            ok &= bool(np.array_equal(events["time"].values, ref_events["time"].values[:m]))
            ok &= events["label"].values.tolist() == ref_events["label"].values[:m].tolist()
        result.update(kind="incomplete" if "incomplete" in meta else "complete", records=records,
                      events=m, ok=bool(ok))
        print(json.dumps(result), flush=True)


@pytest.mark.parametrize("kind", ["edf", "bdf"])
def test_a_file_cut_at_any_offset_opens_its_complete_records_or_is_a_format_error(
        tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"rec.{kind}"
    make_edf_file(path, bdf=kind == "bdf")
    size = path.stat().st_size
    header_bytes = int(path.read_bytes()[184:192])
    record = (size - header_bytes) // 8
    offsets = set(range(0, header_bytes + 2, 11)) | {255, 256, 257, header_bytes - 1}
    offsets |= {int(x) for x in np.linspace(header_bytes, size, 60)}
    for r in range(9):  # around every record boundary
        offsets |= {header_bytes + r * record + d for d in (-2, -1, 0, 1, 2)}
    offsets = {k for k in offsets if 0 <= k <= size}
    code = f"from tests.io.test_edf import sweep; sweep({str(path)!r}, {sorted(offsets)!r})"
    done = subprocess.run([sys.executable, "-W", "error", "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["offset"] for r in results] == sorted(offsets)
    assert [r for r in results if not r["ok"]] == []
    for r in results:
        k = r["offset"]
        assert (r["kind"] == "error") == (k < header_bytes), r
        if k >= header_bytes:
            assert r["records"] == (k - header_bytes) // record, r
            assert (r["kind"] == "complete") == (k == size), r
    assert {r["events"] for r in results if r["kind"] != "error"} == {0, 1, 2, 3, 4}


def test_a_scaling_that_overflows_is_a_format_error(tmp_path: Path) -> None:
    data = _edf_header(tmp_path)
    pmin_at, pmax_at = 256 + 6 * (16 + 80 + 8), 256 + 6 * (16 + 80 + 8 + 8)
    data[pmin_at:pmin_at + 8], data[pmax_at:pmax_at + 8] = b"-9e307  ", b"9e307   "
    path = tmp_path / "huge.edf"
    path.write_bytes(bytes(data[:2000]))  # cut short: pyEDFlib does not see it
    with pytest.raises(dl.FormatError, match=r"huge\.edf: signal 0 \('EEG Fp1'\) cannot be a channel"):
        open_edf(path, None)
