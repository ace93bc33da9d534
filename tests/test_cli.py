"""The ``daqlab`` command line: bad arguments and paths end with exit code 2 and one message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import xarray as xr

import daqlab as dl
from daqlab.cli import MAX_DEMO_CHANNELS
from daqlab.cli import main as cli


def run_cli(args: list[str]) -> int:
    """``daqlab ARGS`` in this process; argparse's refusals exit, so their code is returned too."""
    try:
        return cli(args)
    except SystemExit as exc:
        return int(exc.code or 0)


def test_demo_refuses_an_out_path_that_is_a_file(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    afile = tmp_path / "afile"
    afile.write_text("precious")
    for out in (afile, afile / "sub"):
        assert run_cli(["demo", "--out", str(out), "--quiet", "--no-plot"]) == 2  # was FileExistsError
        err = capsys.readouterr().err
        assert "daqlab demo: error: [Errno " in err
        assert f"--out {out}: cannot make the run folder there (it, or a folder on the way, is a file)" in err
    too_long = tmp_path / ("a" * 300)
    assert run_cli(["demo", "--out", str(too_long), "--quiet", "--no-plot"]) == 2
    err = capsys.readouterr().err
    assert "daqlab demo: error: [Errno 36] cannot make the run folder " in err
    assert "File name too long; a file name may have at most 255 bytes" in err
    assert afile.read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_demo_makes_a_missing_out_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "new" / "runs"
    assert run_cli(["demo", "--out", str(out), "--seconds", "0.05", "--rate", "200", "--channels", "1",
                    "--quiet", "--no-plot"]) == 0
    (path,) = out.glob("*.nc")
    assert f"file       {path}" in capsys.readouterr().out
    assert dl.open_run(path).sizes["time"] == 10


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seconds", "inf"], "argument --seconds: must be a finite number > 0, got inf"),
        (["--seconds", "nan"], "argument --seconds: must be a finite number > 0, got nan"),
        (["--seconds", "-1"], "argument --seconds: must be a finite number > 0, got -1"),
        (["--rate", "inf"], "argument --rate: must be a finite number > 0, got inf"),
        (["--rate", "NaN"], "argument --rate: must be a finite number > 0, got NaN"),
        (["--rate", "ten"], "argument --rate: 'ten' is not a finite number"),
        (["--channels", "0"], "argument --channels: must be a whole number > 0, got 0"),
        (["--channels", "1.5"], "argument --channels: '1.5' is not a whole number"),
        (["--channels", str(MAX_DEMO_CHANNELS + 1)],
         f"argument --channels: must be at most {MAX_DEMO_CHANNELS}, got {MAX_DEMO_CHANNELS + 1}"),
        (["--seconds", "1e300", "--rate", "1e300"],
         "--seconds 1e+300 at --rate 1e+300 gives more samples than a float counts"),
        (["--seconds", "1e-9", "--rate", "10"], "gives no samples"),
    ],
    ids=["seconds-inf", "seconds-nan", "seconds-negative", "rate-inf", "rate-nan", "rate-text",
         "channels-0", "channels-fraction", "channels-too-many", "samples-overflow", "no-samples"],
)
def test_demo_refuses_bad_numbers(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                  args: list[str], message: str) -> None:
    out = tmp_path / "runs"
    assert run_cli(["demo", *args, "--out", str(out), "--quiet", "--no-plot"]) == 2
    err = capsys.readouterr().err
    assert "daqlab demo: error: " in err and message in err  # noqa: PT018
    assert not out.exists()


def test_demo_with_infinite_seconds_exits_2_without_a_traceback(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "daqlab", "demo", "--seconds", "inf", "--quiet",
                           "--out", str(tmp_path / "runs")],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stderr  # was 1, OverflowError
    assert "Traceback" not in done.stderr
    assert "daqlab demo: error: argument --seconds: must be a finite number > 0, got inf" in done.stderr


