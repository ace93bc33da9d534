"""NI TDMS files (LabVIEW, NI-DAQmx) as trees of runs, read with npTDMS.

Each TDMS group is a node; a group whose channels differ in time base (``wf_start_time``,
``wf_start_offset``, ``wf_increment``) or length is split, one node per kind (``group``,
``group_2``), and each such node says so in ``metadata["split"]``. Root, group and channel
properties are kept (``metadata["properties"]`` and ``metadata["channels"][name]``).

npTDMS reads the file's structure (segments, objects, properties, scalings). Where a
channel's values are plain numbers in the file (contiguous, interleaved or DAQmx raw data),
this module reads them itself from the byte positions npTDMS found, straight into the
run's array and, lazily, in any slice: npTDMS reads a whole chunk of a segment for any
slice of it, which for a file written as one segment is the whole channel. Every other
channel is read through npTDMS. Linear scalings (``NI_Scale[n]_Linear_*``, composed
through their input sources) become the channel's calibration with the raw values kept;
other scalings are applied by npTDMS and noted in ``metadata["conversions"]``.

A file being written, or cut short, opens with the values of its complete samples; what
was left out is in ``metadata["incomplete"]`` and an IncompleteFileWarning.
"""

from __future__ import annotations

import io
import math
import os
import unicodedata
import warnings
from collections import defaultdict
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import dask.array
import dask.base
import numpy as np
import xarray as xr
from numpy.typing import NDArray

from daqlab.errors import DaqlabError, FormatError, IncompleteFileWarning
from daqlab.io._extras import require
from daqlab.io._foreign import content_id
from daqlab.model import Calibration, Channel, Quality, check_channel_name
from daqlab.run import assemble_run, chunked_variable, run_attrs, sample_times
from daqlab.tree import make_tree, node_id, node_names

__all__ = ["open_tdms"]

_LEAD_IN = 28
_UNKNOWN_LENGTH = 0xFFFF_FFFF_FFFF_FFFF
_TOC_INTERLEAVED = 1 << 5
_TOC_BIG_ENDIAN = 1 << 6
_RAW_SOURCE = 0xFFFF_FFFF  # a scaling's input source meaning "the raw data"
_TDMS_EPOCH_S = 2_082_844_800  # seconds from 1904-01-01 (TDMS) to 1970-01-01, both UTC
_CHUNK_SAMPLES = 1 << 18  # lazily: samples per chunk of one channel (2 MiB of float64)
_CHUNK_ROWS = 1 << 21  # samples per chunk of a node whose channels are interleaved (16 MiB)
_HASH_ASIDE = 8 << 20  # files larger than this are hashed for their id in a second thread
_MAX_EXTENTS = 1 << 20  # more chunks than this in one segment: npTDMS reads its channels

Key = tuple[str, int | None]  # (channel path, DAQmx scaler id or None)


# --------------------------------------------------------------------------- errors


@contextmanager
def _library_errors(path: Path, doing: str) -> Iterator[None]:
    """Any exception of npTDMS (or of reading the file) as a FormatError naming the file."""
    try:
        yield
    except DaqlabError:
        raise
    except Exception as exc:  # npTDMS raises ValueError, KeyError, struct.error, bare Exception...
        raise FormatError(
            f"{path.name} could not be read as a TDMS file while {doing} ({type(exc).__name__}: "
            f"{exc}); it is damaged, or not a TDMS file. Check the file (a copy that is not cut "
            "short, or the program that wrote it).") from exc


# --------------------------------------------------------------------------- completeness


@dataclass(frozen=True)
class _Tail:
    """How the file ends: complete, or the last segment cut short or still being written."""

    reason: str = ""
    segment: int = 0
    offset: int = 0
    present: int = 0
    expected: int | None = None
    in_data: bool = False
    """The last segment's metadata is complete (npTDMS reads what it holds)."""

    def metadata(self) -> dict[str, Any]:
        return {"reason": self.reason, "segment": self.segment, "segment_offset": self.offset,
                "bytes_present": self.present, "bytes_expected": self.expected}


def _walk(f: io.BufferedReader, size: int, path: Path) -> _Tail:
    """Follow the segments' lead-ins (as npTDMS does) to find whether the file is complete."""
    pos, index = 0, 0
    while pos < size:
        f.seek(pos)
        lead = f.read(_LEAD_IN)
        if len(lead) < _LEAD_IN:
            return _Tail(f"the lead-in of segment {index} is cut short ({len(lead)} of "
                         f"{_LEAD_IN} bytes)", index, pos, len(lead), None)
        if lead[:4] != b"TDSm":
            where = "at its start" if pos == 0 else f"at byte {pos}, where segment {index} should start"
            raise FormatError(
                f"{path.name} is not a TDMS file or is damaged: {lead[:4]!r} {where} instead of "
                "b'TDSm'. Give a .tdms data file (not a .tdms_index file), not cut at the front.")
        order = ">" if int.from_bytes(lead[4:8], "little") & _TOC_BIG_ENDIAN else "<"
        raw_offset = int.from_bytes(lead[20:28], "big" if order == ">" else "little")
        next_offset = int.from_bytes(lead[12:20], "big" if order == ">" else "little")
        data_pos = pos + _LEAD_IN + raw_offset
        present = size - pos
        if data_pos > size:
            return _Tail(f"the metadata of segment {index} is cut short ({present - _LEAD_IN} of "
                         f"{raw_offset} bytes)", index, pos, present, _LEAD_IN + raw_offset)
        if next_offset == _UNKNOWN_LENGTH:
            return _Tail(f"segment {index} is still being written (its length is not set yet)",
                         index, pos, present, None, True)
        end = pos + _LEAD_IN + next_offset
        if end > size:
            return _Tail(f"the raw data of segment {index} is cut short ({size - data_pos} of "
                         f"{next_offset - raw_offset} bytes)", index, pos, present, end - pos, True)
        pos, index = end, index + 1
    return _Tail()


