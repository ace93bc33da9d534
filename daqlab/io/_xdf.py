"""XDF files (Lab Streaming Layer recordings, e.g. from LabRecorder): one node per stream.

daqlab parses the published chunk layout (https://github.com/sccn/xdf/wiki/Specifications)
itself rather than through pyxdf, because pyxdf reads a chunk cut short by reusing the bytes
of the previous sample: a file cut short would open with wrong values. Every chunk is checked
against its declared length; one that does not add up is dropped whole (the last chunk of a
file cut short, or a damaged one, which is skipped). Numeric Samples chunks are decoded with
numpy, whatever mix of stamped and unstamped samples they hold (no loop per sample).

What a file becomes (:func:`open_xdf`):

* a numeric stream with a nominal rate -> a run at that rate, stamped with the stream's own
  (clock-corrected) timestamps; nominal rate 0 (irregular) -> a run with an estimated rate;
* a string stream (markers) -> an events node, one event per sample; the label of a
  multi-channel sample is the JSON array of its channels' strings (``json.loads`` gives them
  back), a one-channel sample's label is its string;
* values raw as stored (integers as float64, exact up to 2**53); channel labels, units and
  types from ``desc/channels/channel``; the stream header, footer and desc in the node's
  metadata.

Timestamps follow :func:`pyxdf.load_xdf` with ``synchronize_clocks=True`` (its default): a
sample written without a timestamp is stamped the previous one + 1/nominal_srate; the
ClockOffset measurements of a stream are fitted with pyxdf's robust (Huber) line per clock
segment (clock resets detected as pyxdf does), and that line is added to the timestamps.
Unlike pyxdf's default, timestamps are *not* dejittered (replaced by a line fit): daqlab keeps
the measured ones, so results equal ``pyxdf.load_xdf(path, dejitter_timestamps=False)``. The
node's metadata keeps the raw offsets and the applied lines (``clock_offsets``,
``clock_sync``: per segment of samples ``t = t_lsl + intercept + slope * t_lsl``), so the raw
LSL timestamps can be recovered: ``t_lsl = (t - intercept) / (1 + slope)``, with ``t`` in LSL
seconds by the root's ``time_base`` (to float64 rounding and the time axis' 1 ns). Where a
run's corrected timestamps go back (clock resets), its samples are sorted by time and
``metadata["samples_reordered"]`` says so (the segments' sample numbers are in file order).

LSL timestamps are seconds of the recording machine's local (monotonic) clock, not UTC. With a
``datetime`` in the file header (LabRecorder's wall-clock at file start), the earliest sample
of the file is placed at that instant and the rest follow by their LSL seconds; without one,
a timestamp t becomes the epoch + t seconds. The root's ``metadata["time_base"]`` says which
(and the LSL seconds placed at the datetime).

A file cut short opens with its complete chunks: the cut chunk is dropped whole (its complete
samples too). A damaged chunk is skipped (by its length, or, where the length itself is
broken, up to the next Boundary chunk, as pyxdf does). Either way the root's and the affected
nodes' ``metadata["incomplete"]`` say what is missing, with an IncompleteFileWarning; so does a
stream without a StreamFooter (a recording not finalised). Only a file with no complete stream
header (nothing but its file header, or not XDF at all) raises a FormatError.

XDF interleaves its streams chunk by chunk and has no index: the whole file is read (and
decompressed, for ``.xdfz``) into memory; with ``chunks`` the runs' data become dask arrays
of that in-memory data.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import json
import struct
import unicodedata
import warnings
import xml.etree.ElementTree as ET
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from numpy.typing import NDArray

from daqlab.errors import FormatError, IncompleteFileWarning
from daqlab.io._foreign import content_id, estimate_rate
from daqlab.model import Channel, check_channel_name
from daqlab.run import chunk_samples, make_run
from daqlab.tree import make_events, make_tree, node_id, node_names

__all__ = ["open_xdf"]

_MAGIC = b"XDF:"
_BOUNDARY = bytes.fromhex("43A546DCCBF5410FB30ED5467383CBE4")
_DTYPES = {"int8": "i1", "int16": "<i2", "int32": "<i4", "int64": "<i8", "float32": "<f4",
           "double64": "<f8"}
_TAGS = {1: "FileHeader", 2: "StreamHeader", 3: "Samples", 4: "ClockOffset", 5: "Boundary",
         6: "StreamFooter"}
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
_WINSOR = 1e-4  # pyxdf's clock-sync defaults
_RESET_STDS, _RESET_SECS, _RESET_OFFSET_STDS, _RESET_OFFSET_SECS = 5.0, 5.0, 10.0, 1.0
_BAD_CATEGORIES = ("Cc", "Cf", "Cs", "Co", "Cn")
_SYNC_METHOD = ("pyxdf's clock sync (synchronize_clocks=True, handle_clock_resets=True): a robust "
                "(Huber) line fitted to the ClockOffset values over their collection times, per "
                "clock segment; t = t_lsl + intercept + slope * t_lsl; no dejitter")


class _Damaged(Exception):
    """A chunk's content does not follow the XDF layout."""


