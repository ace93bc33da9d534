"""Reading other tools' files: each daqlab reader against its format's own library, on the same
file, measured in the same run.

For each format, ``dl.open_tree(path)`` (every node loaded into memory, raw values, calibration,
times) against the library's own full read of the same file:

- TDMS: npTDMS ``TdmsFile.read`` + every channel's data (float64; int16 with a linear scale;
  int16 in thousands of small segments, as a logger streaming blocks writes it);
- MDF4: asammdf ``MDF(path)`` + ``get`` of every channel (raw);
- EDF/BDF: pyEDFlib ``readSignal`` (digital) of every signal;
- WAV/FLAC: soundfile ``read``;
- XDF: pyxdf ``load_xdf`` (daqlab parses XDF itself).

Medians of alternated runs after a warm-up each; the ratio is daqlab's time / the library's
(< 1: daqlab faster). Target: <= 1.25 (daqlab at least 0.8x the library's speed), and no union
time base is ever built (each rate group is read as its own run).

    python benchmarks/formats.py            # files of 25-100 MB each
    python benchmarks/formats.py --quick    # small files, for a smoke test
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the cases beside this script

from _edf_audio_case import bench_audio, bench_edf
from _mdf_case import bench_mdf
from _tdms_case import bench_tdms
from _xdf_case import bench_xdf

TARGET = 1.25

# format: (case, full-size arguments, quick arguments)
CASES: dict[str, tuple[Callable[..., list[tuple[str, float, float]]], dict[str, Any], dict[str, Any]]] = {
    "TDMS (npTDMS)": (bench_tdms, {}, {"samples": 40_000, "segments": 4, "repeat": 2}),
    "MDF4 (asammdf)": (bench_mdf, {}, {"records": 20_000, "repeat": 2}),
    "EDF/BDF (pyEDFlib)": (bench_edf, {}, {"seconds": 120, "repeat": 2}),
    "WAV/FLAC (soundfile)": (bench_audio, {}, {"seconds": 5, "repeat": 2}),
    "XDF (pyxdf)": (bench_xdf, {}, {"seconds": 10, "repeat": 2}),
}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small files, for a smoke test")
    ap.add_argument("--dir", default=None, help="folder for the files (default: a temporary one)")
    ap.add_argument("--only", default=None, help="only formats whose name contains this text")
    args = ap.parse_args(argv)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'format':<22} {'case':<70} {'daqlab s':>9} {'native s':>9} {'ratio':>6}  target")
    worst = 0.0
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for name, (case, full, quick) in CASES.items():
            if args.only and args.only.lower() not in name.lower():
                continue
            folder = Path(tmp) / name.split()[0].replace("/", "-")
            folder.mkdir()
            for label, ours, base in case(folder, **(quick if args.quick else full)):
                ratio = ours / base
                worst = max(worst, ratio)
                verdict = "ok" if ratio <= TARGET else "SLOWER"
                print(f"{name:<22} {label[:70]:<70} {ours:>9.3f} {base:>9.3f} {ratio:>6.2f}  {verdict}")
    print(f"ratio = daqlab time / the library's time; target <= {TARGET} (daqlab >= 0.8x the "
          f"library's speed); worst {worst:.2f}")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
