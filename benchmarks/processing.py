"""Processing throughput against plain scipy/numpy, and an out-of-core run, measured in the same run.

Part 1, in memory: the pipeline ``Pipeline([LowPass(cutoff, order=4), MovingAverage(window)])``
(4th-order zero-phase Butterworth low-pass, then a trailing moving average) on
a numpy-backed run, against the plain equivalent on the same array:
``scipy.signal.sosfiltfilt(butter(4, cutoff, fs=..., output="sos"), x)`` then
``scipy.ndimage.uniform_filter1d`` shifted to a trailing window with the first
``window - 1`` means rescaled, which is ``pandas.Series(y).rolling(window,
min_periods=1).mean()`` (checked here on a slice). The same pipeline on the
run cut into dask chunks (``run.chunk``), computed with the threaded
scheduler, is an extra row. Runs alternate; medians.

Part 2, out of core: a NetCDF run larger than the memory allowed is streamed
through the same pipeline by ``Pipeline.run(src, dst)``, each case in a fresh
child process so that its peak memory (``VmHWM``) is its own:

- ``copy``: ``Pipeline([]).run(src, dst)``, no steps, threaded scheduler: the
  floor the file I/O sets, measured in the same run;
- ``threads``: the pipeline on the default local (threaded) scheduler;
- ``cluster``: the pipeline with a ``dask.distributed.LocalCluster`` of one
  worker process (one thread; ``--workers`` for more) whose ``memory_limit``
  is well below the file size, enforced by distributed: the nanny kills a
  worker above 95 % of its limit. Spilling to disk and pausing are switched
  off, so the worker's memory is bounded by the pipeline's streaming alone,
  not by distributed moving results to disk. The client process is a row of
  its own: it holds the run's coordinates (the time axis) and writes them.

Peak memory is reported in MiB, as measured and above the process's own
baseline after its imports, and against the file size. The outputs are
checked: the threaded and cluster files are identical, and three slices (the
head, the middle, the tail) equal the in-memory pipeline on the same slice of
the input (with a margin far beyond the filter's memory) to 1e-9 of the
signal's size.

    python benchmarks/processing.py            # 8 x 10 M in memory; 8 x 16 M (1.2 GB file) out of
                                               # core, a 400 MiB worker; about 5 minutes here
    python benchmarks/processing.py --quick    # small, for a smoke test (the file is then smaller
                                               # than the worker's limit)

Targets: in memory, daqlab / plain >= 0.8; out of core, the file is larger
than the memory allowed and the worker's peak stays below its limit.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import xarray as xr
from numpy.typing import NDArray
from scipy import signal
from scipy.ndimage import uniform_filter1d

import daqlab as dl
from daqlab.processing import LowPass, MovingAverage

SAMPLE_RATE = 1e6
CUTOFF = 10e3
WINDOW = 100
ORDER = 4
MiB = 2**20


def pipeline(cutoff: float = CUTOFF, window: int = WINDOW) -> dl.Pipeline:
    return dl.Pipeline([LowPass(cutoff, order=ORDER), MovingAverage(window)])


def plain(x: NDArray[np.float64], fs: float, cutoff: float, window: int) -> NDArray[np.float64]:
    """The pipeline in plain scipy/numpy: sosfiltfilt, then a trailing mean over ``window`` samples
    (fewer at the start), as pandas ``rolling(window, min_periods=1).mean()``."""
    sos = signal.butter(ORDER, cutoff, fs=fs, output="sos")
    return trailing_mean(signal.sosfiltfilt(sos, x, axis=-1), window)


def trailing_mean(y: NDArray[np.float64], window: int) -> NDArray[np.float64]:
    """Mean of each sample and the ``window - 1`` before it (fewer at the start)."""
    # scipy's window for output i starts at i - window // 2 - origin: this origin makes it end at i
    mean: NDArray[np.float64] = uniform_filter1d(y, window, axis=-1, mode="constant", cval=0.0,
                                                 origin=(window - 1) // 2)
    head = min(window - 1, mean.shape[-1])
    mean[:, :head] *= window / np.arange(1, head + 1)  # the zeros before the start are not samples
    return mean


def peak_rss() -> int:
    """This process's peak resident memory so far, in bytes: ``VmHWM``. (Not ``ru_maxrss``: Linux
    carries the parent's peak into a child over fork and exec, so a child of a big process would
    report the parent's memory.)"""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # not Linux


