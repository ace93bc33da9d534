"""Storage throughput against baselines measured in the same run.

- NetCDF ``daqlab.save`` / ``daqlab.open_run`` (+ load) against raw h5py writing and
  reading the same float64 array (the floor any HDF5-based format pays);
- CSV ``daqlab.save(..., "csv")`` / ``open_run`` against pandas ``to_csv`` /
  ``read_csv`` of the same long table (parse only, pandas' own file), and against pandas
  reading daqlab's file into the same arrays (parse, quality names, one column per channel;
  both pandas idioms, ``pivot`` and ``set_index().unstack()``).

    python benchmarks/storage.py            # 8 channels x 4 M samples (NetCDF), 1 M rows x 8 (CSV)
    python benchmarks/storage.py --quick    # small, for a smoke test

Targets: NetCDF >= 0.5x raw h5py both ways; CSV >= 2x pandas both ways.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import xarray as xr
from _timing import compare

import daqlab as dl
from daqlab.io._atomic import fsync_path


def make_run(channels: int, n: int) -> xr.Dataset:
    rng = np.random.default_rng(0)
    # 16-bit ADC-like data scaled to volts, as a DAQ delivers it
    v = np.round(rng.normal(0, 3000, size=(channels, n))) * (10 / 32768)
    return dl.make_run(v, channels, sample_rate=1e6, start="2026-11-24", name="bench")


def bench_netcdf(folder: Path, channels: int, n: int, repeat: int) -> list[tuple[str, float, float]]:
    run = make_run(channels, n)
    values = run["value"].values
    mb = values.nbytes / 1e6
    h5 = folder / "raw.h5"
    nc = folder / "run.nc"

    def h5_write() -> None:
        with h5py.File(h5, "w", libver=("earliest", "v110")) as f:
            f.create_dataset("value", data=values, chunks=(1, min(n, 1 << 18)))
        fsync_path(h5)

    def h5_read() -> None:
        with h5py.File(h5, "r") as f:
            f["value"][...]

    def nc_write() -> None:
        dl.save(run, nc, overwrite=True)

    def nc_read() -> None:
        dl.open_run(nc)

    def nc_read_lazy() -> None:
        np.asarray(dl.open_run(nc, chunks={}).value.values)

    w_nc, w_raw = compare(nc_write, h5_write, repeat)
    r_nc, r_raw = compare(nc_read, h5_read, repeat)
    r_lazy, _ = compare(nc_read_lazy, h5_read, repeat)
    return [
        ("NetCDF save vs h5py write", mb / w_nc, mb / w_raw),
        ("NetCDF open+load vs h5py read", mb / r_nc, mb / r_raw),
        ("NetCDF open lazy+compute vs h5py read", mb / r_lazy, mb / r_raw),
    ]


def bench_csv(folder: Path, channels: int, rows: int, repeat: int) -> list[tuple[str, float, float]]:
    n = rows // channels
    run = make_run(channels, n)
    csv = folder / "run.csv"
    pd_csv = folder / "pandas.csv"
    t_ms = (run["time"].values.view(np.int64) // 1_000_000)
    q_names = np.array(["Good", "Suspect", "Bad", "Interpolated"])[run["quality"].values]
    frame = pd.DataFrame({
        "timestamp_ms": np.tile(t_ms, channels),
        "value": run["value"].values.ravel(),
        "channel": np.repeat(run.daq.channel_names, n),
        "quality": q_names.ravel(),
    })
    mb = rows * 4 * 8 / 1e6  # nominal: rows x 4 fields

    def pd_write() -> None:
        frame.to_csv(pd_csv, index=False)

    def pd_read() -> None:
        pd.read_csv(pd_csv)

    def dl_write() -> None:
        dl.save(run, csv, "csv", overwrite=True)

    def dl_read() -> None:
        dl.open_run(csv)

    codes = {"Good": 0, "Suspect": 1, "Bad": 2, "Interpolated": 3}

    def pd_read_run() -> None:
        # what a pandas user writes to get the run's arrays from the same file: parse, map the
        # quality names, one column per channel. Timestamps are whole ms, so above 1 kHz several
        # samples share one: a sample's index within its channel is the row key, not the time.
        df = pd.read_csv(csv, dtype={"channel": "category", "quality": "category"})
        df["q"] = df["quality"].map(codes).astype(np.int8)
        df["k"] = df.groupby("channel", observed=True).cumcount()
        wide = df.pivot(index="k", columns="channel", values=["value", "q"])
        wide["value"].to_numpy().T.copy(), wide["q"].to_numpy().T.copy()

    def pd_read_unstack() -> None:
        # the other pandas idiom for the same job (sometimes the faster one)
        df = pd.read_csv(csv, dtype={"channel": "category", "quality": "category"})
        df["q"] = df["quality"].map(codes).astype(np.int8)
        df["k"] = df.groupby("channel", observed=True).cumcount()
        wide = df.set_index(["k", "channel"])[["value", "q"]].unstack("channel")
        wide["value"].to_numpy().T.copy(), wide["q"].to_numpy().T.copy()

    w_dl, w_pd = compare(dl_write, pd_write, repeat)
    r_dl, r_pd = compare(dl_read, pd_read, repeat)
    r_dl2, r_pd_run = compare(dl_read, pd_read_run, repeat)
    r_dl3, r_pd_unstack = compare(dl_read, pd_read_unstack, repeat)
    return [
        (f"CSV write {rows:,} rows vs pandas", mb / w_dl, mb / w_pd),
        (f"CSV read {rows:,} rows vs pandas parse only", mb / r_dl, mb / r_pd),
        (f"CSV read {rows:,} rows vs pandas parse+pivot", mb / r_dl2, mb / r_pd_run),
        (f"CSV read {rows:,} rows vs pandas parse+unstack", mb / r_dl3, mb / r_pd_unstack),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--dir", type=Path, default=None)
    args = ap.parse_args(argv)
    nc_n, csv_rows, repeat = (100_000, 80_000, 1) if args.quick else (4_000_000, 1_000_000, 5)
    folder = Path(tempfile.mkdtemp(prefix="daqlab-storage-", dir=args.dir))
    try:
        rows = bench_netcdf(folder, 8, nc_n, repeat) + bench_csv(folder, 8, csv_rows, repeat)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"{'case':<44} {'daqlab MB/s':>12} {'baseline MB/s':>14} {'ratio':>7}")
    for name, ours, base in rows:
        print(f"{name:<44} {ours:>12,.0f} {base:>14,.0f} {ours / base:>7.2f}")
    print("ratio = daqlab / baseline, measured in this run (targets: NetCDF >= 0.5, CSV >= 2.0)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
