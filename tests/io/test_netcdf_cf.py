"""Our NetCDF files are read by tools we did not write: CF checker, ncdump, h5dump, xarray."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import daqlab as dl
from tests.helpers import require_tool


def _rich() -> xr.Dataset:
    chans = [
        dl.Channel("ai0", "V", range=(-10, 10)),
        dl.Channel("Kühlwasser °C", "degC", calibration=dl.Calibration(100.0, -50.0, "2026-01-15")),
        dl.Channel("x, \"quoted\" 'name'", ""),
    ]
    v = np.random.default_rng(1).normal(size=(3, 500))
    v[0, 3], v[1, 4], v[2, 5], v[0, 6] = np.nan, np.inf, -np.inf, 99.0
    return dl.make_run(v, chans, sample_rate=1000.0, name="rich", metadata={"op": "Ada", "n": [1, 2]},
                       start="2026-11-24T06:00:00.000000001")


def _recorded(folder: Path) -> tuple[xr.Dataset, Path]:
    """A recording consolidated into .nc by the recorder (the same writer as ``dl.save``)."""
    times = np.datetime64("2026-11-24T06:00:00.000000001", "ns") + np.arange(300).astype("timedelta64[ms]")
    values = np.random.default_rng(2).normal(size=(2, 300))
    buf = dl.RingBuffer(2, 1000, 1000.0, start="2026-11-24T06:00:00")
    rec = dl.Recorder(buf, folder / "recording.nc", flush_interval=0.01)
    rec.start()
    buf.push(values, times)
    rec.flush_through(buf.written)
    path = rec.close()
    return dl.make_run(values, 2, sample_rate=1000.0, times=times), path


def _demo(folder: Path) -> tuple[xr.Dataset, Path]:
    """What `daqlab demo` leaves: a simulated acquisition recorded and consolidated."""
    from daqlab.cli import main

    out = folder / "demo"
    assert main(["demo", "--seconds", "0.2", "--channels", "3", "--rate", "2000", "--out", str(out),
                 "--quiet", "--no-plot"]) == 0
    [path] = out.glob("*.nc")
    return dl.open_run(path), path


# How each run is written; a run built with make_run and nothing else first
SAVERS: dict[str, Callable[[Path], tuple[xr.Dataset, Path]]] = {
    "minimal": lambda d: _saved(dl.make_run(np.zeros((2, 10)), 2, sample_rate=10.0), d / "minimal.nc"),
    "rich": lambda d: _saved(_rich(), d / "rich.nc"),
    "calibrated": lambda d: _saved(dl.calibrate(_rich()), d / "calibrated.nc"),
    "compressed": lambda d: _saved(_rich(), d / "compressed.nc", compression=True),
    "empty": lambda d: _saved(dl.empty_run(["a", "b"], sample_rate=10.0), d / "empty.nc"),
    "one-sample": lambda d: _saved(dl.make_run([[1.5]], ["only"], sample_rate=1.0, start="2020-02-29"),
                                   d / "one-sample.nc"),
    "odd-rate": lambda d: _saved(dl.make_run(np.ones((2, 100)), 2, sample_rate=3.0, start="2024-01-01"),
                                 d / "odd-rate.nc"),
    # over 101 days: whole microseconds since the first sample
    "long": lambda d: _saved(dl.make_run(np.ones((1, 3)), ["a"], sample_rate=1.0, times=[
        "2024-01-01T00:00:00.000001", "2024-03-01", "2024-07-01T00:00:00.123456"]), d / "long.nc"),
    # nanoseconds over 101 days: fractional microseconds since the middle
    "ns-101-days": lambda d: _saved(dl.make_run(np.ones((1, 3)), ["a"], sample_rate=1.0, times=[
        "2026-01-01T00:00:00.000000001", "2026-02-20T12:34:56.789012345",
        "2026-04-12T19:00:00.999999999"]), d / "ns-101-days.nc"),
    "recording": _recorded,
    "demo": _demo,
}


def _saved(run: xr.Dataset, path: Path, compression: bool = False) -> tuple[xr.Dataset, Path]:
    return run, dl.save(run, path, compression=compression)


@pytest.fixture(scope="module")
def all_saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[xr.Dataset, Path]]:
    folder = tmp_path_factory.mktemp("cf")
    return {name: save(folder) for name, save in SAVERS.items()}


@pytest.fixture(params=sorted(SAVERS), ids=sorted(SAVERS))
def saved(request: pytest.FixtureRequest, all_saved: dict[str, tuple[xr.Dataset, Path]]
          ) -> tuple[xr.Dataset, Path]:
    return all_saved[request.param]


def test_compliance_checker_cf18_passes_with_no_errors_and_no_warnings(saved: tuple[xr.Dataset, Path]
                                                                       ) -> None:
    cc = require_tool("compliance-checker")
    _, path = saved
    out = path.with_suffix(".json")
    proc = subprocess.run([cc, "-t", "cf:1.8", "-f", "json_new", "-o", str(out), str(path)],
                          capture_output=True, text=True, timeout=120)
    report = json.loads(out.read_text())
    result = next(iter(report.values()))["cf:1.8"]
    failures = [m for key in ("high_priorities", "medium_priorities", "low_priorities")
                for group in result.get(key, []) for m in group.get("msgs", [])
                if group["value"][0] < group["value"][1]]
    # its exit status is 0 only with no errors and no warnings; the counts are its three priorities
    assert proc.returncode == 0, (proc.stdout[-3000:], failures)
    assert (result["high_count"], result["medium_count"], result["low_count"]) == (0, 0, 0), failures
    assert result["scored_points"] == result["possible_points"], failures


def _empty_table(path: Path, root: str) -> Path:
    # cfchecks fetches the area-type and region tables from the network unless given files; no
    # copy ships with it or compliance-checker, and daqlab writes neither area_type nor region,
    # so a table with no entries checks the same
    path.write_text(f'<?xml version="1.0"?>\n<{root}><version_number>0</version_number>'
                    f"<date>none</date></{root}>\n")
    return path


def cfchecks_problems(paths: list[Path], tmp_path: Path) -> dict[str, tuple[list[str], set[str]]]:
    """For each file: the errors the NCAS CF checker reports, and its warnings other than those
    left by design (see the README), from one run over every file (cfchecks takes ~1 s to start)."""
    cfchecks = require_tool("cfchecks")
    spec = importlib.util.find_spec("compliance_checker")  # ships the standard-name table
    assert spec is not None and spec.origin is not None  # noqa: PT018
    names = Path(spec.origin).parent / "data" / "cf-standard-name-table.xml"
    assert names.is_file(), names
    proc = subprocess.run(
        [cfchecks, "-v", "1.8", "-s", str(names),
         "-a", str(_empty_table(tmp_path / "area.xml", "area_type_table")),
         "-r", str(_empty_table(tmp_path / "region.xml", "standardized_region_list")), *map(str, paths)],
        capture_output=True, text=True, timeout=300)
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr[-3000:]
    reports = proc.stdout.split("CHECKING NetCDF FILE: ")[1:]
    assert [r.split(maxsplit=1)[0] for r in reports] == list(map(str, paths)), proc.stdout[-3000:]
    found = {}
    for report in reports:
        name, variable, errors, warnings = report.split(maxsplit=1)[0], "", [], set()
        for line in report.splitlines():
            if line.startswith("Checking variable: "):
                variable = line.split(": ", 1)[1]
            elif line.startswith(("ERROR:", "FATAL:")):
                errors.append(f"{variable}: {line}")
            elif line.startswith("WARN:"):
                warnings.add(f"{variable}: {line}")
        if "ERRORS detected: 0" not in report and not errors:
            errors.append("no 'ERRORS detected: 0' line")
        found[name] = (errors, warnings - _CFCHECKS_WARNINGS_KEPT)
    return found


def test_cfchecks_finds_no_errors_in_any_file(all_saved: dict[str, tuple[xr.Dataset, Path]],
                                              tmp_path: Path) -> None:
    paths = [path for _, path in all_saved.values()]
    # warnings left by design (see the README): no units on the per-channel coordinates that
    # hold each channel's own unit, and the channel names stored as a char array
    assert cfchecks_problems(paths, tmp_path) == {str(p): ([], set()) for p in paths}


_CFCHECKS_WARNINGS_KEPT = {
    *(f"{v}: WARN: (3.1): units attribute should be present"
      for v in ("range_min", "range_max", "cal_slope", "cal_offset")),
    "channel: WARN: (5): Possible incorrect declaration of a coordinate variable.",
}


def test_ncdump_reads_header_and_all_data(saved: tuple[xr.Dataset, Path]) -> None:
    ncdump = require_tool("ncdump")
    run, path = saved
    kind = subprocess.run([ncdump, "-k", str(path)], capture_output=True, text=True, timeout=60)
    assert kind.returncode == 0, kind.stderr
    assert kind.stdout.strip() == "netCDF-4"
    full = subprocess.run([ncdump, str(path)], capture_output=True, text=True, timeout=120)
    assert full.returncode == 0, full.stderr
    assert f"time = {run.sizes['time']}" in full.stdout or "time = UNLIMITED" in full.stdout
    assert ':Conventions = "CF-1.8"' in full.stdout


def test_h5dump_reads_it(saved: tuple[xr.Dataset, Path]) -> None:
    h5dump = require_tool("h5dump")
    _, path = saved
    proc = subprocess.run([h5dump, "-H", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("engine", [None, "h5netcdf", "netcdf4"], ids=["default", "h5netcdf", "netcdf4"])
def test_xarray_default_engines_decode_time_exactly(saved: tuple[xr.Dataset, Path], engine: str | None
                                                    ) -> None:
    run, path = saved
    with xr.open_dataset(path, engine=engine) as ds:
        np.testing.assert_array_equal(ds["time"].values, run["time"].values)
        np.testing.assert_array_equal(ds["value"].values, run["value"].values)
        assert [str(c) for c in ds["channel"].values] == run.daq.channel_names
        assert ds["time"].attrs["standard_name"] == "time"


def test_time_is_exact_to_the_nanosecond_over_long_spans(tmp_path: Path) -> None:
    # float64 microseconds since the middle of the run, with the nanoseconds as a fraction
    # chosen so that rounding (daqlab) and truncating (xarray) decoders both get them back:
    # exact below 2**43 us (101.8 days) less the second that makes the reference whole.
    # Random nanoseconds: xarray's truncation missed one in six of them with the nearest float.
    start = np.datetime64("2026-01-01T00:00:00.000000001", "ns")
    span = 2**43 * 1000 - 10**9
    offsets = np.random.default_rng(3).integers(0, span, 20_000)
    t = start + np.sort(np.concatenate([[0, span, 2**42 * 1000, 2**52], offsets])).astype("timedelta64[ns]")
    run = dl.make_run(np.zeros((1, t.size)), ["a"], sample_rate=1.0, times=t)
    path = dl.save(run, tmp_path / "long.nc")
    np.testing.assert_array_equal(dl.open_run(path)["time"].values, t)
    for engine in (None, "h5netcdf", "netcdf4"):
        with xr.open_dataset(path, engine=engine) as ds:
            np.testing.assert_array_equal(ds["time"].values, t)
            units = ds["time"].encoding["units"]
    # UDUNITS-2 reads "nanoseconds" as "nan..."; the reference is a whole second
    assert units == f"microseconds since {(t[0] + (t[-1] - t[0]) // 2).astype('datetime64[s]')}", units
    assert units == "microseconds since 2026-02-20T21:40:46", units
    # a second longer (and not whole microseconds) is refused, not rounded
    over = dl.make_run(np.zeros((1, 2)), ["a"], sample_rate=1.0, times=t[[0, -1]] + np.array(
        [0, 10**9 + 1], "timedelta64[ns]"))
    with pytest.raises(dl.FormatError, match=r"cannot write over\.nc as NetCDF: its times span 102 days "
                       r"and sample 1 .* exact to the nanosecond only for spans up to 101 days"):
        dl.save(over, tmp_path / "over.nc")


def test_quality_is_compressed_and_value_chunked(tmp_path: Path) -> None:
    import h5py

    run = dl.make_run(np.zeros((2, 100_000)), 2, sample_rate=1e3, start="2026-01-01")
    path = dl.save(run, tmp_path / "c.nc")
    with h5py.File(path, "r") as f:
        assert f["quality"].compression == "gzip"
        assert f["value"].chunks is not None and f["value"].compression is None  # noqa: PT018
    path2 = dl.save(run, tmp_path / "c2.nc", compression=True)
    with h5py.File(path2, "r") as f:
        assert f["value"].compression == "gzip" and f["value"].shuffle  # noqa: PT018
    assert path2.stat().st_size < path.stat().st_size
