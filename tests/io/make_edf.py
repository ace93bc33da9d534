"""A representative EDF+ (or BDF+) file written with pyEDFlib, and what it holds.

:func:`make_edf_file` is reused by the cross-format contract tests; ``tests/io/test_edf.py``
uses it and the smaller writers below.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pyedflib
from numpy.typing import NDArray

# pyEDFlib 0.1.42 writes a start's microseconds x 100 as the subsecond in units of 100 ns
# (and divides by 100 when it reads): microsecond=25_000 puts "+0.25" in the file, i.e.
# 0.25 s, which is what the file says and what daqlab reads.
START = dt.datetime(2024, 3, 1, 12, 30, 15, 25_000)
START_IN_FILE = np.datetime64("2024-03-01T12:30:15.250000000", "ns")

# label, unit, rate (Hz), physical min, max, digital min, max
SIGNALS: tuple[tuple[str, str, int, float, float, int, int], ...] = (
    ("EEG Fp1", "uV", 256, -200.0, 200.0, -32768, 32767),
    ("ECG I/II", "mV", 256, -5.0, 5.0, -2048, 2047),       # a '/' in the label, a 12-bit ADC
    ("EEG Fp1", "uV", 256, -100.0, 100.0, -32768, 32767),  # a repeated label
    ("Resp", "a.u.", 32, 1.0, -1.0, -2048, 2047),          # inverted: physical min > max
    ("Temp", "degC", 1, 30.0, 40.0, -32768, 32767),
)
ANNOTATIONS: tuple[tuple[float, float, str], ...] = (
    (0.0, -1.0, "recording start"), (1.5, 0.5, "blink"), (3.25, -1.0, "ünïcode marker"),
    (6.75, 2.0, "apnea"))


def _node(rate: int) -> str:
    return f"/{rate}Hz"


def digital_samples(seconds: int, bdf: bool = False) -> list[NDArray[np.int32]]:
    """The raw digital samples :func:`make_edf_file` writes, one array per signal; each
    channel reaches its digital minimum and maximum (clipped samples)."""
    rng = np.random.default_rng(14)
    out = []
    for i, (_, _, rate, _, _, dmin, dmax) in enumerate(SIGNALS):
        if bdf and dmax == 32767:
            dmin, dmax = -(1 << 23), (1 << 23) - 1
        n = rate * seconds
        x = (np.sin(np.arange(n) * 2 * np.pi * (i + 1) / max(n, 1)) * dmax * 1.2).astype(np.int64)
        x = np.clip(x + rng.integers(-50, 50, n), dmin, dmax)
        x[0], x[-1] = dmin, dmax
        out.append(x.astype(np.int32))
    return out


def make_edf_file(path: Path, *, bdf: bool = False, seconds: int = 8) -> dict[str, Any]:
    """Write an EDF+ file (BDF+ with ``bdf``) of three rates (256, 32, 1 Hz; 1 s records),
    odd labels, an inverted scaling, clipped samples, a subsecond start and annotations.

    Returns ``{"format", "name", "start", "nodes", "events"}``: ``nodes`` maps each node's
    path (``"/256Hz"``) to ``{"channels", "labels", "units", "raw", "values", "slope",
    "offset", "range", "rate", "start"}`` (``raw``: the digital samples written, channels x
    samples; ``values``: their physical values); ``events`` holds ``times`` (datetime64[ns]),
    ``labels`` and ``durations`` (s, NaN for none).
    """
    w = pyedflib.EdfWriter(str(path), len(SIGNALS),
                           file_type=pyedflib.FILETYPE_BDFPLUS if bdf else pyedflib.FILETYPE_EDFPLUS)
    headers: list[dict[str, Any]] = []
    for label, unit, rate, pmin, pmax, dmin, dmax in SIGNALS:
        if bdf and dmax == 32767:
            dmin, dmax = -(1 << 23), (1 << 23) - 1
        headers.append({"label": label, "dimension": unit, "sample_frequency": rate,
                        "physical_min": pmin, "physical_max": pmax, "digital_min": dmin,
                        "digital_max": dmax, "transducer": f"{label} electrode",
                        "prefilter": "HP:0.1Hz LP:75Hz"})
    try:
        w.setSignalHeaders(headers)
        w.setStartdatetime(START)
        w.setPatientCode("MCH-0234567")
        w.setPatientName("Haagse_Harry")
        w.setSex(1)
        w.setTechnician("daqlab")
        w.setEquipment("bench")
        raw = digital_samples(seconds, bdf)
        w.writeSamples(raw, digital=True)
        for onset, duration, text in ANNOTATIONS:
            w.writeAnnotation(onset, duration, text)
    finally:
        w.close()
    nodes: dict[str, dict[str, Any]] = {}
    names = {0: "EEG Fp1", 1: "ECG I_II", 2: "EEG Fp1_2", 3: "Resp", 4: "Temp"}
    for i, (label, unit, rate, pmin, pmax, _, _) in enumerate(SIGNALS):
        dmin, dmax = headers[i]["digital_min"], headers[i]["digital_max"]
        slope = (pmax - pmin) / (dmax - dmin)
        offset = pmax - slope * dmax
        node = nodes.setdefault(_node(rate), {
            "channels": [], "labels": [], "units": [], "raw": [], "values": [], "slope": [],
            "offset": [], "range": [], "rate": float(rate), "start": START_IN_FILE})
        node["channels"].append(names[i])
        node["labels"].append(label)
        node["units"].append(unit)
        node["raw"].append(raw[i].astype(np.float64))
        node["values"].append(raw[i] * slope + offset)
        node["slope"].append(slope)
        node["offset"].append(offset)
        node["range"].append((min(pmin, pmax), max(pmin, pmax)))
    for node in nodes.values():
        node["raw"], node["values"] = np.array(node["raw"]), np.array(node["values"])
    t = START_IN_FILE + np.array([round(a[0] * 1e9) for a in ANNOTATIONS], "timedelta64[ns]")
    return {
        "format": "edf", "name": path.stem, "start": START_IN_FILE, "nodes": nodes,
        "events": {"times": t, "labels": [a[2] for a in ANNOTATIONS],
                   "durations": np.array([a[1] if a[1] >= 0 else np.nan for a in ANNOTATIONS])},
    }
