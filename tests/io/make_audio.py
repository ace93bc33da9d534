"""Representative WAV and FLAC files written with soundfile, and what they hold.

:func:`make_wav_file` and :func:`make_flac_file` are reused by the cross-format contract
tests; ``tests/io/test_audio.py`` uses them with other subtypes too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf  # type: ignore[import-untyped]
from numpy.typing import NDArray

RATE = 8000
# raw integer range, slope and offset of each integer PCM subtype (physical = slope * raw + offset)
PCM: dict[str, tuple[int, int, float, float]] = {
    "PCM_S8": (-128, 127, 2.0 ** -7, 0.0),
    "PCM_U8": (0, 255, 2.0 ** -7, -1.0),
    "PCM_16": (-(1 << 15), (1 << 15) - 1, 2.0 ** -15, 0.0),
    "PCM_24": (-(1 << 23), (1 << 23) - 1, 2.0 ** -23, 0.0),
    "PCM_32": (-(1 << 31), (1 << 31) - 1, 2.0 ** -31, 0.0),
}


def raw_samples(subtype: str, frames: int, channels: int) -> NDArray[np.int64]:
    """Raw integers (channels x frames) for an integer PCM subtype, reaching both ends of
    its range."""
    lo, hi = PCM[subtype][:2]
    rng = np.random.default_rng(14)
    x = rng.integers(lo, hi, (channels, frames), endpoint=True)
    x[:, 0], x[:, -1] = lo, hi
    return x


def _write_pcm(path: Path, subtype: str, channels: int, frames: int, fmt: str) -> dict[str, Any]:
    slope, offset = PCM[subtype][2:]
    raw = raw_samples(subtype, frames, channels)
    physical = (raw * slope + offset).astype(np.float64)  # exact in every subtype
    sf.write(str(path), physical.T, RATE, subtype=subtype, format=fmt)
    return _expected(path, raw.astype(np.float64), physical, slope, offset, channels)


def _expected(path: Path, raw: NDArray[np.float64], physical: NDArray[np.float64], slope: float,
              offset: float, channels: int) -> dict[str, Any]:
    return {
        "format": "wav", "name": path.stem, "start": np.datetime64(0, "ns"),
        "nodes": {"/": {"channels": [f"ch{i}" for i in range(channels)], "units": [""] * channels,
                        "raw": raw, "values": physical, "slope": [slope] * channels,
                        "offset": [offset] * channels, "range": [(-1.0, 1.0)] * channels,
                        "rate": float(RATE), "start": np.datetime64(0, "ns")}},
        "events": None,
    }


def make_wav_file(path: Path, *, subtype: str = "PCM_24", channels: int = 3,
                  frames: int = 4000) -> dict[str, Any]:
    """Write a WAV file with soundfile: integer PCM of ``subtype`` (raw values reaching both
    ends of the range), or ``"FLOAT"``/``"DOUBLE"`` (sine waves, a NaN at frame 5 of ch0 and
    a value beyond full scale at frame 6 of the last channel).

    Returns ``{"format", "name", "start", "nodes", "events"}``; ``nodes`` has the root
    ``"/"`` -> ``{"channels", "units", "raw", "values", "slope", "offset", "range", "rate",
    "start"}`` (``raw`` as stored, channels x frames; ``values`` physical, full scale).
    """
    if subtype in PCM:
        return _write_pcm(path, subtype, channels, frames, "WAV")
    t = np.arange(frames) / RATE
    x = np.array([0.5 * np.sin(2 * np.pi * 50 * (i + 1) * t) for i in range(channels)])
    x[0, 5] = np.nan
    x[-1, 6] = 1.5
    sf.write(str(path), x.T, RATE, subtype=subtype, format="WAV")
    if subtype == "FLOAT":
        x = x.astype(np.float32).astype(np.float64)
    return _expected(path, x, x, 1.0, 0.0, channels)


def make_flac_file(path: Path, *, subtype: str = "PCM_16", channels: int = 3,
                   frames: int = 20_000) -> dict[str, Any]:
    """Write a FLAC file with soundfile (``subtype``: PCM_S8, PCM_16 or PCM_24); returns what
    :func:`make_wav_file` returns."""
    return _write_pcm(path, subtype, channels, frames, "FLAC")