# --------------------------------------------------------------------------- where the values lie


@dataclass
class _Layout:
    """Where one channel's raw values lie in the file: extents of evenly spaced values."""

    dtype: np.dtype[Any]
    """As stored, with its byte order (booleans as uint8)."""
    kind: str
    """``"num"``, ``"bool"`` (non-zero is 1) or ``"bit"`` (a DAQmx digital line)."""
    bit: int
    total: int = 0
    extents: NDArray[np.int64] = field(default_factory=lambda: np.empty((0, 5), np.int64))
    """One row per extent: first sample, samples, byte offset of the first, bytes from one
    to the next, and the chunk of the file it lies in (what one chunk holds of several
    channels can be read at once)."""
    ends: NDArray[np.int64] = field(default_factory=lambda: np.empty(0, np.int64))
    """The sample after each extent's last."""
    parts: list[NDArray[np.int64] | list[tuple[int, ...]]] = field(default_factory=list)

    def add(self, count: int, offset: int, stride: int, block: int) -> None:
        """One extent of ``count`` values."""
        if not self.parts or not isinstance(self.parts[-1], list):
            self.parts.append([])
        last = self.parts[-1]
        assert isinstance(last, list)
        last.append((self.total, count, offset, stride, block))
        self.total += count

    def add_many(self, count: int, offsets: NDArray[np.int64], stride: int,
                 blocks: NDArray[np.int64]) -> None:
        """Extents of ``count`` values each, at ``offsets``."""
        part = np.empty((offsets.size, 5), np.int64)
        part[:, 0] = self.total + np.arange(offsets.size, dtype=np.int64) * count
        part[:, 1], part[:, 2], part[:, 3], part[:, 4] = count, offsets, stride, blocks
        self.parts.append(part)
        self.total += offsets.size * count

    def finish(self) -> _Layout:
        arrays = [np.array(p, np.int64).reshape(-1, 5) for p in self.parts]
        self.extents = np.concatenate(arrays) if arrays else self.extents
        self.ends = self.extents[:, 0] + self.extents[:, 1]
        self.parts = []
        return self


class _Unplannable(Exception):
    """A segment this module does not read itself (npTDMS reads its channels)."""


@dataclass
class _Member:
    """One channel's values in every chunk of one segment."""

    key: Key
    dtype: np.dtype[Any]
    kind: str
    bit: int
    offset: int  # bytes from the chunk's start to the first value
    stride: int
    n: int  # values in each full chunk
    n_final: int  # values in the last chunk when it is short
    offset_final: int


def _segment_members(seg: Any, nptdms: ModuleType) -> tuple[int, list[_Member]]:
    """The chunk size of segment ``seg`` and where each channel's values lie in a chunk."""
    objs = [o for o in seg.ordered_objects if o.has_data]
    order = ">" if seg.toc_mask & _TOC_BIG_ENDIAN else "<"
    override = seg.final_chunk_lengths_override

    def final(o: Any) -> int:
        return int(o.number_values) if override is None else int(override.get(o.path, 0))

    def stored(t: Any) -> tuple[np.dtype[Any], str] | None:
        if t is None or t.nptype is None or t.nptype.kind not in "iufb":
            return None
        if t.nptype.kind == "b":
            return np.dtype(np.uint8), "bool"
        return t.nptype.newbyteorder(order), "num"

    members: list[_Member] = []
    daqmx_mod = nptdms.daqmx
    daqmx = [isinstance(o, daqmx_mod.DaqmxSegmentObject) for o in objs]
    if all(daqmx):
        dims = [(int(n), int(w)) for n, w in daqmx_mod.get_buffer_dimensions(seg.ordered_objects)]
        bases = [0, *np.cumsum([n * w for n, w in dims], dtype=np.int64).tolist()]
        raw_type = nptdms.types.DaqMxRawData
        for o in objs:
            for s in o.daqmx_metadata.scalers:
                b = int(s.raw_buffer_index)
                if dims[b][0] != int(o.number_values):
                    raise _Unplannable("a DAQmx buffer whose channels differ in length")
                found = stored(s.data_type)
                if found is None:
                    continue
                digital = isinstance(s, daqmx_mod.DigitalLineScaler)
                key: Key = (o.path, int(s.scale_id) if o.data_type is raw_type else None)
                at = bases[b] + int(s.byte_offset())
                members.append(_Member(key, found[0], "bit" if digital else found[1],
                                       int(s.raw_bit_offset) % 8 if digital else 0, at, dims[b][1],
                                       int(o.number_values), final(o), at))
        return int(bases[-1]), members
    if any(daqmx):
        raise _Unplannable("DAQmx and other data in one segment")
    sized = all(o.data_type is not None and o.data_type.size is not None for o in objs)
    if seg.toc_mask & _TOC_INTERLEAVED and sized:
        if len({int(o.number_values) for o in objs}) != 1:
            raise _Unplannable("interleaved channels of different lengths")
        width = sum(int(o.data_type.size) for o in objs)
        at = 0
        for o in objs:
            found = stored(o.data_type)
            if found is not None:
                members.append(_Member((o.path, None), found[0], found[1], 0, at, width,
                                       int(o.number_values), final(o), at))
            at += int(o.data_type.size)
        return width * int(objs[0].number_values), members
    at = at_final = 0
    for o in objs:
        found = stored(o.data_type)
        if found is not None:
            members.append(_Member((o.path, None), found[0], found[1], 0, at, found[0].itemsize,
                                   int(o.number_values), final(o), at_final))
        at += int(o.data_size)
        if override is not None and final(o):  # (types without a size are never cut short)
            at_final += final(o) * int(o.data_type.size)
    return at, members


