"""WAV and FLAC files (written with soundfile) open as one run: raw PCM with its scaling."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.signal
import soundfile as sf  # type: ignore[import-untyped]
import xarray as xr

import daqlab as dl
from daqlab.io._audio import open_audio
from daqlab.io._foreign import content_id
from tests.io.make_audio import PCM, RATE, make_flac_file, make_wav_file

ROOT = Path(__file__).resolve().parents[2]
EPOCH = np.datetime64(0, "ns")


def _times(start: np.datetime64, n: int) -> Any:
    return start + (np.arange(n) * (10**9 // RATE)).astype("timedelta64[ns]")


def _check_pcm(path: Path, exp: dict[str, Any], subtype: str, container: str) -> xr.Dataset:
    node = exp["nodes"]["/"]
    tree = dl.open_tree(path)
    run = tree.to_dataset()  # the root is the run
    dl.validate(run)
    assert run["channel"].values.tolist() == node["channels"]
    np.testing.assert_array_equal(run["value"].values, node["raw"])
    assert run["cal_slope"].values.tolist() == node["slope"]
    assert run["cal_offset"].values.tolist() == node["offset"]
    assert run["unit"].values.tolist() == node["units"]
    assert run["range_min"].values.tolist() == [-1.0] * len(node["channels"])
    assert run["range_max"].values.tolist() == [1.0] * len(node["channels"])
    assert (run["quality"].values == 0).all()
    np.testing.assert_array_equal(run["time"].values, _times(EPOCH, node["raw"].shape[1]))
    assert run.attrs["sample_rate"] == RATE
    assert run.attrs["calibrated"] is False
    assert run.attrs["id"] == content_id(path)
    assert run.attrs["name"] == path.stem
    assert run.attrs["created_at"] == "1970-01-01T00:00:00.000000Z"
    meta = run.attrs["metadata"]
    assert (meta["format"], meta["file"], meta["container"], meta["subtype"]) == (
        "wav", path.name, container, subtype)
    assert meta["frames"] == node["raw"].shape[1]
    assert meta["channels"] == len(node["channels"])
    assert meta["start"].startswith("not stored in the file: the epoch")
    assert "incomplete" not in meta
    # physical values are soundfile's float read, exactly
    physical = dl.calibrate(run)["value"].values
    np.testing.assert_array_equal(physical, node["values"])
    np.testing.assert_array_equal(physical, sf.read(str(path), always_2d=True)[0].T)
    return run


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("subtype", ["PCM_U8", "PCM_16", "PCM_24", "PCM_32"])
def test_integer_pcm_wav_is_kept_raw_with_its_full_scale_scaling(
        tmp_path: Path, subtype: str, channels: int) -> None:
    path = tmp_path / "tone.wav"
    exp = make_wav_file(path, subtype=subtype, channels=channels)
    run = _check_pcm(path, exp, subtype, "WAV")
    lo, hi, _, _ = PCM[subtype]
    assert run["value"].values.min() == lo
    assert run["value"].values.max() == hi
    if subtype in ("PCM_16", "PCM_24", "PCM_32"):  # soundfile's int32 read: left-justified raw
        ints = sf.read(str(path), dtype="int32", always_2d=True)[0].T.astype(np.int64)
        np.testing.assert_array_equal(ints, run["value"].values.astype(np.int64) << (32 - int(
            {"PCM_16": 16, "PCM_24": 24, "PCM_32": 32}[subtype])))


@pytest.mark.parametrize("subtype", ["PCM_S8", "PCM_16", "PCM_24"])
def test_flac_is_kept_raw_with_its_full_scale_scaling(tmp_path: Path, subtype: str) -> None:
    path = tmp_path / "tone.flac"
    exp = make_flac_file(path, subtype=subtype)
    _check_pcm(path, exp, subtype, "FLAC")


@pytest.mark.parametrize("subtype", ["FLOAT", "DOUBLE"])
def test_float_wav_keeps_its_values_nan_bad_and_beyond_full_scale_suspect(
        tmp_path: Path, subtype: str) -> None:
    path = tmp_path / "float.wav"
    exp = make_wav_file(path, subtype=subtype, channels=3)
    run = dl.open_run(path)
    np.testing.assert_array_equal(run["value"].values, exp["nodes"]["/"]["values"])
    assert np.isnan(run["value"].values[0, 5])
    assert run["cal_slope"].values.tolist() == [1.0] * 3
    assert run["cal_offset"].values.tolist() == [0.0] * 3
    bad = np.argwhere(run["quality"].values != 0).tolist()
    assert bad == [[0, 5], [2, 6]]
    assert run["quality"].values[0, 5] == dl.Quality.BAD
    assert run["quality"].values[2, 6] == dl.Quality.SUSPECT
    assert run.attrs["metadata"]["subtype"] == subtype


@pytest.mark.parametrize("subtype", ["ULAW", "ALAW", "IMA_ADPCM"])
def test_other_encodings_are_decoded_and_calibrated(tmp_path: Path, subtype: str) -> None:
    path = tmp_path / "coded.wav"
    x = 0.8 * np.sin(np.arange(2000) / 10.0)
    sf.write(str(path), np.stack([x, -x]).T, RATE, subtype=subtype)
    run = dl.open_run(path)
    np.testing.assert_array_equal(run["value"].values, sf.read(str(path), always_2d=True)[0].T)
    assert run.attrs["calibrated"] is True
    assert run.attrs["metadata"]["conversions"] == {
        ch: f"applied: decoded {subtype} to full-scale floats" for ch in ("ch0", "ch1")}
    with pytest.raises(dl.AlreadyCalibratedError):
        dl.calibrate(run)


def _with_bext(path: Path, date: bytes, clock: bytes) -> None:
    """Insert a Broadcast WAV bext chunk (written by hand: soundfile has no API for it)
    before the data chunk of the WAV file ``path``."""
    data = path.read_bytes()
    body = (b"bench take 3".ljust(256, b"\x00") + b"daqlab".ljust(32, b"\x00")
            + b"REF-42".ljust(32, b"\x00") + date + clock + struct.pack("<IIH", 48_000, 0, 1)
            + bytes(64 + 10 + 180) + b"A=PCM,F=8000,W=24\r\n")
    chunk = b"bext" + struct.pack("<I", len(body)) + body + b"\x00" * (len(body) & 1)
    at = data.index(b"data")
    out = data[:at] + chunk + data[at:]
    path.write_bytes(out[:4] + struct.pack("<I", len(out) - 8) + out[8:])


def test_a_bext_chunk_gives_the_start_and_its_fields(tmp_path: Path) -> None:
    path = tmp_path / "bwf.wav"
    exp = make_wav_file(path, subtype="PCM_24", channels=2)
    _with_bext(path, b"2024-05-06", b"07:08:09")
    run = dl.open_run(path)
    start = np.datetime64("2024-05-06T07:08:09", "ns")
    np.testing.assert_array_equal(run["time"].values, _times(start, 4000))
    np.testing.assert_array_equal(run["value"].values, exp["nodes"]["/"]["raw"])
    assert run.attrs["created_at"] == "2024-05-06T07:08:09.000000Z"
    meta = run.attrs["metadata"]
    assert meta["start"].startswith("the bext chunk's origination date and time, taken as UTC")
    assert meta["bext"] == {"description": "bench take 3", "originator": "daqlab",
                            "originator_reference": "REF-42", "origination_date": "2024-05-06",
                            "origination_time": "07:08:09", "time_reference": 48_000,
                            "version": 1, "coding_history": "A=PCM,F=8000,W=24"}
    _with_bext(path, b"yesterday!", b"noon-ish")
    assert dl.open_run(path)["time"].values[0] == start  # the first bext chunk counts


def test_a_bext_chunk_with_an_unreadable_date_leaves_the_epoch_and_says_why(tmp_path: Path) -> None:
    path = tmp_path / "bwf.wav"
    make_wav_file(path, subtype="PCM_16", channels=1)
    _with_bext(path, b"yesterday!", b"noon-ish")
    run = dl.open_run(path)
    assert run["time"].values[0] == EPOCH
    assert "'yesterday!'" in run.attrs["metadata"]["start"]


def test_the_title_names_the_run_and_string_tags_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "tagged.flac"
    with sf.SoundFile(str(path), "w", RATE, 1, "PCM_16") as f:
        f.title = "Tuning fork"
        f.artist = "daqlab"
        f.write(np.zeros(100, np.int16))
    run = dl.open_run(path)
    assert run.attrs["name"] == "Tuning fork"
    assert run.attrs["metadata"]["tags"] == {"title": "Tuning fork", "artist": "daqlab"}


def test_rf64_opens_like_wav(tmp_path: Path) -> None:
    path = tmp_path / "big.wav"
    raw = np.arange(-300, 300, dtype=np.int16).reshape(300, 2)
    sf.write(str(path), raw, RATE, subtype="PCM_16", format="RF64")
    assert path.read_bytes()[:4] == b"RF64"
    run = dl.open_run(path)
    np.testing.assert_array_equal(run["value"].values, raw.T)
    assert run.attrs["metadata"]["container"] == "RF64"
    assert "incomplete" not in run.attrs["metadata"]


def test_open_audio_gives_a_tree_whose_root_is_the_run(tmp_path: Path) -> None:
    path = tmp_path / "tone.wav"
    exp = make_wav_file(path)
    tree = open_audio(path, None)
    assert isinstance(tree, xr.DataTree)
    assert not tree.children
    np.testing.assert_array_equal(tree["value"].values, exp["nodes"]["/"]["raw"])
    np.testing.assert_array_equal(dl.open_run(path, group="/")["value"].values,
                                  exp["nodes"]["/"]["raw"])


@pytest.mark.parametrize("kind", ["wav", "flac", "float"])
def test_a_run_survives_a_netcdf_round_trip(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"tone.{'flac' if kind == 'flac' else 'wav'}"
    if kind == "flac":
        make_flac_file(path)
    else:
        make_wav_file(path, subtype="FLOAT" if kind == "float" else "PCM_24")
    run = dl.open_run(path)
    back = dl.open_run(dl.save(run, tmp_path / "n.nc"))
    xr.testing.assert_identical(back.reset_coords(drop=False)[["value", "quality"]],
                                run.reset_coords(drop=False)[["value", "quality"]])
    xr.testing.assert_identical(back.coords.to_dataset(), run.coords.to_dataset())
    assert back.attrs == run.attrs


def test_a_pipeline_runs_on_it_as_scipy_does(tmp_path: Path) -> None:
    path = tmp_path / "tone.flac"
    exp = make_flac_file(path, subtype="PCM_24")
    run = dl.calibrate(dl.open_run(path, chunks={"time": 3000}))
    out = dl.Pipeline([lambda r: dl.processing.lowpass(r, 1000.0, order=4)]).apply(run)
    sos = scipy.signal.butter(4, 1000.0, "lowpass", fs=RATE, output="sos")
    expected = scipy.signal.sosfiltfilt(sos, exp["nodes"]["/"]["values"], axis=-1)
    np.testing.assert_allclose(out["value"].values, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("chunks", [{}, {"time": 333}, "auto", {"channel": 1, "time": 1000}])
@pytest.mark.parametrize("kind", ["PCM_24", "FLOAT", "FLAC"])
def test_chunks_give_dask_arrays_that_compute_to_the_same_values(
        tmp_path: Path, kind: str, chunks: Any) -> None:
    path = tmp_path / ("tone.flac" if kind == "FLAC" else "tone.wav")
    exp = (make_flac_file(path) if kind == "FLAC" else make_wav_file(path, subtype=kind))
    lazy = dl.open_run(path, chunks=chunks)
    assert lazy["value"].chunks is not None
    assert lazy["quality"].chunks is not None
    if chunks == {"time": 333}:
        assert lazy["value"].chunks[1][:2] == (333, 333)
    eager = dl.open_run(path)
    xr.testing.assert_identical(lazy.compute(), eager)
    np.testing.assert_array_equal(lazy["value"][:, 1234:2345].values,
                                  exp["nodes"]["/"]["raw"][:, 1234:2345])
    tree = dl.open_tree(path, chunks=chunks)
    assert tree["value"].chunks is not None


def test_a_lazy_run_refuses_a_file_changed_after_it_was_opened(tmp_path: Path) -> None:
    path = tmp_path / "tone.wav"
    make_wav_file(path)
    run = dl.open_run(path, chunks={})
    make_wav_file(path, frames=5000)
    with pytest.raises(dl.FormatError, match="changed after it was opened"):
        run["value"].values  # noqa: B018


def test_a_wav_cut_short_opens_with_its_complete_frames(tmp_path: Path) -> None:
    path = tmp_path / "tone.wav"
    exp = make_wav_file(path, subtype="PCM_24", channels=3)  # 9 bytes a frame
    data = path.read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[:44 + 9 * 1000 + 4])
    with pytest.warns(dl.IncompleteFileWarning, match=r"cut\.wav.*shorter than its data chunk says"):
        run = dl.open_run(cut)
    np.testing.assert_array_equal(run["value"].values, exp["nodes"]["/"]["raw"][:, :1000])
    assert run.attrs["metadata"]["incomplete"] == {
        "reason": "the file is shorter than its data chunk says (cut short); the complete frames "
                  "are read",
        "bytes_unread": 9 * 3000 - 4, "bytes_dropped": 4, "frames_declared": 4000}


def test_a_wav_never_finalised_opens_with_the_frames_written(tmp_path: Path) -> None:
    path, copy = tmp_path / "live.wav", tmp_path / "copy.wav"
    raw = np.arange(2000, dtype=np.int16).reshape(1000, 2)
    with sf.SoundFile(str(path), "w", RATE, 2, "PCM_16") as f:
        f.write(raw)
        f.flush()
        shutil.copy(path, copy)
    assert copy.read_bytes()[40:44] == b"\x00\x00\x00\x00"  # the data chunk's size
    with pytest.warns(dl.IncompleteFileWarning, match="never finalised"):
        run = dl.open_run(copy)
    np.testing.assert_array_equal(run["value"].values, raw.T)


def test_a_flac_stream_damaged_in_the_middle_opens_with_the_frames_before(tmp_path: Path) -> None:
    path = tmp_path / "tone.flac"
    exp = make_flac_file(path, frames=40_000)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(64)
    path.write_bytes(bytes(data))
    with pytest.warns(dl.IncompleteFileWarning, match="stops decoding before its end"):
        run = dl.open_run(path)
    n = run.sizes["time"]
    assert 4096 <= n < 40_000
    np.testing.assert_array_equal(run["value"].values, exp["nodes"]["/"]["raw"][:, :n])
    meta = run.attrs["metadata"]["incomplete"]
    assert meta["frames_read"] == n
    assert meta["frames_declared"] == 40_000


def test_a_flac_never_finalised_opens_with_the_frames_that_decode(tmp_path: Path) -> None:
    path, copy = tmp_path / "live.flac", tmp_path / "copy.flac"
    raw = (np.arange(40_000) % 1000 - 500).astype(np.int16).reshape(20_000, 2)
    with sf.SoundFile(str(path), "w", RATE, 2, "PCM_16") as f:
        f.write(raw)
        f.flush()
        shutil.copy(path, copy)
    with pytest.warns(dl.IncompleteFileWarning, match="gives no length"):
        run = dl.open_run(copy)
    n = run.sizes["time"]
    assert n > 0
    np.testing.assert_array_equal(run["value"].values, raw.T[:, :n])


@pytest.mark.parametrize(("name", "content", "pattern"), [
    ("empty.wav", b"", r"empty\.wav is not a run daqlab can read"),
    ("riff.wav", b"RIFF\x10\x00\x00\x00WAVE" + bytes(4), r"riff\.wav is cut short inside its header"),
    ("junk.wav", b"RIFF\x10\x00\x00\x00WAVE" + bytes(range(200)), r"junk\.wav"),
    ("nofmt.wav", b"RIFF\x10\x00\x00\x00WAVEdata\x04\x00\x00\x00abcd", r"nofmt\.wav.*no valid 'fmt '"),
    ("avi.wav", b"RIFF\x10\x00\x00\x00AVI LIST" + bytes(100), r"avi\.wav is not a run daqlab can read"),
    ("text.flac", b"timestamp,value\n1,2\n", r"text\.flac"),
    ("junk.flac", b"fLaC" + bytes(range(200)), r"junk\.flac is not a FLAC stream"),
    ("cut.flac", b"fLaC\x00\x00\x00\x22" + bytes(10), r"cut\.flac is cut short inside its header"),
])
def test_wrong_input_is_a_format_error_naming_the_file(
        tmp_path: Path, name: str, content: bytes, pattern: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(dl.FormatError, match=pattern):
        dl.open_tree(path)


def test_a_folder_is_a_format_error(tmp_path: Path) -> None:
    folder = tmp_path / "take.wav"
    folder.mkdir()
    with pytest.raises(dl.FormatError, match=r"take\.wav"):
        dl.open_run(folder)


def test_a_missing_soundfile_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "tone.wav"
    make_wav_file(path)
    monkeypatch.setitem(sys.modules, "soundfile", None)
    with pytest.raises(dl.MissingExtraError, match=r"daqlab\[formats\]"):
        dl.open_run(path)


# --------------------------------------------------------------------------- truncation sweep

def sweep(path: str, offsets: list[int]) -> None:
    """Open ``path`` cut at each offset (in this process: the test runs it in a subprocess);
    print one JSON line per offset saying what happened and whether the values are a prefix."""
    full = Path(path).read_bytes()
    reference = dl.open_run(path)
    cut = Path(path).with_name("cut" + Path(path).suffix)
    for k in offsets:
        cut.write_bytes(full[:k])
        result: dict[str, Any] = {"offset": k}
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            try:
                run = dl.open_run(cut)
            except dl.FormatError as exc:
                result.update(kind="error", ok=cut.name in str(exc))
                print(json.dumps(result), flush=True)
                continue
        meta = run.attrs["metadata"]
        warned = [w for w in seen if issubclass(w.category, dl.IncompleteFileWarning)]
        ok = ("incomplete" in meta) == (k < len(full)) == bool(warned) and len(seen) == len(warned)
        n = run.sizes["time"]
        ok &= bool(np.array_equal(run["value"].values, reference["value"].values[:, :n], equal_nan=True))
        ok &= bool(np.array_equal(run["quality"].values, reference["quality"].values[:, :n]))
        ok &= bool(np.array_equal(run["time"].values, reference["time"].values[:n]))
        result.update(kind="incomplete" if "incomplete" in meta else "complete", frames=n, ok=bool(ok))
        print(json.dumps(result), flush=True)


def _run_sweep(path: Path, offsets: set[int]) -> list[dict[str, Any]]:
    code = f"from tests.io.test_audio import sweep; sweep({str(path)!r}, {sorted(offsets)!r})"
    done = subprocess.run([sys.executable, "-W", "error", "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["offset"] for r in results] == sorted(offsets)
    assert [r for r in results if not r["ok"]] == []
    return results


@pytest.mark.parametrize(("subtype", "channels", "header"), [("PCM_24", 3, 44), ("FLOAT", 1, 80)])
def test_a_wav_cut_at_every_offset_opens_its_complete_frames_or_is_a_format_error(
        tmp_path: Path, subtype: str, channels: int, header: int) -> None:
    path = tmp_path / "tone.wav"
    make_wav_file(path, subtype=subtype, channels=channels, frames=50)
    size = path.stat().st_size
    frame = channels * (3 if subtype == "PCM_24" else 4)
    assert size == header + 50 * frame
    results = _run_sweep(path, set(range(size + 1)))
    for r in results:
        k = r["offset"]
        assert (r["kind"] == "error") == (k < header), r
        if k >= header:
            assert r["frames"] == (k - header) // frame, r
            assert (r["kind"] == "complete") == (k == size), r


def test_a_flac_cut_anywhere_opens_a_prefix_of_its_frames_or_is_a_format_error(tmp_path: Path) -> None:
    path = tmp_path / "tone.flac"
    make_flac_file(path, frames=20_000)
    size = path.stat().st_size
    data = path.read_bytes()
    audio = data.index(b"\xff\xf8", 42)  # the first frame's sync code, after the metadata blocks
    offsets = set(range(audio + 3)) | {int(x) for x in np.linspace(audio, size, 80)} | {size - 1, size}
    results = _run_sweep(path, offsets)
    for r in results:
        assert (r["kind"] == "error") == (r["offset"] < audio), r
    frames = [r["frames"] for r in results if r["kind"] != "error"]
    assert frames == sorted(frames)
    assert frames[-1] == 20_000
    assert frames[-2] >= 20_000 - 4096


def test_a_flac_damaged_in_the_middle_opened_lazily_fails_when_read_with_a_format_error(
        tmp_path: Path) -> None:
    # its last frame decodes, so it opens as whole; the damage shows when the frames are read
    path = tmp_path / "tone.flac"
    exp = make_flac_file(path, frames=40_000)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(64)
    path.write_bytes(bytes(data))
    run = dl.open_run(path, chunks={"time": 4096})
    np.testing.assert_array_equal(run["value"][:, :4096].values, exp["nodes"]["/"]["raw"][:, :4096])
    with pytest.raises(dl.FormatError, match=r"tone\.flac: reading frames .* failed"):
        run["value"].values  # noqa: B018