@dataclass
class _Stream:
    """One stream as its chunks are read."""

    sid: int
    info: ET.Element
    name: str
    nchan: int
    srate: float
    fmt: str
    values: list[Any] = field(default_factory=list)  # (n, C) arrays, or lists of string rows
    stamps: list[NDArray[np.float64]] = field(default_factory=list)
    known: list[NDArray[np.bool_] | bool] = field(default_factory=list)  # per chunk; bool: all/none
    clock_times: list[float] = field(default_factory=list)
    clock_values: list[float] = field(default_factory=list)
    footer: ET.Element | None = None
    pattern: NDArray[np.bool_] | None = None  # the last mixed chunk's layout: a guess for the next
    records: dict[bool, np.dtype[Any]] = field(default_factory=dict)  # uniform chunk layouts

    @functools.cached_property
    def dtype(self) -> np.dtype[Any]:
        return np.dtype(_DTYPES[self.fmt])

    def record(self, stamped: bool) -> np.dtype[Any]:
        """One sample of a chunk whose samples all have (or all lack) their own timestamp."""
        if stamped not in self.records:
            head = [("f", "u1"), ("t", "<f8")] if stamped else [("f", "u1")]
            self.records[stamped] = np.dtype([*head, ("v", self.dtype, (self.nchan,))])
        return self.records[stamped]

    def all_known(self) -> NDArray[np.bool_]:
        """Which samples, in order, were written with their own timestamp."""
        counts = [len(t) for t in self.stamps]
        if all(k is True for k in self.known):
            return np.ones(sum(counts), bool)
        return np.concatenate([np.full(n, k) if isinstance(k, bool) else k
                               for k, n in zip(self.known, counts, strict=True)] or [np.zeros(0, bool)])


@dataclass
class _File:
    """What the chunk scan found."""

    header: ET.Element | None = None
    streams: dict[int, _Stream] = field(default_factory=dict)
    cut: dict[str, Any] | None = None
    damaged: list[dict[str, Any]] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)


# --------------------------------------------------------------------------- bytes