def test_convert_a_seed_file_with_latin1_metadata_to_csv(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    src, dst = tmp_path / "latin1.h5", tmp_path / "latin1.csv"
    with h5py.File(src, "w") as f:
        g = f.create_group("data/temp")
        g["timestamps"] = 1.7e9 + np.arange(3) / 10
        g["values"] = np.arange(3.0)
        f.create_group("metadata").attrs["site"] = b"M\xfcnchen"
    assert run_cli(["convert", str(src), str(dst)]) == 0  # was a UnicodeEncodeError traceback
    assert f"-> csv {dst} (1 channels x 3 samples)" in capsys.readouterr().out
    xr.testing.assert_identical(dl.open_run(dst), dl.open_run(src))


def test_convert_a_run_of_no_channels_to_csv_and_back(tmp_path: Path) -> None:
    src = tmp_path / "e.h5"
    with h5py.File(src, "w") as f:
        f.create_group("data")
        f.create_group("metadata")
    for fmt in ("csv", "csv-wide"):
        dst = tmp_path / f"{fmt}.csv"
        assert run_cli(["convert", str(src), str(dst), "--format", fmt]) == 0
        assert run_cli(["info", str(dst)]) == 0  # was "header line is damaged: no channels"
        xr.testing.assert_identical(dl.open_run(dst), dl.open_run(src))


def _foreign_or_damaged(kind: str, folder: Path) -> tuple[Path, str]:
    """A file daqlab must refuse, and the start of what it must say."""
    path = folder / f"{kind}.h5"
    if kind == "plain-hdf5":
        with h5py.File(path, "w") as f:
            f["x"] = np.arange(3)
        return path, (f"{path} is an HDF5 file that is neither a netCDF-4 file nor the seed's layout: "
                      "it has datasets ['x (3,) int64']. daqlab reads its own NetCDF4 runs")
    dl.save(dl.make_run([[1.0, 2.0]], ["a"], sample_rate=1.0), path)
    with h5py.File(path, "r+") as f:  # xarray then warned about phony_dims before it failed
        del f["value"]
        f["value"] = np.arange(3.0)
    return path, f"{path} is a damaged daqlab run: variable 'value' has shape (3,) and dtype float64"


@pytest.mark.parametrize("kind", ["plain-hdf5", "damaged-netcdf"])
@pytest.mark.parametrize("command", ["info", "convert"])
def test_a_foreign_or_damaged_hdf5_file_gives_one_error_line(tmp_path: Path, kind: str,
                                                             command: str) -> None:
    # was: "... is a NetCDF file but not a daqlab run" after xarray's UserWarnings on stderr
    path, message = _foreign_or_damaged(kind, tmp_path)
    args = [str(path)] if command == "info" else [str(path), str(tmp_path / "out.csv")]
    done = subprocess.run([sys.executable, "-m", "daqlab", command, *args],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"daqlab {command}: error: {message}")
    assert "Warning" not in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out.csv").exists()


def test_info_counts_flags_outside_quality(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`daqlab info` opens lazily, where flags outside 0..3 open as stored: they are counted."""
    path = dl.save(dl.make_run(np.zeros((1, 4)), ["a"], sample_rate=1.0), tmp_path / "q.nc")
    with h5py.File(path, "r+") as f:
        f["quality"][0, 1:3] = 7
    assert run_cli(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "quality    good 2, suspect 0, bad 0, interpolated 0, not a Quality flag 2" in out


def _tree_file(folder: Path) -> Path:
    from daqlab.tree import make_events, make_tree

    fast = dl.make_run(np.arange(6.0).reshape(2, 3), ["a", "b"], sample_rate=100.0, start="2024-01-01")
    slow = dl.make_run([[np.nan, 1.0]], [dl.Channel("t", "degC")], sample_rate=1.0, start="2024-01-01")
    ev = make_events(np.array(["2024-01-01T00:00:00.5"], "datetime64[ns]"), ["go"], name="markers")
    return dl.save(make_tree({"fast": fast, "slow": slow, "markers": ev}, name="rig"),
                   folder / "rig.nc")


def test_info_lists_a_trees_groups_and_events(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["info", str(_tree_file(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert "tree       rig" in out
    assert "groups     2 run(s): /fast, /slow; 1 events node(s): /markers" in out
    assert "group /fast\n  run " in out and "  samples    3 per channel at 100 Hz" in out  # noqa: PT018
    assert "group /slow" in out and "  quality    good 1, suspect 0, bad 1, interpolated 0" in out  # noqa: PT018
    assert "events /markers\n  1 event(s), 2024-01-01T00:00:00.500000000" in out
    assert "format     netcdf" in out


def test_convert_keeps_a_tree_in_netcdf_and_refuses_csv(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    src = _tree_file(tmp_path)
    assert run_cli(["convert", str(src), str(tmp_path / "copy.nc")]) == 0
    assert "(/fast: 2 channels x 3 samples, /slow: 1 channels x 2 samples)" in capsys.readouterr().out
    a, b = dl.open_tree(src), dl.open_tree(tmp_path / "copy.nc")
    for key in ("fast", "slow", "markers"):
        xr.testing.assert_identical(a[key].to_dataset(), b[key].to_dataset())
    assert run_cli(["convert", str(src), str(tmp_path / "copy.csv")]) == 2
    assert "csv holds one run, and this tree has 2" in capsys.readouterr().err
    assert not (tmp_path / "copy.csv").exists()
