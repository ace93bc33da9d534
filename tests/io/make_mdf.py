"""MDF4 files written by asammdf for the tests, and what they hold.

:func:`make_mdf_file` writes a small file of three channel groups (1 kHz, 10 Hz, irregular)
with linear and non-linear conversions, units, a NaN, odd and duplicate names, a limit, an
invalid sample and a marker; it returns what daqlab should read. :func:`relocate` rewrites a
file as a logger leaves it while recording (its description first, the data last), optionally
not finalised (``UnFinMF``, cycle counters 0, the last data block's length not updated).
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any, Literal

import asammdf
import numpy as np
from asammdf.blocks import v4_constants as v4c
from asammdf.blocks.v4_blocks import EventBlock
from numpy.typing import NDArray

from daqlab.io._mdf_scan import _HD, _Blocks, _Data

START_NS = 1_704_164_645_123_456_789
"""The files' start time: 2024-01-02T03:04:05.123456789Z."""

_DATA_KINDS = (b"##DT", b"##DZ", b"##DV")
_LIST_KINDS = (b"##DL", b"##HL")


def _times(t_s: NDArray[np.float64]) -> NDArray[np.datetime64]:
    whole = np.floor(t_s)
    ns = whole.astype(np.int64) * 1_000_000_000 + np.rint((t_s - whole) * 1e9).astype(np.int64)
    return (ns + START_NS).view("datetime64[ns]")