def _plan(tdms: Any, nptdms: ModuleType, cut: int) -> tuple[dict[Key, _Layout], dict[Key, int]]:
    """Where every numeric channel's raw values lie (the ones npTDMS read the same way: the
    others are left out), and how many of them segment ``cut`` (one cut short) holds."""
    segments = tdms._reader._segments
    layouts: dict[Key, _Layout] = {}
    bad: set[Key] = set()
    last: dict[Key, int] = {}
    seen: dict[tuple[Any, ...], tuple[int, list[_Member]]] = {}
    daqmx_object = nptdms.daqmx.DaqmxSegmentObject
    blocks = 0
    for index, seg in enumerate(segments):
        chunks = int(seg.num_chunks)
        if index == cut:  # its channels, also those of which no value is complete yet
            for o in seg.ordered_objects or ():
                if o.has_data:
                    last.update({(o.path, s): 0 for s in [None, *(o.scaler_data_types or {})]})
        if chunks <= 0 or not seg.ordered_objects:
            continue
        override = seg.final_chunk_lengths_override
        # segments of the same objects have the same layout (npTDMS keeps a DAQmx object)
        shape = None if override is not None else (seg.toc_mask, *(
            id(o) if isinstance(o, daqmx_object) else (o.path, o.has_data, o.number_values, o.data_size,
                                                       o.data_type) for o in seg.ordered_objects))
        try:
            chunk, members = seen[shape] if shape in seen else _segment_members(seg, nptdms)
        except _Unplannable:
            bad.update((o.path, None) for o in seg.ordered_objects)
            bad.update((o.path, s) for o in seg.ordered_objects
                       for s in (getattr(o, "scaler_data_types", None) or {}))
            continue
        if shape is not None:
            seen[shape] = (chunk, members)
        short = override is not None
        full = chunks - 1 if short else chunks
        start = int(seg.data_position)
        for m in members:
            lay = layouts.get(m.key)
            if lay is None:
                lay = layouts[m.key] = _Layout(m.dtype, m.kind, m.bit)
            elif (lay.dtype, lay.kind, lay.bit) != (m.dtype, m.kind, m.bit):
                bad.add(m.key)
                continue
            n_final = m.n_final if short else 0
            if m.n * m.stride == chunk and (not short or m.offset_final == m.offset):
                # the chunks follow each other without a gap: one extent for the segment
                if m.n * full + n_final:
                    lay.add(m.n * full + n_final, start + m.offset, m.stride, blocks)
            elif full > _MAX_EXTENTS:
                bad.add(m.key)
                continue
            else:
                if full == 1:
                    lay.add(m.n, start + m.offset, m.stride, blocks)
                elif full:
                    k = np.arange(full, dtype=np.int64)
                    lay.add_many(m.n, start + m.offset + k * chunk, m.stride, blocks + k)
                if n_final:
                    lay.add(n_final, start + full * chunk + m.offset_final, m.stride, blocks + full)
            if index == cut:
                last[m.key] = last.get(m.key, 0) + m.n * full + n_final
        blocks += chunks
    for key, lay in layouts.items():
        meta = tdms._reader.object_metadata.get(key[0])
        if meta is None or int(meta.num_values) != lay.total:
            bad.add(key)  # not what npTDMS counted: let npTDMS read it
    return {k: v.finish() for k, v in layouts.items() if k not in bad}, last


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class _Library:
    """A channel read through npTDMS (scaled: its physical values; else raw, ``scaler``'s
    for DAQmx raw data)."""

    group: str
    channel: str
    scaled: bool
    scaler: int | None


Row = _Layout | _Library


def _convert(raw: NDArray[Any], lay: _Layout, dst: NDArray[np.float64]) -> None:
    if lay.kind == "bool":
        np.not_equal(raw, 0, out=dst, casting="unsafe")
    elif lay.kind == "bit":
        dst[...] = (raw >> lay.bit) & 1
    else:
        dst[...] = raw


