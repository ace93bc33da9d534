"""MDF4 reading: ``daqlab.open_tree`` (every sample loaded) against asammdf's own ``MDF(path)``
and ``get`` of every channel (raw), on the same ~100 MB file written by asammdf.

    python benchmarks/_mdf_case.py            # ~100 MB: 2.5 M records of 8 int16 + 4 float32 + time
    python benchmarks/_mdf_case.py --quick    # small, for a smoke test

Target: daqlab's time <= 1.25x asammdf's. daqlab does more than asammdf's loop: float64 values
(the run's dtype), quality flags, exact ns times, the file's id; it reads each group once
(asammdf's ``select``) where ``get`` reads it once per channel.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asammdf
import numpy as np
from _timing import compare

import daqlab as dl


def write_file(path: Path, records: int) -> None:
    """An asammdf file like a logger's: a fast group of 8 int16 ADC channels (linear scaling to
    volts) and 4 float32 channels at 20 kHz, and a slow group of 2 float64 channels at 10 Hz."""
    rng = np.random.default_rng(0)
    mdf = asammdf.MDF(version="4.10")
    step = 500_000
    for first in range(0, records, step):
        n = min(step, records - first)
        t = np.arange(first, first + n) / 20_000.0
        sigs = [asammdf.Signal(rng.integers(-32768, 32767, n, dtype=np.int16), t, name=f"adc{i}", unit="V",
                               conversion={"a": 10 / 32768, "b": 0.0}) for i in range(8)]
        sigs += [asammdf.Signal(rng.normal(size=n).astype(np.float32), t, name=f"f{i}", unit="g")
                 for i in range(4)]
        if first == 0:
            mdf.append(sigs, acq_name="fast")
        else:
            mdf.extend(0, [(t, None), *[(s.samples, None) for s in sigs]])
    slow = max(2, records // 2000)
    ts = np.arange(slow) / 10.0
    temps = [asammdf.Signal(20 + rng.normal(size=slow), ts, name=f"temp{i}", unit="degC") for i in range(2)]
    mdf.append(temps, acq_name="slow")
    mdf.save(path, overwrite=True)
    mdf.close()


def bench_mdf(tmpdir: Path, records: int = 2_500_000, repeat: int = 5) -> list[tuple[str, float, float]]:
    """``[(label, daqlab seconds, asammdf seconds)]``, medians of ``repeat`` alternated runs."""
    path = tmpdir / "bench.mf4"
    write_file(path, records)
    mb = path.stat().st_size / 1e6

    def ours() -> None:
        tree = dl.open_tree(path)
        assert tree["fast"].sizes["time"] == records

    def native() -> None:
        mdf = asammdf.MDF(path)
        groups: list[Any] = mdf.groups
        try:
            for gi, grp in enumerate(groups):
                for ci in range(len(grp.channels)):
                    mdf.get(group=gi, index=ci, raw=True)
        finally:
            mdf.close()

    t_ours, t_native = compare(ours, native, repeat)
    return [(f"open_tree (loaded) vs MDF + get of every channel, {mb:,.0f} MB", t_ours, t_native)]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--dir", type=Path, default=None)
    args = ap.parse_args(argv)
    records, repeat = (50_000, 1) if args.quick else (2_500_000, 5)
    folder = Path(tempfile.mkdtemp(prefix="daqlab-mdf-", dir=args.dir))
    try:
        rows = bench_mdf(folder, records, repeat)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"{'case':<64} {'daqlab s':>9} {'asammdf s':>10} {'ratio':>6}")
    for name, ours, base in rows:
        print(f"{name:<64} {ours:>9.3f} {base:>10.3f} {ours / base:>6.2f}")
    print("ratio = daqlab time / asammdf time, measured in this run (target <= 1.25)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
