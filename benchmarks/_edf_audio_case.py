"""EDF/BDF and WAV/FLAC reading: ``daqlab.open_tree`` (every sample loaded) against the
native library's own full read of the same file.

    python benchmarks/_edf_audio_case.py            # ~60 MB EDF and BDF, ~90 MB WAV, a FLAC
    python benchmarks/_edf_audio_case.py --quick    # small, for a smoke test

EDF/BDF: pyEDFlib's ``readSignal(i, digital=True)`` of every signal; audio: ``soundfile.read``.
Target: daqlab's time <= 1.25x the native one. daqlab does more than either: float64 values
(the run's dtype) channels x samples, quality flags, exact ns times, the file's id (a SHA-256
of up to 64 MiB of it), and for EDF the annotations and pyEDFlib's compliance check.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyedflib
import soundfile as sf  # type: ignore[import-untyped]
from _timing import compare

import daqlab as dl


def write_edf(path: Path, seconds: int, bdf: bool = False, channels: int = 32) -> None:
    """A polysomnography-like EDF+ (BDF+) file: ``channels`` EEG signals at 256 Hz and a
    temperature at 1 Hz, 1 s data records, one annotation a minute."""
    w = pyedflib.EdfWriter(str(path), channels + 1,
                           file_type=pyedflib.FILETYPE_BDFPLUS if bdf else pyedflib.FILETYPE_EDFPLUS)
    top = (1 << 23) - 1 if bdf else 32767
    headers: list[dict[str, Any]] = [
        {"label": f"EEG{i}", "dimension": "uV", "sample_frequency": 256, "physical_min": -500.0,
         "physical_max": 500.0, "digital_min": -top - 1, "digital_max": top} for i in range(channels)]
    headers.append({"label": "Temp", "dimension": "degC", "sample_frequency": 1, "physical_min": 0.0,
                    "physical_max": 50.0, "digital_min": -top - 1, "digital_max": top})
    rng = np.random.default_rng(0)
    try:
        w.setSignalHeaders(headers)
        block = 60
        eeg = [rng.integers(-top - 1, top, 256 * block).astype(np.int32) for _ in range(channels)]
        for _ in range(seconds // block):
            w.writeSamples([*eeg, np.arange(block, dtype=np.int32)], digital=True)
        for minute in range(seconds // 60):
            w.writeAnnotation(minute * 60.0 + 0.5, -1, f"minute {minute}")
    finally:
        w.close()


def bench_edf(tmpdir: Path, seconds: int = 3600, repeat: int = 5) -> list[tuple[str, float, float]]:
    """``[(label, daqlab seconds, pyEDFlib seconds)]``, medians of ``repeat`` alternated runs."""
    rows = []
    for bdf, secs in ((False, seconds // 60 * 60), (True, seconds * 2 // 3 // 60 * 60)):
        path = tmpdir / ("bench.bdf" if bdf else "bench.edf")
        write_edf(path, secs, bdf)
        mb = path.stat().st_size / 1e6

        def ours(path: Path = path, secs: int = secs) -> None:
            tree = dl.open_tree(path)
            assert tree["256Hz"].sizes["time"] == 256 * secs

        def native(path: Path = path) -> None:
            with pyedflib.EdfReader(str(path)) as reader:
                for i in range(reader.signals_in_file):
                    reader.readSignal(i, digital=True)

        t_ours, t_native = compare(ours, native, repeat)
        kind = "BDF" if bdf else "EDF"
        rows.append((f"{kind}: open_tree vs readSignal(digital) of all, {mb:,.0f} MB", t_ours, t_native))
    return rows


def bench_audio(tmpdir: Path, seconds: int = 480, repeat: int = 5) -> list[tuple[str, float, float]]:
    """``[(label, daqlab seconds, soundfile seconds)]``, medians of ``repeat`` alternated runs:
    stereo 48 kHz WAV PCM_16 and PCM_24, and FLAC PCM_16."""
    rng = np.random.default_rng(0)
    n = 48_000 * seconds
    tone = np.sin(np.arange(n) * (2 * np.pi * 440 / 48_000))
    x = np.stack([0.5 * tone, 0.3 * tone]).T + rng.normal(0, 0.01, (n, 2))
    rows = []
    cases = (("WAV PCM_16", "PCM_16", "WAV", n), ("WAV PCM_24", "PCM_24", "WAV", n * 2 // 3),
             ("FLAC PCM_16", "PCM_16", "FLAC", n // 2))
    for name, subtype, fmt, frames in cases:
        path = tmpdir / f"bench_{subtype}.{fmt.lower()}"
        sf.write(str(path), x[:frames], 48_000, subtype=subtype, format=fmt)
        mb = path.stat().st_size / 1e6

        def ours(path: Path = path, frames: int = frames) -> None:
            assert dl.open_tree(path).sizes["time"] == frames

        def native(path: Path = path) -> None:
            sf.read(str(path))

        t_ours, t_native = compare(ours, native, repeat)
        rows.append((f"{name}: open_tree vs soundfile.read, {mb:,.0f} MB", t_ours, t_native))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--dir", type=Path, default=None)
    args = ap.parse_args(argv)
    edf_s, audio_s, repeat = (120, 10, 1) if args.quick else (3600, 480, 5)
    folder = Path(tempfile.mkdtemp(prefix="daqlab-edf-audio-", dir=args.dir))
    try:
        rows = bench_edf(folder, edf_s, repeat) + bench_audio(folder, audio_s, repeat)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"{'case':<60} {'daqlab s':>9} {'native s':>9} {'ratio':>6}")
    for name, ours, base in rows:
        print(f"{name:<60} {ours:>9.3f} {base:>9.3f} {ours / base:>6.2f}")
    print("ratio = daqlab time / native library time, measured in this run (target <= 1.25)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