def _pread(f: io.BufferedReader, offset: int, into: memoryview, path: Path) -> None:
    f.seek(offset)
    done = 0
    while done < len(into):
        got = f.readinto(into[done:])
        if not got:
            raise FormatError(
                f"{path.name} ended at byte {offset + done} while reading samples that were there "
                "when it was opened: it was cut short or replaced since. Open it again.")
        done += got


_NATIVE_F8 = np.dtype(np.float64)


_SLACK = 4096  # bytes between pieces that are still read in one go


def _read_layouts(f: io.BufferedReader, rows: Sequence[tuple[int, _Layout]], a: int, b: int,
                  out: NDArray[np.float64], path: Path) -> None:
    """Samples ``a:b`` of each ``(row, layout)`` into ``out[row]``. What the channels need of
    one chunk of the file is read at once where little else lies between (rows of
    interleaved data, small segments); large pieces are read one by one, straight into
    ``out`` where the file holds float64."""
    pieces: dict[int, list[tuple[int, _Layout, int, int, int, int]]] = defaultdict(list)
    for i, lay in rows:
        e0 = int(np.searchsorted(lay.ends, a, side="right"))
        e1 = int(np.searchsorted(lay.extents[:, 0], b, side="left"))
        for s, count, offset, stride, block in lay.extents[e0:e1].tolist():
            lo, hi = max(a, s), min(b, s + count)
            if hi > lo:
                pieces[block].append((i, lay, offset + (lo - s) * stride, hi - lo, stride, lo - a))
    for group in pieces.values():
        spans = [(at, at + (n - 1) * stride + lay.dtype.itemsize) for _, lay, at, n, stride, _ in group]
        first, end = min(x for x, _ in spans), max(y for _, y in spans)
        needed = sum(y - x for x, y in spans)
        if len(group) > 1 and end - first <= needed + _SLACK and (
                needed < len(group) << 18 or any(p[4] != p[1].dtype.itemsize for p in group)):
            buf = np.empty(end - first, np.uint8)
            _pread(f, first, buf.data, path)
            for i, lay, at, n, stride, dst in group:
                view = np.ndarray((n,), lay.dtype, buffer=buf, offset=at - first, strides=(stride,))
                _convert(view, lay, out[i, dst:dst + n])
            continue
        for (i, lay, at, n, stride, dst), (x, y) in zip(group, spans, strict=True):
            target = out[i, dst:dst + n]
            if lay.kind == "num" and lay.dtype == _NATIVE_F8 and stride == 8:
                _pread(f, at, target.data.cast("B"), path)
            else:
                buf = np.empty(y - x, np.uint8)
                _pread(f, x, buf.data, path)
                _convert(np.ndarray((n,), lay.dtype, buffer=buf, strides=(stride,)), lay, target)


def _read_library(tdms: Any, rows: Sequence[tuple[int, _Library]], a: int, b: int,
                  out: NDArray[np.float64], path: Path) -> None:
    """Samples ``a:b`` of each ``(row, channel)`` through npTDMS into ``out[row]``."""
    for i, row in rows:
        with _library_errors(path, f"reading channel {row.channel!r} of group {row.group!r}"):
            data = tdms[row.group][row.channel].read_data(a, b - a, scaled=row.scaled)
            if isinstance(data, dict):
                data = data[row.scaler]
            if len(data) != b - a:
                raise FormatError(
                    f"{path.name}: npTDMS gave {len(data)} values of channel {row.channel!r} "
                    f"where {b - a} were there when the file was opened; it changed since. Open it again.")
            out[i] = data


@contextmanager
def _library_file(nptdms: ModuleType, path: Path, f: io.BufferedReader) -> Iterator[Any]:
    """npTDMS's view of the open file ``f`` (metadata read, samples left on disk). Given a
    file object, npTDMS reads no ``.tdms_index`` file (which may not match a file being written)."""
    with _library_errors(path, "reading its metadata"):
        f.seek(0)
        tdms = nptdms.TdmsFile.open(f, raw_timestamps=True)
    try:
        yield tdms
    finally:
        tdms.close()


def _open_file(path: Path) -> io.BufferedReader:
    try:
        return path.open("rb")
    except OSError as exc:
        raise FormatError(f"{path} could not be opened as a TDMS file ({type(exc).__name__}: "
                          f"{exc}); give the path of a readable .tdms file.") from exc