def _load(path: Path) -> tuple[bytes, dict[str, Any]]:
    """The file's XDF bytes (decompressed for gzip/zlib ``.xdfz``) and what was done to them."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise FormatError(f"cannot read {path} as an XDF file: {exc}. Give the path of an "
                          ".xdf or .xdfz file.") from None
    if raw.startswith(_MAGIC) or not (raw[:2] == b"\x1f\x8b" or (
            len(raw) > 1 and raw[0] & 0x0F == 8 and (raw[0] << 8 | raw[1]) % 31 == 0)):
        return raw, {}
    d = zlib.decompressobj(47)  # 32 + 15: gzip (pyxdf's .xdfz) or zlib (LabRecorder's)
    out: list[bytes] = []
    info: dict[str, Any] = {"compression": "gzip" if raw[:2] == b"\x1f\x8b" else "zlib",
                            "compressed_bytes": len(raw)}
    try:
        for i in range(0, len(raw), 1 << 22):
            out.append(d.decompress(raw[i:i + (1 << 22)]))
        out.append(d.flush())
    except zlib.error as exc:
        info["compression_error"] = str(exc)
    if not d.eof:
        info["compressed_stream_cut"] = True
    return b"".join(out), info


def _varlen(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """A variable-length integer at ``pos`` and the position after it."""
    if pos >= end:
        raise _Damaged("a variable-length integer runs past its chunk")
    nb = buf[pos]
    if nb not in (1, 4, 8):
        raise _Damaged(f"a variable-length integer of {nb} bytes (XDF allows 1, 4 or 8)")
    if pos + 1 + nb > end:
        raise _Damaged("a variable-length integer runs past its chunk")
    return int.from_bytes(buf[pos + 1:pos + 1 + nb], "little"), pos + 1 + nb


def _xml(buf: bytes, start: int, end: int) -> ET.Element:
    try:
        return ET.fromstring(buf[start:end].decode("utf-8", "replace"))
    except ET.ParseError as exc:
        raise _Damaged(f"its XML does not parse ({exc})") from None


# --------------------------------------------------------------------------- samples


def _offsets(has: NDArray[np.bool_], p: int, a: int, b: int) -> NDArray[np.int64]:
    sizes = np.where(has, a, b).astype(np.int64)
    offs = np.empty(has.size, np.int64)
    offs[0] = p
    np.cumsum(sizes[:-1], out=offs[1:])
    offs[1:] += p
    return offs


def _fits(u8: NDArray[np.uint8], has: NDArray[np.bool_], p: int, end: int, a: int, b: int) -> bool:
    """True if a sequential parse from ``p`` meets exactly the timestamp flags ``has`` and ends
    at ``end``: then it is *the* parse (each flag read decides where the next one is)."""
    offs = _offsets(has, p, a, b)
    if int(offs[-1]) + (a if has[-1] else b) != end:
        return False
    return bool(np.array_equal(u8[offs], np.where(has, 8, 0)))


def _runs(u8: NDArray[np.uint8], p: int, end: int, n: int, a: int, b: int) -> NDArray[np.bool_]:
    """The timestamp flags of ``n`` samples from ``p``, found run by run of equal flags (each
    run checked with numpy, windows doubling while a run goes on)."""
    has = np.empty(n, bool)
    k, q, window = 0, p, 64
    while k < n:
        if q >= end:
            raise _Damaged(f"its samples run past its end at sample {k} of {n}")
        f = int(u8[q])
        if f not in (0, 8):
            raise _Damaged(f"sample {k} has a timestamp of {f} bytes (XDF allows 0 or 8)")
        size = a if f else b
        m = min(n - k, window)
        cand = q + size * np.arange(m, dtype=np.int64)
        same = u8[cand[cand < end]] == f
        r = int(np.argmin(same)) if not same.all() else int(same.size)
        has[k:k + r] = bool(f)
        k, q = k + r, q + r * size
        window = window * 2 if r == m else 64
    if q != end:
        raise _Damaged(f"its {n} samples end at byte {q}, not at the chunk's end {end}")
    return has


def _numeric(s: _Stream, buf: bytes, u8: NDArray[np.uint8], p: int, end: int) -> None:
    n, p = _varlen(buf, p, end)
    dt = s.dtype
    vb = s.nchan * dt.itemsize
    a, b = 9 + vb, 1 + vb
    rest = end - p
    if n * b > rest or (n == 0 and rest):
        raise _Damaged(f"it declares {n} samples of at least {b} bytes in {rest} bytes")
    if n == 0:
        return
    if rest in (n * a, n * b):  # every sample stamped, or none: one record layout
        stamped = rest == n * a
        if buf[p:end:a if stamped else b] == (b"\x08" if stamped else b"\x00") * n:  # the flags
            rec = np.frombuffer(buf, s.record(stamped), n, p)
            s.values.append(rec["v"])
            s.stamps.append(rec["t"] if stamped else np.zeros(n))
            s.known.append(stamped)
            return
    guesses = [g for g in (s.pattern, np.arange(n) % 2 == (0 if u8[p] == 8 else 1),
                           np.arange(n) == 0) if g is not None and g.size == n]
    has = next((g for g in guesses if _fits(u8, g, p, end, a, b)), None)
    if has is None:
        has = _runs(u8, p, end, n, a, b)
    s.pattern = has
    offs = _offsets(has, p, a, b)
    starts = offs + np.where(has, 9, 1)
    s.values.append(u8[starts[:, None] + np.arange(vb)].view(dt).reshape(n, s.nchan))
    stamps = np.zeros(n)
    stamps[has] = u8[(offs[has] + 1)[:, None] + np.arange(8)].view("<f8")[:, 0]
    s.stamps.append(stamps)
    s.known.append(has)


def _strings(s: _Stream, buf: bytes, p: int, end: int) -> None:
    n, p = _varlen(buf, p, end)
    if n * (1 + 2 * s.nchan) > end - p:
        raise _Damaged(f"it declares {n} string samples in {end - p} bytes")
    stamps, known = np.zeros(n), np.zeros(n, bool)
    rows: list[list[str]] = []
    for k in range(n):
        flag = buf[p] if p < end else -1
        if flag == 8 and p + 9 <= end:
            stamps[k], known[k] = struct.unpack_from("<d", buf, p + 1)[0], True
        elif flag != 0:
            raise _Damaged(f"sample {k} has a bad timestamp (flag {flag}) or runs past the chunk")
        p += 1 + flag
        row = []
        for _ in range(s.nchan):
            length, p = _varlen(buf, p, end)
            if p + length > end:
                raise _Damaged(f"a string of sample {k} runs past the chunk")
            row.append(buf[p:p + length].decode("utf-8", "replace"))
            p += length
        rows.append(row)
    if p != end:
        raise _Damaged(f"its {n} samples end at byte {p}, not at the chunk's end {end}")
    s.values.append(rows)
    s.stamps.append(stamps)
    s.known.append(known)


# --------------------------------------------------------------------------- chunks


def _stream_header(buf: bytes, p: int, end: int, sid: int) -> _Stream:
    info = _xml(buf, p, end)
    try:
        nchan = int(info.findtext("channel_count", ""))
        srate = float(info.findtext("nominal_srate", ""))
    except ValueError:
        raise _Damaged("its channel_count or nominal_srate is not a number") from None
    fmt = (info.findtext("channel_format") or "").strip()
    if fmt not in _DTYPES and fmt != "string":
        raise _Damaged(f"channel_format {fmt!r} is none of {[*_DTYPES, 'string']}")
    if not 0 < nchan <= 1 << 20 or not np.isfinite(srate) or srate < 0:
        raise _Damaged(f"channel_count {nchan} or nominal_srate {srate} is out of range")
    name = (info.findtext("name") or "").strip() or f"stream {sid}"
    return _Stream(sid, info, name, nchan, srate, fmt)


def _chunk(f: _File, buf: bytes, u8: NDArray[np.uint8], tag: int, p: int, end: int) -> None:
    """Read one complete chunk's content ``buf[p:end]`` into ``f``; _Damaged if it is not valid."""
    if tag == 1:
        f.header = _xml(buf, p, end)
        return
    if tag not in (2, 3, 4, 6):
        key = _TAGS.get(tag, f"tag {tag}")
        f.skipped[key] = f.skipped.get(key, 0) + 1
        return
    if end - p < 4:
        raise _Damaged("it is too short to hold a stream id")
    sid = struct.unpack_from("<I", buf, p)[0]
    p += 4
    if tag == 2:
        if sid in f.streams:
            raise _Damaged(f"stream {sid} has a header already")
        f.streams[sid] = _stream_header(buf, p, end, sid)
        return
    s = f.streams.get(sid)
    if s is None:
        raise _Damaged(f"stream {sid} has no StreamHeader before it")
    if tag == 3:
        (_strings(s, buf, p, end) if s.fmt == "string" else _numeric(s, buf, u8, p, end))
    elif tag == 4:
        if end - p != 16:
            raise _Damaged(f"a ClockOffset holds 16 bytes; this one {end - p}")
        t, v = struct.unpack_from("<dd", buf, p)
        s.clock_times.append(t)
        s.clock_values.append(v)
    else:
        s.footer = _xml(buf, p, end)


