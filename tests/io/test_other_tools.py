"""Tools we did not write judge our NetCDF files: NCO, GDAL, R ncdf4 read them; CDO does not.

The README's Files section says which tools read daqlab's files and which do not;
each claim is checked here with the tool itself (installed by ``python3 dev.py test``).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import daqlab as dl
from tests.helpers import require_tool


@pytest.fixture(scope="module")
def nc_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[xr.Dataset, Path]:
    chans = [dl.Channel("ai0", "V", range=(-10, 10)),
             dl.Channel("T", "degC", calibration=dl.Calibration(100.0, -50.0, "2026-01-15"))]
    values = np.arange(20.0).reshape(2, 10)
    values[1, 3] = np.nan
    run = dl.make_run(values, chans, sample_rate=100.0, start="2026-01-01T00:00:00.000000001",
                      metadata={"operator": "Ada"})
    return run, dl.save(run, tmp_path_factory.mktemp("tools") / "r.nc")


def _run(*cmd: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=120, cwd=cwd)


def test_nco_lists_and_extracts_without_warnings(nc_file: tuple[xr.Dataset, Path], tmp_path: Path) -> None:
    ncks = require_tool("ncks")
    run, path = nc_file
    meta = _run(ncks, "-M", "-m", path)
    assert meta.returncode == 0, meta.stderr
    assert "WARNING" not in meta.stdout + meta.stderr, meta.stdout + meta.stderr
    out = tmp_path / "value.nc"
    ext = _run(ncks, "-v", "value", path, out)
    assert ext.returncode == 0, ext.stderr
    assert "WARNING" not in ext.stdout + ext.stderr, ext.stdout + ext.stderr
    with xr.open_dataset(out) as back:  # NCO kept the variable, its coordinates and the time axis
        np.testing.assert_array_equal(back["value"].values, run["value"].values)
        np.testing.assert_array_equal(back["time"].values, run["time"].values)


def test_gdal_reads_the_value_grid(nc_file: tuple[xr.Dataset, Path]) -> None:
    gdalinfo = require_tool("gdalinfo")
    _, path = nc_file
    proc = _run(gdalinfo, "-stats", f'NETCDF:"{path}":value')
    assert proc.returncode == 0, proc.stderr
    assert "Size is 10, 2" in proc.stdout  # x = time, y = channel
    assert "Conventions=CF-1.8" in proc.stdout
    assert "STATISTICS_MAXIMUM=19" in proc.stdout


def test_r_ncdf4_reads_values_and_time(nc_file: tuple[xr.Dataset, Path]) -> None:
    rscript = require_tool("Rscript")
    run, path = nc_file
    script = (f'library(ncdf4); f <- nc_open("{path}"); v <- ncvar_get(f, "value"); '
              'cat(dim(v), "\\n"); cat(v[, 1], "\\n"); cat(is.na(v[4, 2]), "\\n"); '
              'cat(ncatt_get(f, "time", "units")$value, "\\n"); nc_close(f)')
    proc = _run(rscript, "-e", script)
    assert proc.returncode == 0, proc.stderr
    dims, first, na, units = proc.stdout.strip().splitlines()
    assert dims.split() == ["10", "2"]  # R shows dimensions fastest-first
    assert [float(x) for x in first.split()] == run["value"].values[0].tolist()
    assert na.strip() == "TRUE"
    assert " since 2026-01-01" in units


def test_cdo_refuses_channel_first_variables(nc_file: tuple[xr.Dataset, Path]) -> None:
    """The README says CDO does not read daqlab's files: it wants time as every variable's
    first dimension, where CF puts extra dimensions (channel) left of time. If this starts
    passing, update the README."""
    cdo = require_tool("cdo")
    _, path = nc_file
    proc = _run(cdo, "-s", "info", path)
    assert proc.returncode != 0
    assert "Unsupported file structure" in proc.stdout + proc.stderr