class _NodeReader:
    """The samples of one node, for dask: each read opens the file (reading only what it
    needs; npTDMS for channels read through it), so that any thread or worker can read."""

    def __init__(self, path: Path, rows: list[Row], n: int, identity: tuple[int, int, int]) -> None:
        self.path, self.rows, self.identity = path, rows, identity
        self.shape, self.ndim = (len(rows), n), 2
        self.dtype: np.dtype[Any] = np.dtype(np.float64)

    def read(self, rows: Sequence[int], a: int, b: int, f: io.BufferedReader | None = None,
             tdms: Any = None) -> NDArray[Any]:
        """Samples ``a:b`` of the node's channels ``rows``, from the open file ``f`` (and
        npTDMS's ``tdms``) or, without them, opening the file."""
        out = np.empty((len(rows), max(b - a, 0)))
        chosen = [(i, self.rows[j]) for i, j in enumerate(rows)]
        fast = [(i, r) for i, r in chosen if isinstance(r, _Layout)]
        slow = [(i, r) for i, r in chosen if isinstance(r, _Library)]
        if b <= a or not chosen:
            return out
        if f is not None:
            _read_layouts(f, fast, a, b, out, self.path)
            if slow:
                _read_library(tdms, slow, a, b, out, self.path)
            return out
        with _open_file(self.path) as g:
            st = os.fstat(g.fileno())
            if (st.st_dev, st.st_ino) != self.identity[:2] or st.st_size < self.identity[2]:
                raise FormatError(
                    f"{self.path} was replaced or cut short after it was opened lazily; its samples "
                    "are no longer the ones opened. Open it again.")
            try:
                _read_layouts(g, fast, a, b, out, self.path)
            except OSError as exc:
                raise FormatError(f"{self.path.name} could not be read ({exc}).") from exc
            if slow:
                with _library_file(require("nptdms", "formats", "reading TDMS files"), self.path,
                                   g) as t:
                    _read_library(t, slow, a, b, out, self.path)
        return out

    def __getitem__(self, key: Any) -> NDArray[Any]:
        key = (key if isinstance(key, tuple) else (key,)) + (slice(None),) * 2
        rows, times = key[:2]
        if isinstance(rows, slice) and isinstance(times, slice):
            a, b, step = times.indices(self.shape[1])
            if step == 1:
                return self.read(range(self.shape[0])[rows], a, b)
        # any other key (dask gives slices): read what it can touch, then index that
        whole: NDArray[Any] = self.read(range(self.shape[0]), 0, self.shape[1])[key[:2]]
        return whole


def _may_be_bad(row: Row) -> bool:
    """Whether a channel's values can be NaN or infinite (not if they are integers as stored)."""
    return not (isinstance(row, _Layout) and (row.kind != "num" or row.dtype.kind in "iu"))


class _FlagReader(_NodeReader):
    """The quality flags of a node's samples, for dask. They are read on their own (not
    computed from the values' chunks), so that a computation needing both holds no value
    chunk longer for the flags' sake; channels of integers are never read for them."""

    def __init__(self, values: _NodeReader) -> None:
        super().__init__(values.path, values.rows, values.shape[1], values.identity)
        self.dtype = np.dtype(np.int8)

    def read(self, rows: Sequence[int], a: int, b: int, f: io.BufferedReader | None = None,
             tdms: Any = None) -> NDArray[Any]:
        rows = list(rows)
        out = np.zeros((len(rows), max(b - a, 0)), np.int8)
        floats = [i for i, j in enumerate(rows) if _may_be_bad(self.rows[j])]
        if floats and b > a:
            out[floats] = _quality(super().read([rows[i] for i in floats], a, b, f, tdms))
        return out


def _times(start_ns: int, n: int, rate: float) -> NDArray[np.datetime64]:
    """:func:`daqlab.run.sample_times` from sample 0, in one pass where the step is whole ns."""
    step = 1e9 / rate
    if step.is_integer() and abs(start_ns) + n * step < 2**62:
        return np.arange(start_ns, start_ns + n * int(step), int(step), dtype=np.int64)[:n].view(
            "datetime64[ns]")
    return sample_times(start_ns, 0, n, rate)


def _quality(values: NDArray[np.float64]) -> NDArray[np.int8]:
    """BAD where a value is NaN or infinite, else GOOD (TDMS channels have no valid range)."""
    flags = np.isfinite(values)
    np.logical_not(flags, out=flags)
    out = flags.view(np.int8)
    out *= np.int8(Quality.BAD)
    return out


# --------------------------------------------------------------------------- properties


def _timestamp_ns(value: Any) -> int | None:
    """A TDMS timestamp (or numpy datetime64) as int ns since 1970 UTC; None outside datetime64[ns]."""
    if hasattr(value, "second_fractions"):
        frac = (int(value.second_fractions) * 10**9 + (1 << 63)) >> 64
        ns = (int(value.seconds) - _TDMS_EPOCH_S) * 10**9 + frac
    elif isinstance(value, np.datetime64) and not np.isnat(value):
        ns = int(value.astype("datetime64[ns]").astype(np.int64))
    else:
        return None
    return ns if -(2**63) < ns < 2**63 else None


def _json(value: Any) -> Any:
    """A property value as JSON (timestamps as ISO 8601 UTC text to the nanosecond)."""
    if value is None:
        return None
    if hasattr(value, "second_fractions") or isinstance(value, np.datetime64):
        ns = _timestamp_ns(value)
        if ns is None:
            return str(value)
        return f"{np.datetime64(ns, 'ns')}Z"
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _props(props: Any) -> dict[str, Any]:
    return {str(k): _json(v) for k, v in props.items()}


def _text(value: Any) -> str:
    """Text for a unit or description: control characters dropped."""
    return "".join(c for c in str(value) if unicodedata.category(c) not in ("Cc", "Cs")).strip()


def _channel_names(names: Sequence[str]) -> list[str]:
    """Valid, unique channel names for TDMS channel names ('/' and control characters as '_')."""
    out: list[str] = []
    for i, raw in enumerate(names):
        text = "".join("_" if c == "/" or unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn")
                       else c for c in raw).strip()
        try:
            name = check_channel_name(text)
        except ValueError:
            name = f"channel {i}"
        base, k = name, 1
        while name in out:
            k += 1
            name = f"{base}_{k}"
        out.append(name)
    return out