def _scan(buf: bytes, path: Path) -> _File:
    """Every complete chunk of ``buf`` (after the magic), in order."""
    f = _File()
    u8 = np.frombuffer(buf, np.uint8)
    pos, size = len(_MAGIC), len(buf)
    while pos < size:
        nb = buf[pos]
        length = int.from_bytes(buf[pos + 1:pos + 1 + nb], "little")
        start = pos + 1 + nb
        beyond = start + 2 > size or start + length > size
        boundary = buf.find(_BOUNDARY, pos + 1) if nb not in (1, 4, 8) or beyond else -1
        if nb not in (1, 4, 8) or (beyond and boundary >= 0):  # damage, not the cut end: resync
            nxt = size if boundary < 0 else boundary + len(_BOUNDARY)
            why = (f"a chunk length of {nb} bytes (XDF allows 1, 4 or 8)" if nb not in (1, 4, 8)
                   else f"a chunk length of {length} bytes, past the end of the file")
            where = "the next boundary chunk" if boundary >= 0 else "the end (no boundary chunk after it)"
            f.damaged.append({"at_byte": pos, "bytes_skipped": nxt - pos,
                              "reason": f"{why}; skipped to {where}"})
            pos = nxt
            continue
        if beyond:
            tag = struct.unpack_from("<H", buf, start)[0] if start + 2 <= size else None
            f.cut = {"at_byte": pos, "bytes_unread": size - pos, "declared_bytes": length,
                     "tag": _TAGS.get(tag, tag) if tag is not None else None}
            if tag == 3 and start + 6 <= size:
                sid = struct.unpack_from("<I", buf, start + 2)[0]
                f.cut["stream_id"] = sid
                with contextlib.suppress(_Damaged):
                    f.cut["samples_dropped"] = _varlen(buf, start + 6, size)[0]
            break
        end = start + length
        tag = struct.unpack_from("<H", buf, start)[0] if length >= 2 else -1
        try:
            if length < 2:
                raise _Damaged(f"a chunk of {length} bytes has no room for its tag")
            _chunk(f, buf, u8, tag, start + 2, end)
        except _Damaged as exc:
            if pos == len(_MAGIC) and tag == 1:
                raise FormatError(f"{path} is not a readable XDF file: its FileHeader chunk is "
                                  f"damaged: {exc}.") from None
            f.damaged.append({"at_byte": pos, "tag": _TAGS.get(tag, tag), "bytes_skipped": end - pos,
                              "reason": str(exc)})
        pos = end
    return f


# --------------------------------------------------------------------------- clocks


