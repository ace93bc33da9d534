"""A representative TDMS file written with npTDMS, and what it holds, for the TDMS tests and
the cross-format contract tests.

:func:`make_tdms_file` writes groups at several rates (one of them split by daqlab into two
nodes), integer raw data with a linear scaling, a polynomial scaling (applied by daqlab), a
NaN, odd channel names ('/', unicode, spaces, two that clean up to the same name), units,
root/group/channel properties, a string channel (left out), and a group without waveform
timing (stamped by sample index), in several segments.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["START", "make_tdms_file"]

START = np.datetime64("2024-05-01T12:00:00.250", "ns")
"""``wf_start_time`` of the waveform channels (UTC)."""


def _times(start: np.datetime64, n: int, step_ns: int) -> NDArray[np.datetime64]:
    return start + np.arange(n, dtype=np.int64) * np.timedelta64(step_ns, "ns")


def make_tdms_file(path: Path) -> dict[str, Any]:
    """Write the representative TDMS file at ``path``; return what it holds.

    The result: ``"name"`` (the tree's name), ``"root_properties"``, and ``"nodes"``: for
    each expected node name, ``"group"`` (the TDMS group), ``"channels"`` (daqlab's names),
    ``"tdms_names"``, ``"values"`` (channels x samples, float64: raw where a linear scaling
    is kept as calibration, physical where a scaling was applied), ``"physical"`` (what
    ``daqlab.calibrate`` gives), ``"units"``, ``"slopes"``, ``"offsets"``, ``"rate"``,
    ``"times"`` (datetime64[ns]), ``"segments"`` (how many segments hold its samples).
    """
    nptdms: Any = importlib.import_module("nptdms")
    rng = np.random.default_rng(14)
    n_fast, n_slow, n_a, n_b, n_idx = 120, 12, 40, 20, 7
    counts = rng.integers(-2000, 2000, size=n_fast).astype(np.int16)
    volts = rng.normal(0.0, 1.0, size=n_fast)
    volts[17] = np.nan
    temp_fr = rng.normal(20.0, 0.5, size=n_fast).astype(np.float32)
    other = np.linspace(-1.0, 1.0, n_fast)
    slow_raw = np.arange(n_slow, dtype=np.int32) * 3 - 5
    poly_raw = np.linspace(0.0, 2.0, n_slow)
    coeffs = [0.5, 2.0, -0.25]
    a_vals = np.sin(np.arange(n_a) / 5.0)
    b_vals = np.cos(np.arange(n_b) / 3.0)
    idx_vals = np.array([3, 1, 4, 1, 5, 9, 2], dtype=np.uint8)

    linear = {"NI_Number_Of_Scales": 1, "NI_Scale[0]_Scale_Type": "Linear",
              "NI_Scale[0]_Linear_Slope": 0.01, "NI_Scale[0]_Linear_Y_Intercept": -0.5,
              "NI_Scaling_Status": "unscaled"}
    fast_wf = {"wf_start_time": START, "wf_increment": 0.001, "wf_start_offset": 0.0,
               "wf_samples": n_fast // 3}
    slow_wf = {"wf_start_time": START, "wf_increment": 0.1, "wf_start_offset": 0.0}
    props: dict[str, list[tuple[str, Any, dict[str, Any]]]] = {
        "fast": [
            ("accel x", counts, {**fast_wf, **linear, "unit_string": "m/s^2", "NI_ChannelName": "Dev1/ai0"}),
            ("volts/2", volts, {**fast_wf, "unit_string": "V"}),
            ("volts_2", other, {**fast_wf, "unit_string": "V"}),
            ("température", temp_fr, {**fast_wf, "unit_string": "degC"}),
        ],
        "slow": [
            ("temp", slow_raw, {**slow_wf, "unit_string": "degC", "NI_Number_Of_Scales": 1,
                                "NI_Scale[0]_Scale_Type": "Linear", "NI_Scale[0]_Linear_Slope": 2.0,
                                "NI_Scale[0]_Linear_Y_Intercept": 1.0, "NI_Scaling_Status": "unscaled"}),
            ("poly", poly_raw, {**slow_wf, "unit_string": "bar", "NI_Number_Of_Scales": 1,
                                "NI_Scale[0]_Scale_Type": "Polynomial",
                                "NI_Scale[0]_Polynomial_Coefficients_Size": 3,
                                **{f"NI_Scale[0]_Polynomial_Coefficients[{i}]": c
                                   for i, c in enumerate(coeffs)}}),
        ],
        "mixed": [
            ("a", a_vals, {"wf_start_time": START, "wf_increment": 0.01, "unit_string": "A"}),
            ("b", b_vals, {"wf_start_time": START, "wf_increment": 0.02, "unit_string": "A"}),
        ],
        "index": [("count", idx_vals, {"unit_string": ""})],
    }
    root = {"name": "bench rig", "description": "representative TDMS file", "author": "daqlab tests",
            "DateTime": START}
    groups = {"fast": {"description": "1 kHz channels", "rack": 3},
              "slow": {"description": "10 Hz channels"}, "mixed": {}, "index": {}}
    with nptdms.TdmsWriter(str(path)) as writer:
        # three segments: the first with every property, then the fast group's data continues
        thirds = np.array_split(np.arange(n_fast), 3)
        objects: list[Any] = [nptdms.RootObject(root)]
        objects += [nptdms.GroupObject(g, p) for g, p in groups.items()]
        for group, chans in props.items():
            for name, data, p in chans:
                part = data[thirds[0]] if group == "fast" else data
                objects.append(nptdms.ChannelObject(group, name, part, p))
        objects.append(nptdms.ChannelObject("slow", "comment", ["a", "b"], {"note": "text"}))
        writer.write_segment(objects)
        for third in thirds[1:]:
            writer.write_segment([nptdms.ChannelObject("fast", name, data[third])
                                  for name, data, _ in props["fast"]])

    start_fast = START
    nodes: dict[str, dict[str, Any]] = {
        "fast": {
            "group": "fast", "channels": ["accel x", "volts_2", "volts_2_2", "température"],
            "tdms_names": ["accel x", "volts/2", "volts_2", "température"],
            "values": np.vstack([counts, volts, other, temp_fr]).astype(np.float64),
            "physical": np.vstack([counts * 0.01 - 0.5, volts, other, temp_fr.astype(np.float64)]),
            "units": ["m/s^2", "V", "V", "degC"], "slopes": [0.01, 1.0, 1.0, 1.0],
            "offsets": [-0.5, 0.0, 0.0, 0.0], "rate": 1000.0,
            "times": _times(start_fast, n_fast, 1_000_000), "segments": 3,
        },
        "slow": {
            "group": "slow", "channels": ["temp", "poly"], "tdms_names": ["temp", "poly"],
            "values": np.vstack([slow_raw, np.polynomial.polynomial.polyval(poly_raw, coeffs)]),
            "physical": np.vstack([slow_raw * 2.0 + 1.0, np.polynomial.polynomial.polyval(poly_raw, coeffs)]),
            "units": ["degC", "bar"], "slopes": [2.0, 1.0], "offsets": [1.0, 0.0], "rate": 10.0,
            "times": _times(START, n_slow, 100_000_000), "segments": 1,
        },
        "mixed": {
            "group": "mixed", "channels": ["a"], "tdms_names": ["a"], "values": a_vals[np.newaxis],
            "physical": a_vals[np.newaxis], "units": ["A"], "slopes": [1.0], "offsets": [0.0],
            "rate": 100.0, "times": _times(START, n_a, 10_000_000), "segments": 1,
        },
        "mixed_2": {
            "group": "mixed", "channels": ["b"], "tdms_names": ["b"], "values": b_vals[np.newaxis],
            "physical": b_vals[np.newaxis], "units": ["A"], "slopes": [1.0], "offsets": [0.0],
            "rate": 50.0, "times": _times(START, n_b, 20_000_000), "segments": 1,
        },
        "index": {
            "group": "index", "channels": ["count"], "tdms_names": ["count"],
            "values": idx_vals[np.newaxis].astype(np.float64),
            "physical": idx_vals[np.newaxis].astype(np.float64), "units": [""], "slopes": [1.0],
            "offsets": [0.0], "rate": 1.0,
            "times": _times(np.datetime64(0, "ns"), n_idx, 1_000_000_000), "segments": 1,
        },
    }
    return {"name": "bench rig", "root_properties": root, "nodes": nodes,
            "applied": {"slow": {"poly": "applied: polynomial"}},
            "skipped": {"slow": {"comment": "holds String values, not numbers"}}}
