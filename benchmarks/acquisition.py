"""How many channels x samples/s the DataManager sustains with the recorder attached.

For each configuration a paced Simulated source runs for ``--seconds`` through a
DataManager that records every sample to disk. Reported per configuration:

- lost: samples the recorder lost to ring overruns (must be 0 to pass),
- acq lag: worst delay of the acquisition thread behind real time (s),
- rec lag: worst delay of durable data on disk behind acquisition (s),
- stop: time for stop() (flush + consolidation into the final .nc file),
- throughput of what reached disk, in MB/s, against a plain h5py write of the
  same bytes measured in the same run.

    python benchmarks/acquisition.py                 # 60 s per configuration
    python benchmarks/acquisition.py --quick         # a few seconds, small configs
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

import daqlab as dl

FULL = [(8, 100_000.0), (8, 250_000.0), (8, 500_000.0), (8, 1_000_000.0), (16, 1_000_000.0)]
QUICK = [(2, 10_000.0), (8, 100_000.0)]


@dataclass
class Result:
    channels: int
    rate: float
    seconds: float
    written: int
    lost: int
    acq_lag: float
    rec_lag: float
    stop_s: float
    file_mb: float

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.acq_lag < 1.0


def run_one(channels: int, rate: float, seconds: float, folder: Path) -> Result:
    src = dl.sources.Simulated(channels, rate, seed=1)
    cap_s = max(2.0, min(10.0, 600e6 / (channels * rate * 9)))  # stay within 600 MiB of ring
    dm = dl.DataManager(src, name="bench", output_dir=folder, autosave_interval=None,
                        buffer_seconds=cap_s, handle_sigint=False)
    buf = dm.buffers["src"]
    acq_lag = rec_lag = 0.0
    dm.start()
    t0 = time.monotonic()
    rec = dm.recorders["src"]
    while (elapsed := time.monotonic() - t0) < seconds:
        time.sleep(0.25)
        written = buf.written
        acq_lag = max(acq_lag, elapsed - written / rate)
        rec_lag = max(rec_lag, (written - rec.saved_upto) / rate)
        if dm.errors:
            break
    t1 = time.monotonic()
    dm.stop()
    stop_s = time.monotonic() - t1
    path = dm.saved[-1]
    return Result(channels, rate, seconds, buf.written, rec.gap_samples + buf.overflow_count,
                  acq_lag, rec_lag, stop_s, path.stat().st_size / 1e6)


def h5py_baseline(folder: Path, mb: float = 512.0) -> float:
    """MB/s of a plain h5py write + fsync of float64 blocks: the disk path's ceiling here."""
    block = np.random.default_rng(0).normal(size=(8, 1_000_000))
    n = max(1, int(mb * 1e6 / block.nbytes))
    path = folder / "baseline.h5"
    t = time.perf_counter()
    with h5py.File(path, "w", libver=("earliest", "v110")) as f:
        d = f.create_dataset("v", shape=(8, n * block.shape[1]), dtype="f8", chunks=(1, 1 << 18))
        for i in range(n):
            d[:, i * block.shape[1]:(i + 1) * block.shape[1]] = block
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())
    dt = time.perf_counter() - t
    path.unlink()
    return n * block.nbytes / 1e6 / dt


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--quick", action="store_true", help="3 s runs of small configurations")
    ap.add_argument("--dir", type=Path, default=None, help="where to record (default: a temp dir)")
    ap.add_argument("--config", default=None, help="one configuration CHANNELSxRATE, e.g. 8x1000000")
    args = ap.parse_args(argv)
    configs = QUICK if args.quick else FULL
    if args.config:
        c, r = args.config.lower().split("x")
        configs = [(int(c), float(r))]
    seconds = 3.0 if args.quick else args.seconds
    root = Path(tempfile.mkdtemp(prefix="daqlab-bench-", dir=args.dir))
    try:
        base = h5py_baseline(root, 64.0 if args.quick else 512.0)
        print(f"baseline: plain h5py write+fsync of float64 blocks: {base:,.0f} MB/s")
        print(f"{'channels':>8} {'rate/ch':>10} {'MS/s total':>10} {'written':>12} {'lost':>6} "
              f"{'acq lag s':>9} {'rec lag s':>9} {'stop s':>7} {'disk MB/s':>9} {'of ceil':>7}  ok")
        best: Result | None = None
        for c, r in configs:
            folder = root / f"{c}x{int(r)}"
            folder.mkdir()
            res = run_one(c, r, seconds, folder)
            mbps = res.written * c * 9 / 1e6 / res.seconds
            print(f"{c:>8} {r:>10,.0f} {c * r / 1e6:>10.2f} {res.written:>12,} {res.lost:>6} "
                  f"{res.acq_lag:>9.3f} {res.rec_lag:>9.3f} {res.stop_s:>7.1f} {mbps:>9.1f} "
                  f"{mbps / base:>7.2f}  {'yes' if res.ok else 'NO'}", flush=True)
            shutil.rmtree(folder)
            if res.ok:
                best = res
            else:
                break
        if best is None:
            print("highest sustained: none of the configurations ran without loss")
        else:
            print(f"highest sustained with zero loss: {best.channels} ch x {best.rate:,.0f} S/s "
                  f"= {best.channels * best.rate / 1e6:.2f} MS/s for {best.seconds:g} s "
                  f"(worst acquisition lag {best.acq_lag * 1e3:.0f} ms)")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