def _deduce(stamps: NDArray[np.float64], known: NDArray[np.bool_], tdiff: float) -> NDArray[np.float64]:
    """pyxdf's rule: a sample without a timestamp gets the previous one + ``tdiff`` (the first
    of a stream: 0 + tdiff), added one sample after the other, as pyxdf rounds them."""
    if known.all():
        return stamps
    ext = np.concatenate(([0.0], stamps))
    kn = np.concatenate(([True], known))
    pos = np.arange(ext.size)
    depth = pos - np.maximum.accumulate(np.where(kn, pos, 0))  # place in a run of unstamped
    run_ends = np.flatnonzero((depth > 0) & np.append(depth[1:] == 0, True))
    for e in run_ends[depth[run_ends] > 32]:  # long runs: one sequential sum each
        s = e - depth[e] + 1
        ext[s:e + 1] = np.add.accumulate(np.concatenate(([ext[s - 1]], np.full(e + 1 - s, tdiff))))[1:]
        depth[s:e + 1] = 0
    for j in range(1, int(depth.max()) + 1):  # short runs: all runs' j-th samples at once
        sel = np.flatnonzero(depth == j)
        ext[sel] = ext[sel - 1] + tdiff
    return ext[1:]


def _breaks(diff: NDArray[np.float64], stds: float, secs: float) -> NDArray[np.bool_]:
    median = np.median(diff)
    shift = diff - median
    mad = np.median(np.abs(shift)) + np.finfo(float).eps
    result: NDArray[np.bool_] = (np.abs(shift / mad) > stds) & (np.abs(shift) > secs)
    return result


def _clock_ranges(times: list[float], values: list[float]) -> list[tuple[int, int]]:
    """Clock segments between detected clock resets, as pyxdf finds them (inclusive indices)."""
    t_diff, v_diff = np.diff(times), np.diff(values)
    resets = (t_diff < 0) | (_breaks(t_diff, _RESET_STDS, _RESET_SECS)
                             & _breaks(v_diff, _RESET_OFFSET_STDS, _RESET_OFFSET_SECS))
    at = np.flatnonzero(resets)
    return list(zip(np.hstack(([0], at + 1)).tolist(), np.hstack((at, resets.size)).tolist(),
                    strict=True))


def _robust_fit(a_in: NDArray[np.float64], y: NDArray[np.float64]) -> NDArray[np.float64]:
    """Huber-loss line fit by ADMM (rho 1, 1000 iterations), step for step as pyxdf's
    ``_robust_fit`` (BSD-2, after Boyd's ADMM codes), so that the results are identical; it
    stops early only once the iteration has reached a fixed point (z and u the same as in the
    step before: every further step would repeat it), mostly after some 50 steps."""
    a = np.copy(a_in)
    offset = np.min(a[:, 1])
    a[:, 1] -= offset
    aty = np.dot(a.T, y)
    lower = np.linalg.cholesky(np.dot(a.T, a))
    upper = lower.T
    z: NDArray[Any] = np.zeros_like(y)
    u, x = z, z
    for _ in range(1000):
        x = np.linalg.solve(upper, np.linalg.solve(lower, aty + np.dot(a.T, z - u)))
        d = np.dot(a, x) - y + u
        d_inv = np.zeros_like(d)
        np.divide(1, d, out=d_inv, where=d != 0)
        tmp = np.maximum(0, (1 - (1 + 1 / 1) * np.abs(d_inv)))
        z_next = 1 / (1 + 1) * d + 1 / (1 + 1) * tmp * d
        u_next = d - z_next
        if np.array_equal(z_next, z) and np.array_equal(u_next, u):
            break
        z, u = z_next, u_next
    x[0] -= x[1] * offset
    return x


def _corrupt_last_offset(times: list[float], values: list[float]) -> bool:
    """pyxdf's test for the pylsl#67 / liblsl#246 bug's garbage last ClockOffset."""
    if len(times) < 3:
        return False
    t, v = np.asarray(times), np.asarray(values)
    intervals = np.diff(t)
    median_interval = np.median(intervals[:-1])
    last = np.abs(intervals[-1])
    ratio = last / median_interval if median_interval > 0 else (np.inf if last > 0 else 1.0)
    median_val = np.median(v[:-1])
    mad = np.median(np.abs(v[:-1] - median_val))
    z = np.abs(v[-1] - median_val) / (1.4826 * mad) if mad > np.finfo(float).eps else 0.0
    return bool(ratio > 10.0 or z > 10.0)