def make_run(channels: int, n: int, seed: int = 0) -> xr.Dataset:
    """16-bit ADC-like noise plus a slow sine, scaled to volts, as a DAQ delivers it."""
    rng = np.random.default_rng(seed)
    values = np.empty((channels, n))
    t = np.arange(n) / SAMPLE_RATE
    for c in range(channels):  # channel by channel: no full-size temporaries
        values[c] = np.round(rng.normal(0, 3000, size=n) + 8000 * np.sin(2 * np.pi * (c + 1) * 50 * t))
        values[c] *= 10 / 32768
    return dl.make_run(values, channels, sample_rate=SAMPLE_RATE, start="2026-11-24", name="bench")


def timed(cases: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Median wall time of each case: one warm-up each, then the cases alternated ``repeat`` times."""
    for fn in cases.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeat):
        for name, fn in cases.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(ts) for name, ts in times.items()}


# ---------------------------------------------------------------------------------------- part 1


def check_plain_is_pandas(x: NDArray[np.float64], window: int) -> float:
    """Largest difference between :func:`plain`'s moving average and pandas on a slice."""
    y = x[:2, :200_000]
    ours = trailing_mean(y, window)
    ref = np.stack([pd.Series(row).rolling(window, min_periods=1).mean().to_numpy() for row in y])
    return float(np.abs(ours - ref).max())


def bench_memory(channels: int, n: int, chunk: int, repeat: int) -> tuple[list[tuple[str, float]], str]:
    run = make_run(channels, n)
    x = run["value"].values
    pipe = pipeline()
    lazy = run.chunk({"time": chunk})

    def base() -> object:
        return plain(x, SAMPLE_RATE, CUTOFF, WINDOW)

    def ours() -> object:
        return pipe.apply(run)["value"].values

    def ours_dask() -> object:
        return pipe.apply(lazy)["value"].compute(scheduler="threads").values

    diff_pandas = check_plain_is_pandas(x, WINDOW)
    diff = float(np.abs(pipe.apply(run)["value"].values - base()).max())
    scale = float(np.abs(x).max())
    ok = diff <= 1e-9 * scale and diff_pandas <= 1e-9 * scale
    med = timed({"plain": base, "ours": ours, "dask": ours_dask}, repeat)
    total = channels * n / 1e6
    rows = [
        ("plain scipy sosfiltfilt + uniform_filter1d", total / med["plain"]),
        ("daqlab Pipeline.apply, numpy-backed run", total / med["ours"]),
        (f"daqlab Pipeline.apply, dask chunks of {chunk:,}, threads", total / med["dask"]),
    ]
    check = (f"check: daqlab vs plain max |diff| {diff:.1e}, plain vs pandas rolling {diff_pandas:.1e} "
             f"(signal max {scale:.1f}): {'OK' if ok else 'MISMATCH'}")
    return rows, check


# ---------------------------------------------------------------------------------------- part 2


def child_threads(src: Path, dst: Path, chunk: int, steps: bool) -> dict[str, Any]:
    import dask  # noqa: F401  (imports before the baseline, as a user's session has them)
    import h5netcdf  # noqa: F401

    pipeline()  # builds the filter design's imports
    base = peak_rss()
    pipe = pipeline() if steps else dl.Pipeline([])
    t = time.perf_counter()
    pipe.run(src, dst, chunk_size=chunk, overwrite=True, progress=False)
    return {"seconds": time.perf_counter() - t, "peak": peak_rss(), "base": base}


def _worker_warm() -> tuple[int, Any]:
    import dask
    import h5netcdf  # noqa: F401
    import scipy.signal  # noqa: F401

    import daqlab.processing  # noqa: F401

    return peak_rss(), dask.config.get("distributed.worker.memory")


def _worker_spilled(dask_worker: Any) -> float:
    metrics = getattr(dask_worker.data, "cumulative_metrics", {})
    return float(metrics.get(("disk-write", "bytes"), 0.0))


NO_SPILL = {"distributed.worker.memory.target": False, "distributed.worker.memory.spill": False,
            "distributed.worker.memory.pause": False}
"""The worker keeps everything in memory (no spilling to disk, no pausing) and is killed by its
nanny above 95 % of its limit: memory stays bounded by the pipeline's streaming, or the run fails."""


def child_cluster(src: Path, dst: Path, chunk: int, memory_limit: int, workers: int) -> dict[str, Any]:
    import dask
    from distributed import Client, LocalCluster

    base = peak_rss()
    with (
        dask.config.set(NO_SPILL),
        LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=workers, threads_per_worker=1, processes=True, memory_limit=memory_limit,
            dashboard_address=None) as cluster,
        Client(cluster) as client,  # type: ignore[no-untyped-call]
    ):
        warm = client.run(_worker_warm)
        assert all(cfg["spill"] is False and cfg["terminate"] for _, cfg in warm.values()), warm
        pids = client.run(os.getpid)
        t = time.perf_counter()
        error = None
        try:
            pipeline().run(src, dst, chunk_size=chunk, overwrite=True, progress=False)
        except Exception as exc:  # a worker killed over its limit fails the run (KilledWorker)
            error = f"{type(exc).__name__}: {exc}"
        seconds = time.perf_counter() - t
        restarted = client.run(os.getpid) != pids
        peaks = client.run(peak_rss)
        spilled = client.run(_worker_spilled)
    return {"seconds": seconds, "peak": peak_rss(), "base": base,
            "worker_peak": max(peaks.values()), "worker_base": max(p for p, _ in warm.values()),
            "spilled": sum(spilled.values()), "restarted": restarted, "error": error}