# --------------------------------------------------------------------------- scaling and time


@dataclass(frozen=True)
class _Conversion:
    calibration: Calibration | None  # None: read npTDMS's physical values (``note`` says why)
    scaler: int | None  # the DAQmx raw scaler the calibration applies to
    note: str = ""


def _conversion(nptdms: ModuleType, channel: Any, group: Any, tdms: Any, daqmx: bool) -> _Conversion:
    """The channel's scaling as npTDMS finds it (on the channel, its group or the file): a
    calibration of raw values where it is linear, else npTDMS applies it."""
    scaling = nptdms.scaling.get_scaling(channel.properties, group.properties, tdms.properties)
    scalers = sorted(channel.scaler_data_types or {}) if daqmx else []
    if scaling is None:
        if daqmx and len(scalers) != 1:
            return _Conversion(None, None, "skip: DAQmx raw data with several scalers and no scaling")
        return _Conversion(Calibration(), scalers[0] if daqmx else None,
                           "raw: DAQmx raw data without scaling properties" if daqmx else "")
    sc, steps = nptdms.scaling, scaling.scalings
    slope, offset, index = 1.0, 0.0, len(steps) - 1
    source, broken = None, ""
    for _ in range(len(steps) + 1):  # bounded: input sources may (wrongly) loop
        step = steps[index] if 0 <= index < len(steps) else None
        if isinstance(step, sc.DaqMxScalerScaling):
            source = int(step.scale_id) if daqmx else _RAW_SOURCE
            break
        if isinstance(step, sc.LinearScaling):
            a, b = float(step.slope), float(step.intercept)
        elif isinstance(step, sc.PolynomialScaling) and len(step.coefficients) == 2:
            a, b = float(step.coefficients[1]), float(step.coefficients[0])
        elif isinstance(step, sc.NoOpScaling):
            a, b = 1.0, 0.0
        elif step is None:
            broken = f"its scaling uses scale {index}, which the file does not define"
            break
        else:
            return _Conversion(None, None, "applied: " + type(step).__name__.removesuffix("Scaling").lower())
        slope, offset = slope * a, offset + slope * b
        index = int(step.input_source)
        if index == _RAW_SOURCE:
            source = _RAW_SOURCE
            break
    else:
        broken = "its scales take their input from each other in a loop"
    if daqmx and source not in scalers:
        source = scalers[0] if len(scalers) == 1 else None
        broken = broken or "its scaling does not start from one of its DAQmx scalers"
    if broken:  # npTDMS cannot scale it either
        if daqmx and source is None:
            return _Conversion(None, None, f"skip: {broken}")
        return _Conversion(Calibration(), source if daqmx else None, f"raw: {broken}")
    try:
        return _Conversion(Calibration(slope, offset), source if daqmx else None)
    except DaqlabError:  # a zero or non-finite slope cannot be undone: npTDMS applies it
        return _Conversion(None, None, f"applied: linear with slope {slope!r} and offset {offset!r}")


@dataclass(frozen=True)
class _TimeBase:
    start_ns: int
    rate: float
    note: str = ""


def _time_base(props: Any) -> tuple[tuple[Any, ...], _TimeBase]:
    """The channel's waveform timing (a hashable key, and the start and rate it gives)."""
    start_prop = props.get("wf_start_time")
    start = _timestamp_ns(start_prop) if start_prop is not None else None
    inc, off = props.get("wf_increment"), props.get("wf_start_offset", 0.0)
    try:
        inc_f, off_f = float(inc), float(off)
    except (TypeError, ValueError):
        inc_f, off_f = math.nan, 0.0
    regular = math.isfinite(inc_f) and inc_f > 0 and math.isfinite(1.0 / inc_f)
    off_f = off_f if math.isfinite(off_f) else 0.0
    note = "" if start is not None else (
        "no wf_start_time: times count from 1970-01-01" if start_prop is None
        else f"wf_start_time {_json(start_prop)} is outside datetime64[ns]: times count from 1970-01-01")
    base = 0 if start is None else start
    if not regular:  # (a key holds no NaN: NaN is not equal to itself)
        why = "no wf_increment" if inc is None else f"wf_increment {inc!r} is not a positive number"
        return (start, None, 0.0), _TimeBase(base, 1.0, f"{why}: times are sample indices, "
                                                        "sample k at start + k seconds (1 Hz)")
    return (start, inc_f, off_f), _TimeBase(base + round(off_f * 1e9), 1.0 / inc_f, note)


# --------------------------------------------------------------------------- nodes


@dataclass
class _Node:
    group: Any
    time: _TimeBase
    channels: list[Any] = field(default_factory=list)
    conversions: list[_Conversion] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    recent: list[int | None] = field(default_factory=list)
    """Values of each channel in the segment cut short (None: not in it)."""