def _sync(s: _Stream, ts: NDArray[np.float64], count: int) -> tuple[NDArray[np.float64], int, dict[str, Any]]:
    """Clock-corrected timestamps, the number of samples kept (pyxdf drops the extra samples of
    the pylsl#67 bug), and what was done."""
    times, values = list(s.clock_times), list(s.clock_values)
    done: dict[str, Any] = {"applied": False, "method": _SYNC_METHOD, "segments": []}
    footer_count = s.footer.findtext("sample_count") if s.footer is not None else None
    try:
        expected = int(footer_count) if footer_count is not None else None
    except ValueError:
        expected = None
    if expected is not None and count > expected and _corrupt_last_offset(times, values):
        done["dropped_last_offset"] = {"time": times[-1], "value": values[-1]}
        done["dropped_samples"] = count - expected
        times, values, count = times[:-1], values[:-1], expected
        ts = ts[:count]
    if ts.size == 0 or not times:
        return ts, count, done
    ranges = _clock_ranges(times, values) if len(times) > 1 else [(0, len(times) - 1)]
    coefs: list[tuple[float, float]] = []
    for lo, hi in ranges:
        if lo == hi:
            coefs.append((values[lo], 0.0))
            continue
        design = np.column_stack([np.ones(hi + 1 - lo), np.array(times[lo:hi + 1]) / _WINSOR])
        try:
            c = _robust_fit(design, np.array(values[lo:hi + 1]) / _WINSOR)
            c[0] *= _WINSOR
            coefs.append((float(c[0]), float(c[1])))
        except np.linalg.LinAlgError:
            coefs.append((0.0, 0.0))
    ts = ts.copy()
    start = 0
    for (c0, c1), (lo, hi) in zip(coefs, ranges, strict=True):
        if hi + 1 < len(times):  # up to the first sample nearer the next segment's first offset
            near = np.abs(ts[start:] - times[hi]) < np.abs(ts[start:] - times[hi + 1])
            stop = start + (near.size if near.all() else int(np.argmin(near)))
        else:
            stop = ts.size
        if stop > start:
            ts[start:stop] += c0 + c1 * ts[start:stop]
            done["segments"].append({"first_sample": start, "last_sample": stop - 1,
                                     "offsets": [lo, hi], "intercept": c0, "slope": c1})
            start = stop
    done["applied"] = True
    return ts, count, done


# --------------------------------------------------------------------------- tree


def _json(el: ET.Element) -> Any:
    """An XML element as JSON: text for a leaf, else a dict of its children (a list where a tag
    repeats); attributes under ``@name``."""
    children = list(el)
    if not children and not el.attrib:
        return (el.text or "").strip()
    groups: dict[str, list[Any]] = {}
    for child in children:
        groups.setdefault(child.tag, []).append(_json(child))
    out: dict[str, Any] = {f"@{k}": v for k, v in el.attrib.items()}
    out.update({k: v[0] if len(v) == 1 else v for k, v in groups.items()})
    return out


def _channels(s: _Stream) -> tuple[list[Channel], dict[str, Any]]:
    """The stream's channels from desc/channels (label, unit, type), names made valid and unique."""
    described = s.info.findall("desc/channels/channel")
    labels, units, types = [], [], []
    for i in range(s.nchan):
        ch = described[i] if i < len(described) else None
        label = (ch.findtext("label") or ch.findtext("name") or "") if ch is not None else ""
        labels.append(label)
        units.append((ch.findtext("unit") or "").strip() if ch is not None else "")
        types.append((ch.findtext("type") or "").strip() if ch is not None else "")
    names: list[str] = []
    renamed: dict[str, str] = {}
    for i, label in enumerate(labels):
        name = "".join(c for c in label.replace("/", "_")
                       if unicodedata.category(c) not in _BAD_CATEGORIES).strip()
        if name in ("", ".", ".."):
            name = f"ch{i}"
        base, k = name, 1
        while name in names:
            k += 1
            name = f"{base}_{k}"
        check_channel_name(name)
        names.append(name)
        if name != label:
            renamed[name] = label
    meta: dict[str, Any] = {"channel_types": types}
    if renamed:
        meta["renamed_channels"] = renamed
    if len(described) != s.nchan:
        meta["described_channels"] = f"{len(described)} of {s.nchan} in desc/channels"
    return [Channel(n, u) for n, u in zip(names, units, strict=True)], meta


def _origin(header: ET.Element | None) -> tuple[int | None, dict[str, Any]]:
    """The file header's ``datetime`` as ns since the epoch (UTC), and what the time base is."""
    text = (header.findtext("datetime") or "").strip() if header is not None else ""
    ns: int | None = None
    naive = False
    if text:
        try:
            when = _dt.datetime.fromisoformat(text)
            naive = when.tzinfo is None
            delta = (when.replace(tzinfo=_dt.UTC) if naive else when) - _EPOCH
            ns = (delta.days * 86_400 + delta.seconds) * 10**9 + delta.microseconds * 1000
        except (ValueError, OverflowError):
            ns = None
    if ns is not None and abs(ns) < 2**62:  # room for the recording's length either way
        return ns, {"kind": "file_header_datetime", "datetime": text,
                    "note": "the earliest sample of the file is placed at the file header's "
                            "datetime" + (" (no UTC offset given: taken as UTC)" if naive else "")
                            + "; t_utc = datetime + (t_lsl - lsl_seconds_at_datetime)"}
    unusable = f" (its datetime {text!r} is not a usable ISO 8601 date)" if text else ""
    return None, {"kind": "epoch_plus_lsl_seconds",
                  "note": f"no datetime in the file header{unusable}: t_utc = 1970-01-01 + t_lsl "
                          "seconds (LSL clocks count from an arbitrary origin, e.g. the machine's boot)"}