def make_mdf_file(path: Path, *, fragment_size: int | None = None, compression: Literal[0, 1, 2] = 0,
                  invalid_sample: bool = False) -> dict[str, Any]:
    """Write ``path`` (MDF 4.10, asammdf) and return what daqlab should read from it.
    ``invalid_sample``: sample 7 of the irregular group's channel is marked invalid (its
    invalidation bit: daqlab keeps the value and flags it BAD).
    ``fragment_size``: bytes per data block (asammdf's write_fragment_size: smaller gives data
    lists of several blocks); ``compression``: asammdf's (1: deflate, 2: transposed deflate).

    Returns ``{"format", "start", "events": [(time, label)], "nodes": {node: {"name",
    "sample_rate", "regular", "channels", "units", "slopes", "offsets", "values" (channels x
    samples, raw where the conversion is linear), "times", "bad" (bool mask of samples flagged
    BAD), "ranges", "renamed", "conversions", "value_to_text"}}}``.
    """
    n_fast, n_slow = 2000, 20
    t_fast = np.arange(n_fast) / 1000.0
    t_slow = np.arange(n_slow) / 10.0
    rng = np.random.default_rng(14)
    t_irr = np.cumsum(rng.uniform(0.01, 0.05, 50))

    acc = (np.arange(n_fast) % 3000 - 200).astype(np.int16)  # raw; 2*raw+1 in m/s²
    volts = np.sin(t_fast * 2 * np.pi * 5.0)
    volts[5] = np.nan
    dup_a = (np.arange(n_fast) % 100).astype(np.int8)
    dup_b = (np.arange(n_fast) * 7 % 65536).astype(np.uint16)
    state = (np.arange(n_fast) // 100 % 3).astype(np.uint8)  # 0 off, 1 on, 2 -> default text
    rat_raw = (np.arange(n_fast) - 1000).astype(np.int32)  # rational: (2x + 1) / 2 = x + 0.5
    temp = 20.0 + np.arange(n_slow, dtype=np.float32) * np.float32(0.25)
    pressure = (rng.integers(0, 60000, 50)).astype(np.uint16)  # 0.01*raw - 5 bar
    invalid = np.zeros(50, bool)
    invalid[7] = invalid_sample

    mdf = asammdf.MDF(version="4.10")
    if fragment_size is not None:
        mdf.configure(write_fragment_size=fragment_size)
    mdf.header.abs_time = START_NS
    mdf.header.author = "daqlab tests"
    mdf.append([
        asammdf.Signal(acc, t_fast, name="acc x", unit="m/s²", conversion={"a": 2.0, "b": 1.0},
                       comment="accelerometer, x axis"),
        asammdf.Signal(volts, t_fast, name="Spannung/U", unit="V"),
        asammdf.Signal(dup_a, t_fast, name="dup", unit="count"),
        asammdf.Signal(dup_b, t_fast, name="dup", unit="count"),
        asammdf.Signal(state, t_fast, name="état ✓", conversion={
            "val_0": 0, "text_0": "off", "val_1": 1, "text_1": "on", "default_addr": "unknown"}),
        asammdf.Signal(rat_raw, t_fast, name="rat", unit="mm", conversion={
            "P1": 0.0, "P2": 2.0, "P3": 1.0, "P4": 0.0, "P5": 0.0, "P6": 2.0}),
    ], acq_name="fast", comment="1 kHz group")
    acc_ch: Any = mdf.groups[0].channels[1]
    acc_ch.lower_limit, acc_ch.upper_limit = -300.0, 5000.0  # physical; raw 2500.. flagged suspect
    acc_ch.flags |= v4c.FLAG_CN_LIMIT_RANGE
    mdf.append([asammdf.Signal(temp, t_slow, name="temp", unit="degC")], acq_name="slow", comment="10 Hz")
    mdf.append([asammdf.Signal(pressure, t_irr, name="pressure", unit="bar",
                               conversion={"a": 0.01, "b": -5.0},
                               invalidation_bits=invalid if invalid_sample else None)],
               acq_name="irregular", comment="on change")
    marker = EventBlock(event_type=v4c.EVENT_TYPE_MARKER, sync_base=1234, sync_factor=0.001)
    marker.name = "start of ramp"
    mdf.events.append(marker)
    mdf.save(path, overwrite=True, compression=compression)
    mdf.close()

    fast_vals = np.vstack([acc, volts, dup_a, dup_b, state, rat_raw + 0.5]).astype(np.float64)
    fast_bad = np.zeros(fast_vals.shape, bool)
    fast_bad[1, 5] = True
    irr_bad = invalid[np.newaxis, :].copy()
    return {
        "format": "mdf4",
        "start": np.datetime64(START_NS, "ns"),
        "events": [(np.datetime64(START_NS + 1_234_000_000, "ns"), "start of ramp")],
        "nodes": {
            "fast": {
                "name": "fast", "sample_rate": 1000.0, "regular": True,
                "channels": ["acc x", "Spannung_U", "dup", "dup_2", "état ✓", "rat"],
                "units": ["m/s²", "V", "count", "count", "", "mm"],
                "slopes": [2.0, 1.0, 1.0, 1.0, 1.0, 1.0], "offsets": [1.0, 0.0, 0.0, 0.0, 0.0, 0.0],
                "values": fast_vals, "times": _times(t_fast), "bad": fast_bad,
                "ranges": {"acc x": (-300.0, 5000.0)},
                "renamed": {"Spannung_U": "Spannung/U", "dup_2": "dup"},
                "conversions": {"rat": "applied: rational"},
                "value_to_text": {"état ✓": {"kind": "value_to_text", "table": [[0.0, "off"], [1.0, "on"]],
                                             "default": "unknown"}},
            },
            "slow": {
                "name": "slow", "sample_rate": 10.0, "regular": True, "channels": ["temp"],
                "units": ["degC"], "slopes": [1.0], "offsets": [0.0],
                "values": temp[np.newaxis, :].astype(np.float64), "times": _times(t_slow),
                "bad": np.zeros((1, n_slow), bool), "ranges": {}, "renamed": {}, "conversions": {},
                "value_to_text": {},
            },
            "irregular": {
                "name": "irregular", "sample_rate": None, "regular": False, "channels": ["pressure"],
                "units": ["bar"], "slopes": [0.01], "offsets": [-5.0],
                "values": pressure[np.newaxis, :].astype(np.float64), "times": _times(t_irr),
                "bad": irr_bad, "ranges": {}, "renamed": {}, "conversions": {}, "value_to_text": {},
            },
        },
    }


def make_big_mdf_file(path: Path, channels: int = 4, samples: int = 4_000_000, rate: float = 10_000.0) -> int:
    """One channel group of ``channels`` float64 channels x ``samples`` at ``rate`` (written a
    million samples at a time); returns the file's size."""
    mdf = asammdf.MDF(version="4.10")
    mdf.header.abs_time = START_NS
    step = 1_000_000
    for first in range(0, samples, step):
        k = np.arange(first, min(samples, first + step))
        t = k / rate
        sigs = [asammdf.Signal(np.sin(k * (0.001 * (c + 1))) * (c + 1), t, name=f"ch{c}", unit="V")
                for c in range(channels)]
        if first == 0:
            mdf.append(sigs, acq_name="fast")
        else:
            mdf.extend(0, [(t, None), *[(s.samples, None) for s in sigs]])
    mdf.save(path, overwrite=True)
    mdf.close()
    return path.stat().st_size


def blocks_of(path: Path) -> dict[int, tuple[bytes, int]]:
    """Every block linked in ``path`` (description and data): address -> (kind, length)."""
    data = path.read_bytes()
    with path.open("rb") as f:
        blocks = _Blocks(f, len(data), path)
        hd = blocks.block(_HD)
        assert hd is not None
        blocks.walk(hd)
        reader = _Data(blocks, 0, {})
        a = hd.links[0]
        while a:
            reader.headers(blocks.seen[a].links[2])
            a = blocks.seen[a].links[0]
    return {a: (b.kind, b.length) for a, b in blocks.seen.items()}


def relocate(src: Path, dst: Path, *, unfinalised: bool = False) -> dict[str, int]:
    """Write ``src`` to ``dst`` with its blocks reordered as a logger writes them while
    recording: identification, header and the rest of the description first, then data lists,
    then data blocks (in their order). With ``unfinalised``, as a logger leaves it before
    finalising: id ``UnFinMF``, update flags 'cycle counters' and 'length of the last DT
    block', every cycle counter 0 and the last data block's length its header's (24).
    Returns ``{"data_start": first data byte, "last_block": address of the last block}``."""
    data = src.read_bytes()
    with src.open("rb") as f:
        blocks = _Blocks(f, len(data), src)
        hd = blocks.block(_HD)
        assert hd is not None
        blocks.walk(hd)
        reader = _Data(blocks, 0, {})
        a = hd.links[0]
        while a:
            reader.headers(blocks.seen[a].links[2])
            a = blocks.seen[a].links[0]
    seen = blocks.seen
    order = sorted(seen, key=lambda a: (a != _HD, seen[a].kind in _LIST_KINDS or seen[a].kind in _DATA_KINDS,
                                        seen[a].kind in _DATA_KINDS, a))
    new: dict[int, int] = {}
    pos = _HD
    for a in order:
        new[a] = pos
        pos += (seen[a].length + 7) // 8 * 8
    out = bytearray(pos)
    out[:_HD] = data[:_HD]
    for a in order:
        b = seen[a]
        chunk = bytearray(data[a:a + b.length])
        for i, link in enumerate(b.links):
            if link:
                struct.pack_into("<Q", chunk, 24 + 8 * i, new[link])
        out[new[a]:new[a] + b.length] = chunk
    last = new[order[-1]]
    data_start = min(new[a] for a in order if seen[a].kind in _DATA_KINDS)
    if unfinalised:
        out[:8] = b"UnFinMF "
        flags = v4c.FLAG_UNFIN_UPDATE_CG_COUNTER | v4c.FLAG_UNFIN_UPDATE_LAST_DT_LENGTH
        struct.pack_into("<H", out, 60, flags)
        for a in order:
            if seen[a].kind == b"##CG":
                struct.pack_into("<Q", out, seen[a].data_at - a + new[a] + 8, 0)
        assert seen[order[-1]].kind == b"##DT"
        struct.pack_into("<Q", out, last + 8, 24)
        end = last + seen[order[-1]].length
        out = out[:end]  # the block being written ends the file: no padding after it
    dst.write_bytes(bytes(out))
    return {"data_start": data_start, "last_block": last}


def check_cuts(path: Path, offsets: list[int], folder: Path) -> list[dict[str, Any]]:
    """Open ``path`` cut at each of ``offsets`` bytes and compare with the whole file: each
    result is ``{"offset", "outcome"}``, the outcome ``"error"`` (a FormatError naming the
    file), ``"whole"`` (identical), ``"partial"`` (every node a prefix of the whole file's,
    flagged incomplete with an IncompleteFileWarning) or ``"WRONG: ..."``."""
    import warnings

    import daqlab as dl
    from daqlab.tree import run_nodes

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dl.IncompleteFileWarning)  # an unfinalised file, whole
        full = run_nodes(dl.open_tree(path))
    data = path.read_bytes()
    out: list[dict[str, Any]] = []
    for offset in offsets:
        cut = folder / f"cut{offset}.mf4"
        cut.write_bytes(data[:offset])
        result: dict[str, Any] = {"offset": offset}
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                tree = dl.open_tree(cut)
        except dl.FormatError as exc:
            result["outcome"] = "error" if cut.name in str(exc) else f"WRONG: message without the name: {exc}"
            result["message"] = str(exc)[:200]
        except Exception as exc:  # anything else is what the sweep looks for
            result["outcome"] = f"WRONG: {type(exc).__name__}: {exc}"
        else:
            result["outcome"] = _compare(tree, full, caught)
            result["samples"] = {k: int(v.sizes["time"]) for k, v in run_nodes(tree).items()}
        cut.unlink()
        out.append(result)
    return out