def run_child(mode: str, src: Path, dst: Path, chunk: int, memory_limit: int, workers: int) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", mode, "--src", str(src),
           "--dst", str(dst), "--chunk-size", str(chunk), "--memory-limit", str(memory_limit),
           "--workers", str(workers)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"child {mode} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["killed"] = done.stderr.count("exceeded 95% memory budget")
    return result


def write_source(path: Path, channels: int, n: int) -> None:
    run = make_run(channels, n, seed=1)
    dl.save(run, path)


def files_identical(a: Path, b: Path, block: int) -> bool:
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        for name in ("value", "quality", "time"):
            da_, db = fa[name], fb[name]
            if da_.shape != db.shape:
                return False
            n = da_.shape[-1]
            for lo in range(0, n, block):
                sl = (..., slice(lo, min(n, lo + block)))
                if not np.array_equal(da_[sl], db[sl], equal_nan=True):
                    return False
    return True


def spot_check(src: Path, dst: Path, margin: int) -> float:
    """Largest difference, relative to the signal's size, between ``dst`` and the in-memory pipeline
    on three slices of ``src`` (quality flags must be equal; they count as an infinite difference)."""
    lazy_src, out = dl.open_run(src, chunks={}), dl.open_run(dst, chunks={})
    n, width = lazy_src.sizes["time"], 50_000
    worst = 0.0
    for start in (0, n // 2 - width // 2, n - width):
        stop = min(n, start + width)
        lo, hi = max(0, start - margin), min(n, stop + margin)
        part = lazy_src.isel(time=slice(lo, hi)).load()
        want = pipeline().apply(part).isel(time=slice(start - lo, stop - lo))
        got = out.isel(time=slice(start, stop)).load()
        if not np.array_equal(got["quality"].values, want["quality"].values):
            return float("inf")
        scale = float(np.abs(part["value"].values).max())
        worst = max(worst, float(np.abs(got["value"].values - want["value"].values).max()) / scale)
    lazy_src.close()
    out.close()
    return worst


Row = tuple[str, float, float, float, float, str]


def bench_out_of_core(folder: Path, channels: int, n: int, chunk: int, memory_limit: int,
                      workers: int) -> tuple[list[Row], list[str]]:
    src = folder / "big.nc"
    write_source(src, channels, n)
    size = src.stat().st_size
    total = channels * n / 1e6
    runs = {mode: run_child(mode, src, folder / f"out-{mode}.nc", chunk, memory_limit, workers)
            for mode in ("copy", "threads", "cluster")}
    rows: list[Row] = []
    for mode, label in (("copy", "copy: Pipeline([]).run, threads"),
                        ("threads", "Pipeline.run, threads"),
                        ("cluster", "Pipeline.run, LocalCluster: client process")):
        r = runs[mode]
        rows.append((label, r["seconds"], total / r["seconds"], r["peak"] / MiB,
                     (r["peak"] - r["base"]) / MiB, "-"))
    c = runs["cluster"]
    rows.append((f"Pipeline.run, LocalCluster: worker (of {workers})", c["seconds"], total / c["seconds"],
                 c["worker_peak"] / MiB, (c["worker_peak"] - c["worker_base"]) / MiB,
                 f"{memory_limit / MiB:,.0f}"))
    margin = int(100 * SAMPLE_RATE / CUTOFF) + WINDOW  # the filter forgets in ~13 fs/cutoff samples
    identical = c["error"] is None and files_identical(folder / "out-threads.nc", folder / "out-cluster.nc",
                                                       1 << 22)
    rel = spot_check(src, folder / "out-threads.nc", margin)
    within = c["worker_peak"] < memory_limit and not c["restarted"] and c["error"] is None
    t = runs["threads"]
    notes = [
        f"source: {channels} channels x {n:,} samples, {size / 1e6:,.0f} MB on disk; chunk_size {chunk:,}; "
        f"time axis {n * 8 / MiB:,.0f} MiB (datetime64, held in memory by the process that opens the run)",
        f"worker: peak {c['worker_peak'] / MiB:,.0f} MiB with a {memory_limit / MiB:,.0f} MiB limit "
        f"(= {memory_limit / size:.2f} x the file): {'below' if within else 'NOT below'} the limit; "
        f"killed {c['killed']} time(s), restarted {c['restarted']}, spilled {c['spilled'] / MiB:,.0f} MiB, "
        f"failed: {c['error']}",
        f"threaded process: peak {t['peak'] / MiB:,.0f} MiB = {t['peak'] / size:.2f} x the file, "
        f"{(t['peak'] - t['base']) / MiB:,.0f} MiB above its imports",
        f"check: threaded and cluster outputs identical: {identical}; threaded output vs in-memory "
        f"pipeline on 3 slices: max |diff| / signal max {rel:.1e} ({'OK' if rel <= 1e-9 else 'MISMATCH'})",
    ]
    return rows, notes


# ---------------------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a small run (seconds), for a smoke test")
    ap.add_argument("--dir", type=Path, default=None, help="folder for the out-of-core files")
    ap.add_argument("--channels", type=int, default=8)
    ap.add_argument("--samples", type=int, default=None, help="in memory, per channel")
    ap.add_argument("--ooc-samples", type=int, default=None, help="out of core, per channel")
    ap.add_argument("--memory-limit", type=int, default=None, help="worker memory limit, bytes")
    ap.add_argument("--chunk-size", type=int, default=1 << 18, help="Pipeline.run's chunk_size")
    ap.add_argument("--workers", type=int, default=1, help="LocalCluster worker processes (1 thread each)")
    ap.add_argument("--child", choices=("threads", "copy", "cluster"), help=argparse.SUPPRESS)
    ap.add_argument("--src", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--dst", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child is not None:
        if args.child == "cluster":
            result = child_cluster(args.src, args.dst, args.chunk_size, args.memory_limit, args.workers)
        else:
            result = child_threads(args.src, args.dst, args.chunk_size, args.child == "threads")
        print(json.dumps(result))
        return 0
    quick = args.quick
    channels = args.channels
    n_mem = args.samples or (200_000 if quick else 10_000_000)
    n_ooc = args.ooc_samples or (1_000_000 if quick else 16_000_000)
    limit = args.memory_limit or 400 * MiB
    repeat = 1 if quick else 5
    chunk_mem = 1 << 16 if quick else 1 << 20
    started = time.perf_counter()
    load = os.getloadavg()
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} ({os.cpu_count()} cores)")

    rows, check = bench_memory(channels, n_mem, chunk_mem, repeat)
    print(f"\nin memory: {channels} channels x {n_mem:,} samples float64, low-pass {CUTOFF:g} Hz order "
          f"{ORDER} zero-phase + moving average {WINDOW} (fs {SAMPLE_RATE:g} Hz); median of {repeat}")
    print(f"{'case':<56} {'M samples/s':>12} {'ratio':>7}")
    base = rows[0][1]
    for name, rate in rows:
        print(f"{name:<56} {rate:>12,.1f} {rate / base:>7.2f}")
    print("ratio = throughput / plain scipy throughput, measured in this run (target >= 0.80)")
    print(check)

    folder = Path(tempfile.mkdtemp(prefix="daqlab-processing-", dir=args.dir))
    try:
        ooc, notes = bench_out_of_core(folder, channels, n_ooc, args.chunk_size, limit, args.workers)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"\nout of core: Pipeline.run(src, dst), each case in its own process; {channels} x {n_ooc:,}")
    print(f"{'case':<46} {'seconds':>8} {'M samples/s':>12} {'peak MiB':>9} {'+MiB':>7} {'limit':>7}")
    for name, seconds, rate, peak, above, lim in ooc:
        print(f"{name:<46} {seconds:>8.1f} {rate:>12,.1f} {peak:>9,.0f} {above:>7,.0f} {lim:>7}")
    print("peak MiB = the process's peak resident memory (VmHWM); +MiB = above its own after its imports")
    for note in notes:
        print(note)
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
          f"{time.perf_counter() - started:.0f} s in all")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