def _to_ns(ts: NDArray[np.float64], origin: int, base: float) -> NDArray[np.datetime64]:
    """LSL seconds ``ts`` as UTC datetime64[ns]: ``origin`` ns + (ts - base) s, rounded to the ns."""
    return (np.int64(origin) + np.rint((ts - base) * 1e9).astype(np.int64)).view("datetime64[ns]")


def _stream_meta(s: _Stream, done: dict[str, Any], ts: NDArray[np.float64]) -> dict[str, Any]:
    info = {el.tag: _json(el) for el in s.info if el.tag != "desc"}
    desc = s.info.find("desc")
    meta: dict[str, Any] = {
        "stream_id": s.sid, "stream_info": info,
        "desc": _json(desc) if desc is not None else {},
        "footer": _json(s.footer) if s.footer is not None else None,
        "clock_offsets": {"collection_times": s.clock_times, "values": s.clock_values},
        "clock_sync": done, "dejittered": False,
    }
    if s.srate > 0 and ts.size > 1 and ts[-1] != ts[0]:
        meta["effective_srate"] = float((ts.size - 1) / (ts[-1] - ts[0]))
    return meta


def _node(s: _Stream, ts: NDArray[np.float64], count: int, origin: int, base: float,
          meta: dict[str, Any], node: str, root_id: str, start: np.datetime64,
          chunks: Any) -> xr.Dataset:
    """The run (numeric stream) or events node (string stream) of ``s``'s first ``count``
    samples stamped ``ts`` (corrected LSL seconds)."""
    with np.errstate(invalid="ignore", over="ignore"):  # times datetime64[ns] cannot hold: dropped
        rel = ts - base
        keep = np.isfinite(rel) & (rel > (-9.2e18 - origin) / 1e9) & (rel < (9.2e18 - origin) / 1e9)
    if not keep.all():
        meta["samples_dropped_for_bad_timestamps"] = int((~keep).sum())
    t = _to_ns(ts[keep], origin, base)
    if s.fmt == "string":
        rows = [r for chunk in s.values for r in chunk][:count]
        if s.nchan > 1:
            meta["label_encoding"] = f"JSON array of the {s.nchan} channels' strings"
        labels = [r[0] if s.nchan == 1 else json.dumps(r, ensure_ascii=False)
                  for r, ok in zip(rows, keep, strict=True) if ok]
        return make_events(t, labels, name=s.name, metadata=meta)  # sorted by time, stably
    values = np.empty((s.nchan, sum(len(v) for v in s.values)))
    if s.values:  # one pass: strided chunk records -> (channels, samples) float64
        np.concatenate([v.T for v in s.values], axis=1, out=values)
    values = values[:, :count] if keep.all() else values[:, :count][:, keep]
    if t.size > 1 and (t[1:] < t[:-1]).any():  # a run's times never go back: sort, and say so
        order = np.argsort(t, kind="stable")
        t, values = t[order], values[:, order]
        meta["samples_reordered"] = "timestamps went back; samples sorted by time (stable)"
    channels, chan_meta = _channels(s)
    meta.update(chan_meta)
    if s.fmt == "int64" and any(((v > 2**53) | (v < -(2**53))).any() for v in s.values):
        meta["precision"] = "int64 values beyond 2**53 are rounded to float64"
    rate = s.srate if s.srate > 0 else estimate_rate([t.view(np.int64)])
    if s.srate <= 0:
        meta["sample_rate"] = "estimated (nominal_srate 0: an irregular stream)"
    run = make_run(values, channels,
                   sample_rate=rate or 1.0, times=t, name=s.name, id=node_id(root_id, node),
                   created_at=t[0] if t.size else start, metadata=meta)
    return run if chunks is None else chunk_samples(run, chunks)