def _compare(tree: Any, full: dict[str, Any], caught: list[Any]) -> str:
    import daqlab as dl
    from daqlab.tree import run_nodes

    nodes = run_nodes(tree)
    if set(nodes) != set(full):
        return f"WRONG: nodes {sorted(nodes)} instead of {sorted(full)}"
    for key, run in nodes.items():
        n = run.sizes["time"]
        ref = full[key].isel(time=slice(0, n))
        for name in ("value", "quality", "time", "cal_slope", "cal_offset", "unit", "channel"):
            a, b = run[name].values, ref[name].values
            if not (np.array_equal(a, b, equal_nan=True) if a.dtype.kind == "f" else np.array_equal(a, b)):
                return f"WRONG: {key} {name} differs"
    incomplete = "incomplete" in tree.attrs["metadata"]
    warned = any(issubclass(w.category, dl.IncompleteFileWarning) for w in caught)
    same = all(run.sizes["time"] == full[k].sizes["time"] for k, run in nodes.items())
    if same and not incomplete and not warned:
        return "whole"
    if incomplete and warned:
        return "partial"
    return f"WRONG: incomplete={incomplete}, warned={warned}, all samples={same}"


def check_damage(path: Path, start: int, seed: int, count: int, folder: Path) -> dict[str, int]:
    """Open ``count`` copies of ``path`` with 1 to 4 random bytes from ``start`` on changed:
    how many opened, were FormatErrors, or raised anything else (``"WRONG: <type>"``)."""
    import random
    import warnings

    import daqlab as dl

    rng = random.Random(seed)
    data = path.read_bytes()
    damaged = folder / "damaged.mf4"
    out: dict[str, int] = {}
    for _ in range(count):
        copy = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            copy[rng.randrange(start, len(copy))] = rng.randrange(256)
        damaged.write_bytes(bytes(copy))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", dl.IncompleteFileWarning)
                dl.open_tree(damaged)
            key = "opened"
        except dl.FormatError:
            key = "error"
        except Exception as exc:  # anything else is what this looks for
            key = f"WRONG: {type(exc).__name__}: {exc}"
        out[key] = out.get(key, 0) + 1
    return out


if __name__ == "__main__":  # python -m tests.io.make_mdf cuts|damage FILE FOLDER ARGS... -> JSON lines
    import json
    import sys

    what, file, folder, *args = sys.argv[1:]
    if what == "cuts":
        for r in check_cuts(Path(file), [int(x) for x in args], Path(folder)):
            print(json.dumps(r), flush=True)
    else:
        start, seed, count = map(int, args)
        print(json.dumps(check_damage(Path(file), start, seed, count, Path(folder))))
