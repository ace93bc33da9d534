"""Reading a TDMS file into memory: ``daqlab.open_tree`` against npTDMS itself.

Both read the same ~100 MB file whole: daqlab to a tree of runs (raw values, calibration,
quality flags, time coordinate, the file's content id), npTDMS with ``TdmsFile.read`` and
``channel[:]`` for every channel (its values, scaled where the file says so). Target:
daqlab's time <= 1.25x npTDMS's.

    python benchmarks/_tdms_case.py            # ~100 MB per case
    python benchmarks/_tdms_case.py --quick    # small, for a smoke test
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from _timing import compare

import daqlab as dl

__all__ = ["bench_tdms", "write_case"]

_LINEAR = {"NI_Number_Of_Scales": 1, "NI_Scale[0]_Scale_Type": "Linear",
           "NI_Scale[0]_Linear_Slope": 10 / 32768, "NI_Scale[0]_Linear_Y_Intercept": 0.0,
           "NI_Scaling_Status": "unscaled", "unit_string": "V"}


def write_case(path: Path, channels: int, samples: int, segments: int, dtype: str) -> int:
    """A TDMS file of one group, ``channels`` x ``samples`` of ``dtype`` (int16 ones with a
    linear scaling to volts) in ``segments`` segments, 1 MHz waveform timing; its size in bytes."""
    nptdms: Any = importlib.import_module("nptdms")
    rng = np.random.default_rng(0)
    per = np.array_split(np.arange(samples), segments)
    wf = {"wf_start_time": np.datetime64("2026-11-24T00:00:00", "us"), "wf_increment": 1e-6}
    props = {**wf, **(_LINEAR if dtype == "int16" else {"unit_string": "V"})}
    with nptdms.TdmsWriter(str(path)) as writer:
        for s, idx in enumerate(per):
            block = rng.normal(0, 3000, size=(channels, idx.size))
            data = np.round(block).astype(np.int16) if dtype == "int16" else block
            writer.write_segment([nptdms.ChannelObject("bench", f"ai{c}", data[c], props if s == 0 else None)
                                  for c in range(channels)])
    return path.stat().st_size


def bench_tdms(tmpdir: Path, *, samples: int = 1_600_000, channels: int = 8, segments: int = 16,
               repeat: int = 7) -> list[tuple[str, float, float]]:
    """(label, daqlab seconds, npTDMS seconds), medians of reading each case's file whole."""
    nptdms: Any = importlib.import_module("nptdms")
    rows = []
    # float64 and int16 (a DAQ's raw counts), and the shape a logger streaming blocks gives
    cases = [("float64", segments), ("int16", segments), ("int16", max(segments, samples // 500))]
    for dtype, parts in cases:
        path = Path(tmpdir) / f"bench-{dtype}-{parts}.tdms"
        size = write_case(path, channels, samples, parts, dtype)

        def native(path: Path = path) -> None:
            f = nptdms.TdmsFile.read(path)
            for group in f.groups():
                for channel in group.channels():
                    channel[:]

        def daqlab(path: Path = path) -> None:
            dl.open_tree(path)

        ours, base = compare(daqlab, native, repeat)
        label = f"{dtype}{' (linear scale)' if dtype == 'int16' else ''}, {channels} x {samples:,} " \
                f"in {parts:,} segments, {size / 1e6:.0f} MB"
        rows.append((label, ours, base))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--dir", type=Path, default=None)
    args = ap.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="daqlab-tdms-", dir=args.dir))
    try:
        kwargs: dict[str, Any] = {"samples": 20_000, "repeat": 1} if args.quick else {}
        rows = bench_tdms(folder, **kwargs)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"{'case':<62} {'daqlab s':>9} {'npTDMS s':>9} {'daqlab/npTDMS':>14}")
    for name, ours, base in rows:
        print(f"{name:<62} {ours:>9.3f} {base:>9.3f} {ours / base:>14.2f}")
    print("daqlab/npTDMS = time ratio, measured in this run (target <= 1.25)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