def _incomplete(f: _File, load_info: dict[str, Any]) -> tuple[dict[str, Any] | None,
                                                             dict[int, dict[str, Any]]]:
    """What is missing: for the root, and per stream id."""
    reasons: list[str] = []
    root: dict[str, Any] = {}
    per: dict[int, dict[str, Any]] = {}
    if load_info.get("compressed_stream_cut") or "compression_error" in load_info:
        reasons.append("the compressed stream is cut short or damaged")
    if f.cut is not None:
        reasons.append(f"cut short: the last chunk ({f.cut['tag']}, {f.cut['declared_bytes']} bytes "
                       f"declared at byte {f.cut['at_byte']}) is incomplete and was dropped")
        root.update(bytes_unread=f.cut["bytes_unread"], cut_chunk=f.cut)
        if f.cut.get("stream_id") in f.streams:
            per[f.cut["stream_id"]] = {"reason": "its last Samples chunk was cut short and dropped",
                                       "samples_dropped": f.cut.get("samples_dropped")}
    if f.damaged:
        reasons.append(f"{len(f.damaged)} damaged chunk(s) skipped")
        root["damaged_chunks"] = f.damaged
    unfinished = [s for s in f.streams.values() if s.footer is None]
    if unfinished:
        reasons.append("not finalised: no StreamFooter for " + ", ".join(s.name for s in unfinished))
        root["streams_without_footer"] = [s.name for s in unfinished]
        for s in unfinished:
            per.setdefault(s.sid, {"reason": "no StreamFooter (the recording was not finalised)"})
    if not reasons:
        return None, per
    return {"reason": "; ".join(reasons), **root}, per


def open_xdf(path: Path, chunks: Any) -> xr.DataTree:
    """An XDF (``.xdf``) or compressed XDF (``.xdfz``, gzip or zlib) file as a tree: one node per
    stream (a run for a numeric stream, an events node for a string stream), named after the
    streams (:func:`daqlab.tree.node_names`). See the module docstring for the rules.

    A file cut short or damaged opens with its complete chunks (``metadata["incomplete"]`` on
    the root and the affected nodes, and an :class:`~daqlab.IncompleteFileWarning`); a file
    that is not XDF, or holds no complete stream header, raises a FormatError.
    """
    buf, load_info = _load(path)
    if not buf.startswith(_MAGIC):
        what = "is empty" if not buf else f"starts with {buf[:8]!r}"
        raise FormatError(f"{path} is not an XDF file: it {what}, not the magic code b'XDF:'. "
                          "Give an .xdf file (or a gzip/zlib-compressed .xdfz) written by "
                          "LabRecorder or another XDF writer.")
    f = _scan(buf, path)
    incomplete, per_stream = _incomplete(f, load_info)
    if not f.streams:
        why = incomplete["reason"] if incomplete else "it has a file header only"
        raise FormatError(f"{path} holds no complete XDF stream header ({why}); there is nothing "
                          "to open. If it is still being recorded, open it again later.")
    root_id = content_id(path)
    synced: dict[int, tuple[NDArray[np.float64], int, dict[str, Any]]] = {}
    for sid, s in f.streams.items():
        stamps = np.concatenate(s.stamps) if s.stamps else np.zeros(0)
        known = s.all_known()
        with np.errstate(invalid="ignore", over="ignore"):
            synced[sid] = _sync(s, _deduce(stamps, known, 1.0 / s.srate if s.srate > 0 else 0.0),
                                stamps.size)
    origin, time_base = _origin(f.header)
    firsts = [float(ts[np.isfinite(ts)].min()) for ts, _, _ in synced.values() if np.isfinite(ts).any()]
    base = min(firsts) if firsts and origin is not None else 0.0
    if origin is not None:
        time_base["lsl_seconds_at_datetime"] = base
    origin = 0 if origin is None else origin
    start = np.datetime64(origin, "ns")
    names = node_names(s.name for s in f.streams.values())
    nodes: dict[str, xr.Dataset] = {}
    for (sid, s), node in zip(f.streams.items(), names, strict=True):
        ts, count, done = synced[sid]
        meta = _stream_meta(s, done, ts)
        if sid in per_stream:
            meta["incomplete"] = per_stream[sid]
        nodes[node] = _node(s, ts, count, origin, base, meta, node, root_id, start, chunks)
    times = [ds["time"].values.min() for ds in nodes.values() if ds["time"].size]
    meta_root: dict[str, Any] = {
        "format": "xdf", "file": path.name,
        "file_header": _json(f.header) if f.header is not None else None,
        "time_base": time_base,
        "streams": [{"node": n, "name": s.name, "stream_id": s.sid, "channel_format": s.fmt,
                     "type": (s.info.findtext("type") or "").strip(), "nominal_srate": s.srate}
                    for n, s in zip(names, f.streams.values(), strict=True)],
        "reading": "whole file read into memory (XDF has no index); chunks= gives dask arrays of it",
        **load_info,
    }
    if f.skipped:
        meta_root["skipped_chunks"] = f.skipped
    if incomplete is not None:
        meta_root["incomplete"] = incomplete
        warnings.warn(f"{path.name} is incomplete ({incomplete['reason']}); it was opened with "
                      "its complete chunks", IncompleteFileWarning, stacklevel=2)
    return make_tree(nodes, id=root_id, name=path.stem, created_at=min(times) if times else start,
                     metadata=meta_root)
