"""The XDF chunk parser: the bytes of an XDF file as streams of samples (for :mod:`daqlab.io._xdf`).

It follows the published chunk layout (https://github.com/sccn/xdf/wiki/Specifications) rather
than pyxdf's reader, which fills a chunk cut short with the bytes of the previous sample.
:func:`_load` reads a file (decompressing ``.xdfz``); :func:`_scan` walks its chunks and checks
each against its declared length: the cut last chunk of a file is dropped whole
(``_File.cut``), a damaged one is skipped by its length, or up to the next Boundary chunk where
the length itself is broken (``_File.damaged``). Samples chunks are decoded with numpy into
each :class:`_Stream`'s per-chunk values, raw timestamps and which samples had one, whatever
mix of stamped and unstamped samples a chunk holds.
"""

from __future__ import annotations

import contextlib
import functools
import struct
import xml.etree.ElementTree as ET
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from daqlab.errors import FormatError

_MAGIC = b"XDF:"
_BOUNDARY = bytes.fromhex("43A546DCCBF5410FB30ED5467383CBE4")
_DTYPES = {"int8": "i1", "int16": "<i2", "int32": "<i4", "int64": "<i8", "float32": "<f4",
           "double64": "<f8"}
_TAGS = {1: "FileHeader", 2: "StreamHeader", 3: "Samples", 4: "ClockOffset", 5: "Boundary",
         6: "StreamFooter"}


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

    def add(self, values: Any, stamps: NDArray[np.float64], known: NDArray[np.bool_] | bool) -> None:
        """One Samples chunk: its values (an (n, C) array, or n rows of strings), timestamps (0
        where a sample has none) and which samples have one (a bool: all or none)."""
        self.values.append(values)
        self.stamps.append(stamps)
        self.known.append(known)

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


def _text(el: ET.Element | None, path: str) -> str:
    """The stripped text at ``path`` in ``el`` ("" where there is none)."""
    return (el.findtext(path) or "").strip() if el is not None else ""


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
            s.add(rec["v"], rec["t"] if stamped else np.zeros(n), stamped)
            return
    guesses = [g for g in (s.pattern, np.arange(n) % 2 == (0 if u8[p] == 8 else 1),
                           np.arange(n) == 0) if g is not None and g.size == n]
    has = next((g for g in guesses if _fits(u8, g, p, end, a, b)), None)
    if has is None:
        has = _runs(u8, p, end, n, a, b)
    s.pattern = has
    offs = _offsets(has, p, a, b)
    starts = offs + np.where(has, 9, 1)
    stamps = np.zeros(n)
    stamps[has] = u8[(offs[has] + 1)[:, None] + np.arange(8)].view("<f8")[:, 0]
    s.add(u8[starts[:, None] + np.arange(vb)].view(dt).reshape(n, s.nchan), stamps, has)


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
    s.add(rows, stamps, known)


# --------------------------------------------------------------------------- chunks


def _stream_header(buf: bytes, p: int, end: int, sid: int) -> _Stream:
    info = _xml(buf, p, end)
    try:
        nchan = int(info.findtext("channel_count", ""))
        srate = float(info.findtext("nominal_srate", ""))
    except ValueError:
        raise _Damaged("its channel_count or nominal_srate is not a number") from None
    fmt = _text(info, "channel_format")
    if fmt not in _DTYPES and fmt != "string":
        raise _Damaged(f"channel_format {fmt!r} is none of {[*_DTYPES, 'string']}")
    if not 0 < nchan <= 1 << 20 or not np.isfinite(srate) or srate < 0:
        raise _Damaged(f"channel_count {nchan} or nominal_srate {srate} is out of range")
    name = _text(info, "name") or f"stream {sid}"
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
