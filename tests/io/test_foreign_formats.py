"""What every format of other tools gives (the issue's bars), checked the same way for each: files
written by the format's own library open as a tree of valid runs, save to NetCDF and reopen
identical (values, raw, calibration, units, times, flags), open lazily, go through a
Pipeline, through `daqlab info` and `daqlab convert` and through the xarray engines; a missing
library names the extra; garbage behind the magic is a FormatError naming the file."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

import daqlab as dl
from daqlab.cli import main as cli
from daqlab.io import detect_format
from daqlab.processing import MovingAverage
from daqlab.tree import events_nodes, run_nodes
from tests.io.make_audio import make_flac_file, make_wav_file
from tests.io.make_edf import make_edf_file
from tests.io.make_mdf import make_mdf_file
from tests.io.make_tdms import make_tdms_file
from tests.io.make_xdf import make_xdf_file

# case: (table name, the library's module, file name, maker, xarray engine)
CASES: dict[str, tuple[str, str, str, Callable[[Path], Any], str]] = {
    "tdms": ("tdms", "nptdms", "rig.tdms", make_tdms_file, "daqlab-tdms"),
    "mdf4": ("mdf4", "asammdf", "car.mf4", make_mdf_file, "daqlab-mdf4"),
    "edf": ("edf", "pyedflib", "sleep.edf", make_edf_file, "daqlab-edf"),
    "bdf": ("edf", "pyedflib", "eeg.bdf", functools.partial(make_edf_file, bdf=True), "daqlab-edf"),
    "xdf": ("xdf", "pyxdf", "lab.xdf", make_xdf_file, "daqlab-xdf"),
    "wav": ("wav", "soundfile", "mic.wav", make_wav_file, "daqlab-audio"),
    "flac": ("wav", "soundfile", "mic.flac", make_flac_file, "daqlab-audio"),
}
MAGIC = {"tdms": b"TDSm", "mdf4": b"MDF     4.10    ", "edf": b"0       ", "bdf": b"\xffBIOSEMI",
         "xdf": b"XDF:", "wav": b"RIFF\x00\x01\x00\x00WAVEfmt ", "flac": b"fLaC"}


@pytest.fixture(scope="module", params=list(CASES))
def written(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
            ) -> tuple[str, Path, xr.DataTree]:
    case = request.param
    _, _, name, make, _ = CASES[case]
    path = tmp_path_factory.mktemp(case) / name
    make(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a complete file opens without a word
        tree = dl.open_tree(path)
    return case, path, tree


def _same_tree(a: xr.DataTree, b: xr.DataTree) -> None:
    assert sorted(n.path for n in a.subtree) == sorted(n.path for n in b.subtree)
    for node in a.subtree:
        other = b[node.path]
        assert isinstance(other, xr.DataTree), node.path
        x, y = node.to_dataset(inherit=False), other.to_dataset(inherit=False)
        xr.testing.assert_identical(x, y)
        assert x.attrs == y.attrs, node.path


def test_detected_and_opened_as_a_tree_of_valid_runs(written: tuple[str, Path, xr.DataTree]) -> None:
    case, path, tree = written
    assert detect_format(path) == CASES[case][0]
    runs = run_nodes(tree)
    assert runs, "no run in the tree"
    for key, run in runs.items():
        dl.validate(run)
        assert run.sizes["time"] > 0, key
        assert run.attrs["metadata"] is not None
    assert tree.attrs["metadata"].get("format") == CASES[case][0] or list(runs) == ["/"]
    again = dl.open_tree(path)
    _same_tree(tree, again)  # the same file opens the same way (ids too)


def test_saved_to_netcdf_and_reopened_identical(written: tuple[str, Path, xr.DataTree],
                                                tmp_path: Path) -> None:
    _, _, tree = written
    back = dl.open_tree(dl.save(tree, tmp_path / "copy.nc"))
    _same_tree(tree, back)
    for key, run in run_nodes(tree).items():
        one = dl.open_run(dl.save(run, tmp_path / f"{key.strip('/') or 'root'}.nc"))
        xr.testing.assert_identical(one, run)


def test_opened_lazily_to_the_same_values(written: tuple[str, Path, xr.DataTree]) -> None:
    _, path, tree = written
    lazy = dl.open_tree(path, chunks={})
    for key, run in run_nodes(lazy).items():
        assert run["value"].chunks is not None, key
        xr.testing.assert_identical(run.compute(), run_nodes(tree)[key])


def test_a_pipeline_runs_on_every_node(written: tuple[str, Path, xr.DataTree]) -> None:
    _, _, tree = written
    out = dl.Pipeline([MovingAverage(2)]).apply(tree)
    for key, run in run_nodes(tree).items():
        got = run_nodes(out)[key]
        v, q = run["value"].values, run["quality"].values
        good = (q[:, 1:] == dl.Quality.GOOD) & (q[:, :-1] == dl.Quality.GOOD)
        np.testing.assert_allclose(got["value"].values[:, 1:][good], ((v[:, 1:] + v[:, :-1]) / 2)[good],
                                   rtol=1e-12, atol=1e-12)
    for key, ev in events_nodes(tree).items():
        xr.testing.assert_identical(events_nodes(out)[key], ev)


def test_open_run_takes_a_group_or_names_them(written: tuple[str, Path, xr.DataTree]) -> None:
    _, path, tree = written
    runs = run_nodes(tree)
    for key, run in runs.items():
        xr.testing.assert_identical(dl.open_run(path, group=key), run)
    if len(runs) > 1:
        with pytest.raises(dl.NotFoundError, match=r"holds \d+ runs \(groups \["):
            dl.open_run(path)
    else:
        xr.testing.assert_identical(dl.open_run(path), next(iter(runs.values())))


def test_daqlab_info_and_convert(written: tuple[str, Path, xr.DataTree], tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    case, path, tree = written
    assert cli(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"format     {CASES[case][0]} (" in out
    runs = run_nodes(tree)
    if len(runs) > 1:
        for key in runs:
            assert f"\ngroup {key}\n" in out, (key, out)
    assert cli(["convert", str(path), str(tmp_path / "c.nc")]) == 0
    _same_tree(tree, dl.open_tree(tmp_path / "c.nc"))


def test_the_xarray_engine_opens_the_tree_and_each_group(written: tuple[str, Path, xr.DataTree]) -> None:
    case, path, tree = written
    engine = CASES[case][4]
    theirs = xr.open_datatree(path, engine=engine)
    _same_tree(tree, theirs)
    key, run = next(iter(run_nodes(tree).items()))
    with xr.open_dataset(path, engine=engine, group=key) as ds:
        xr.testing.assert_identical(ds.load(), run)


def test_a_missing_library_names_the_extra(written: tuple[str, Path, xr.DataTree]) -> None:
    case, path, _ = written
    module = CASES[case][1]
    code = (f"import sys; sys.modules[{module!r}] = None\n"
            "import daqlab as dl\n"
            f"try:\n    dl.open_tree({str(path)!r})\n"
            "except dl.MissingExtraError as e:\n    print('MISSING', e)\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=env)
    assert proc.returncode == 0, proc.stderr
    if case == "xdf":  # daqlab's own parser reads XDF (pyxdf is only the tests' reference)
        assert proc.stdout == "", proc.stdout
        return
    assert proc.stdout.startswith("MISSING"), proc.stdout + proc.stderr
    assert "pip install 'daqlab[formats]'" in proc.stdout


@pytest.mark.parametrize("case", list(CASES))
def test_garbage_behind_the_magic_is_a_format_error(case: str, tmp_path: Path) -> None:
    path = tmp_path / CASES[case][2]
    rng = np.random.default_rng(1)
    for tail in (b"", bytes(300), rng.integers(0, 256, 3000, dtype=np.uint8).tobytes()):
        path.write_bytes(MAGIC[case] + tail)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", dl.IncompleteFileWarning)
            with pytest.raises(dl.FormatError) as info:
                dl.open_tree(path)
        assert path.name in str(info.value), str(info.value)