def _nodes(nptdms: ModuleType, tdms: Any, layouts: dict[Key, _Layout], last: dict[Key, int],
           incomplete: bool) -> tuple[list[_Node], dict[str, dict[str, str]]]:
    """The nodes of the file (channels grouped by group, time base and length), and the
    channels left out, by group."""
    nodes: list[_Node] = []
    skipped: dict[str, dict[str, str]] = {}
    raw_type = nptdms.types.DaqMxRawData
    for group in tdms.groups():
        kinds: dict[tuple[Any, ...], _Node] = {}
        left = skipped.setdefault(group.name, {})
        for channel in group.channels():
            daqmx = channel.data_type is raw_type
            if channel.data_type is None:
                left[channel.name] = "holds no data"
                continue
            nptype = None if daqmx else channel.data_type.nptype
            if not daqmx and (nptype is None or nptype.kind not in "iufb"):
                left[channel.name] = f"holds {channel.data_type.__name__} values, not numbers"
                continue
            conv = _conversion(nptdms, channel, group, tdms, daqmx)
            if conv.note.startswith("skip: "):
                left[channel.name] = conv.note.removeprefix("skip: ")
                continue
            key: Key = (channel.path, conv.scaler)
            row: Row = (layouts[key] if conv.calibration is not None and key in layouts
                        else _Library(group.name, channel.name, conv.calibration is None, conv.scaler))
            n, recent = len(channel), last.get(key)
            # in a file cut short, channels alike before its last segment stay together
            timing, base = _time_base(channel.properties)
            node = kinds.setdefault((*timing, n - (recent or 0) if incomplete else n), _Node(group, base))
            node.channels.append(channel)
            node.conversions.append(conv)
            node.rows.append(row)
            node.lengths.append(n)
            node.recent.append(recent)
        nodes.extend(kinds.values())
        if not left:
            del skipped[group.name]
    return nodes, skipped


def _node_metadata(node: _Node, names: list[str], parts: int, part: int) -> dict[str, Any]:
    meta: dict[str, Any] = {"tdms_group": node.group.name, "properties": _props(node.group.properties)}
    channels = {}
    for name, ch in zip(names, node.channels, strict=True):
        channels[name] = _props(ch.properties)
        if name != ch.name:
            channels[name]["tdms_name"] = ch.name
    meta["channels"] = channels
    conversions = {name: c.note for name, c in zip(names, node.conversions, strict=True) if c.note}
    if conversions:
        meta["conversions"] = conversions
    renamed = {name: ch.name for name, ch in zip(names, node.channels, strict=True) if name != ch.name}
    if renamed:
        meta["renamed_channels"] = renamed
    if node.time.note:
        meta["time"] = node.time.note
        if "sample indices" in node.time.note:
            meta["times_are_indices"] = True
    if parts > 1:
        meta["split"] = {"group": node.group.name, "part": part, "of": parts, "reason": (
            "the group's channels differ in time base (wf_start_time, wf_start_offset, "
            "wf_increment) or length; each kind is a node")}
    return meta


