"""Our NetCDF files are read by tools we did not write: CF checker, ncdump, h5dump, xarray."""

from __future__ import annotations

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


RUNS: dict[str, Callable[[], xr.Dataset]] = {
    "rich": _rich,
    "calibrated": lambda: dl.calibrate(_rich()),
    "empty": lambda: dl.empty_run(["a", "b"], sample_rate=10.0),
    "one-sample": lambda: dl.make_run([[1.5]], ["only"], sample_rate=1.0, start="2020-02-29"),
    "odd-rate": lambda: dl.make_run(np.ones((2, 100)), 2, sample_rate=3.0, start="2024-01-01"),
}


@pytest.fixture(params=sorted(RUNS), ids=sorted(RUNS))
def saved(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[xr.Dataset, Path]:
    run = RUNS[request.param]()
    return run, dl.save(run, tmp_path / f"{request.param}.nc")


def test_compliance_checker_cf18_passes_with_no_errors(saved: tuple[xr.Dataset, Path]) -> None:
    cc = require_tool("compliance-checker")
    _, path = saved
    out = path.with_suffix(".json")
    proc = subprocess.run([cc, "-t", "cf:1.8", "-f", "json_new", "-o", str(out), str(path)],
                          capture_output=True, text=True, timeout=120)
    report = json.loads(out.read_text())
    result = next(iter(report.values()))["cf:1.8"]
    failures = [m for group in result.get("all_priorities", [])
                for m in group.get("msgs", []) if group.get("value", [1, 1])[0] < group["value"][1]]
    assert proc.returncode == 0, (proc.stdout[-3000:], failures)
    assert result["high_count"] == 0 and result["medium_count"] == 0, failures  # noqa: PT018


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


@pytest.mark.parametrize("engine", ["h5netcdf", "netcdf4"], ids=["h5netcdf", "netcdf4"])
def test_xarray_default_engines_decode_time_exactly(saved: tuple[xr.Dataset, Path], engine: str) -> None:
    run, path = saved
    with xr.open_dataset(path, engine=engine) as ds:
        np.testing.assert_array_equal(ds["time"].values, run["time"].values)
        np.testing.assert_array_equal(ds["value"].values, run["value"].values)
        assert [str(c) for c in ds["channel"].values] == run.daq.channel_names
        assert ds["time"].attrs["standard_name"] == "time"


def test_time_is_exact_to_the_nanosecond_over_long_spans(tmp_path: Path) -> None:
    # float64 nanoseconds since the first sample: exact below 2**53 ns (~104 days)
    t = np.array(["2026-01-01T00:00:00.000000001", "2026-03-01T12:34:56.789012345",
                  "2026-04-14T23:59:59.999999999"], dtype="datetime64[ns]")
    run = dl.make_run(np.zeros((1, 3)), ["a"], sample_rate=1.0, times=t)
    back = dl.open_run(dl.save(run, tmp_path / "long.nc"))
    np.testing.assert_array_equal(back["time"].values, t)


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