def _lazy_arrays(reader: _NodeReader, chunks: dict[str, Any], node: str) -> tuple[Any, Any]:
    """Dask arrays of the node's values (read in ``chunks``) and their quality flags."""
    c, n = reader.shape
    # the file's own chunks: each channel apart where its values lie apart (as daqlab's NetCDF
    # files store them: pipelines run per channel), else rows of every channel read at once
    apart = all(isinstance(r, _Layout) and (r.extents[:, 3] == r.dtype.itemsize).all() for r in reader.rows)
    own = (1, max(1, min(n, _CHUNK_SAMPLES))) if apart else (c, max(1, min(n, _CHUNK_ROWS // c)))
    var = xr.Variable(("channel", "time"), dask.array.empty((c, n), chunks=own, dtype=np.float64))
    asked = chunked_variable(var, chunks).chunks if chunks else var.chunks
    token = dask.base.tokenize(str(reader.path), reader.identity, node, asked)
    value = dask.array.from_array(  # type: ignore[no-untyped-call]
        reader, chunks=asked, name=f"daqlab-tdms-{token}", lock=False, asarray=True,
        meta=np.empty((0, 0), np.float64))
    if any(_may_be_bad(row) for row in reader.rows):
        quality = dask.array.from_array(  # type: ignore[no-untyped-call]
            _FlagReader(reader), chunks=asked, name=f"daqlab-tdms-flags-{token}", lock=False,
            asarray=True, meta=np.empty((0, 0), np.int8))
    else:
        quality = dask.array.zeros((c, n), chunks=asked, dtype=np.int8)
    return value, quality


def open_tdms(path: Path, chunks: Any) -> xr.DataTree:
    """Open the TDMS file ``path`` as a tree of runs, one node per group (split where a group's
    channels differ in rate, start or length), lazily with dask when ``chunks`` is given (a
    dict from :func:`daqlab.run.check_chunks`; ``{}``: 2**18 samples of one channel per chunk,
    or of every channel where their values are interleaved in the file).

    Raw values are kept, with linear scalings as calibrations; a file cut short or being
    written opens with its complete samples and an IncompleteFileWarning.
    """
    nptdms = require("nptdms", "formats", "reading TDMS files")
    with _open_file(path) as f, ThreadPoolExecutor(1, thread_name_prefix="daqlab-tdms-id") as pool:
        st = os.fstat(f.fileno())
        if st.st_size == 0:
            raise FormatError(f"{path.name} is empty; a TDMS file starts with b'TDSm'.")
        with _library_errors(path, "following its segments"):
            tail = _walk(f, st.st_size, path)
        # a large file's id (a hash of its bytes) is computed while its samples are read
        ident = pool.submit(content_id, path) if st.st_size > _HASH_ASIDE else None
        with _library_file(nptdms, path, f) as tdms:
            try:
                layouts, last = _plan(tdms, nptdms, tail.segment if tail.in_data else -1)
                planned = True
            except (AttributeError, TypeError, ValueError, KeyError, IndexError):
                layouts, last, planned = {}, {}, False  # npTDMS's internals changed: it reads all
            with _library_errors(path, "reading its channels' properties"):
                nodes, skipped = _nodes(nptdms, tdms, layouts, last, bool(tail.reason))
                groups = {g.name: _props(g.properties) for g in tdms.groups()}
                version, root_props = _json(tdms.tdms_version), _props(tdms.properties)
            if not nodes:
                what = (f"is incomplete ({tail.reason}) and holds no complete channel yet"
                        if tail.reason else "holds no channel of numbers")
                raise FormatError(f"{path.name} {what} (groups {list(groups)}, channels left out: "
                                  f"{skipped}); daqlab reads numeric TDMS channels.")
            keys = node_names([n.group.name for n in nodes])
            identity = (st.st_dev, st.st_ino, st.st_size)
            samples: list[tuple[Any, Any]] = []
            for key, node in zip(keys, nodes, strict=True):
                reader = _NodeReader(path.resolve(), node.rows, min(node.lengths), identity)
                if chunks is None:
                    with _library_errors(path, f"reading the samples of group {node.group.name!r}"):
                        samples.append((reader.read(range(len(node.rows)), 0, reader.shape[1], f, tdms),
                                        None))
                else:
                    samples.append(_lazy_arrays(reader, chunks, key))
        tree_id = content_id(path) if ident is None else ident.result()
    root: dict[str, Any] = {"format": "tdms", "file": path.name, "tdms_version": version,
                            "properties": root_props}
    empty = [g for g in groups if g not in {n.group.name for n in nodes}]
    if empty:
        root["groups_left_out"] = {g: {"properties": groups[g], "channels": skipped.get(g, {})}
                                   for g in empty}
    runs = _runs(tree_id, tail, nodes, keys, samples, skipped, planned)
    if tail.reason:
        dropped = {k: r.attrs["metadata"]["incomplete"]["samples_dropped"] for k, r in runs.items()
                   if "incomplete" in r.attrs["metadata"]}
        root["incomplete"] = {**tail.metadata(), "samples_dropped": dropped}
        lost = sum(sum(v.values()) for v in dropped.values())
        warnings.warn(
            f"{path.name} is incomplete: {tail.reason}. Opened what is complete"
            + (f"; left out {lost} sample(s) of channels longer than the rest of their node"
               if lost else "") + " (the tree's metadata['incomplete'] says more).",
            IncompleteFileWarning, stacklevel=2)
    name, description = root_props.get("name"), root_props.get("description")
    return make_tree(runs, id=tree_id, metadata=root,
                     name=_text(name) if isinstance(name, str) and _text(name) else path.stem,
                     description=_text(description) if isinstance(description, str) else "")


def _runs(tree_id: str, tail: _Tail, nodes: list[_Node], keys: list[str],
          samples: list[tuple[Any, Any]], skipped: dict[str, dict[str, str]],
          planned: bool) -> dict[str, xr.Dataset]:
    """Each node's run from its channels and samples (quality flagged here for samples in memory)."""
    parts: dict[str, int] = defaultdict(int)
    for node in nodes:
        parts[node.group.name] += 1
    seen: dict[str, int] = defaultdict(int)
    runs: dict[str, xr.Dataset] = {}
    for key, node, (value, quality) in zip(keys, nodes, samples, strict=True):
        seen[node.group.name] += 1
        names = _channel_names([ch.name for ch in node.channels])
        meta = _node_metadata(node, names, parts[node.group.name], seen[node.group.name])
        if node.group.name in skipped:
            meta["skipped_channels"] = skipped[node.group.name]
        n = min(node.lengths)
        cut = {name: k - n for name, k in zip(names, node.lengths, strict=True) if k > n}
        if tail.reason and (cut or any(r is not None for r in node.recent) or (tail.in_data and not planned)):
            meta["incomplete"] = {"reason": tail.reason, "samples_dropped": cut}
        channels = tuple(Channel(name, _text(ch.properties.get("unit_string", "")),
                                 calibration=c.calibration or Calibration())
                         for name, ch, c in zip(names, node.channels, node.conversions, strict=True))
        if quality is None:  # integers are always finite: only rows of floats can be BAD
            quality = np.zeros(value.shape, np.int8)
            for i, row in enumerate(node.rows):
                if _may_be_bad(row):
                    quality[i] = _quality(value[i])
        description = node.group.properties.get("description", "")
        attrs = run_attrs(id=node_id(tree_id, key), name=str(node.group.name),
                          description=_text(description) if isinstance(description, str) else "",
                          created_at=np.datetime64(node.time.start_ns, "ns"),
                          sample_rate=node.time.rate, metadata=meta, calibrated=False)
        times = _times(node.time.start_ns, n, node.time.rate)
        runs[key] = assemble_run(value, quality, times, channels, attrs)
    return runs
