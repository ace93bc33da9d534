"""Where the values of a TDMS file lie, for :mod:`daqlab.io._tdms`.

:func:`_walk` follows the segments' lead-ins to find whether the file is complete (and where
it is cut short); :func:`_plan` turns npTDMS's view of the segments into the byte positions of
every numeric channel's raw values (a :class:`_Layout` each), which
:mod:`daqlab.io._tdms_read` reads.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from daqlab.errors import FormatError

__all__: list[str] = []  # private to daqlab.io._tdms and daqlab.io._tdms_read, which import by name

_LEAD_IN = 28
_UNKNOWN_LENGTH = 0xFFFF_FFFF_FFFF_FFFF
_TOC_INTERLEAVED = 1 << 5
_TOC_BIG_ENDIAN = 1 << 6
_MAX_EXTENTS = 1 << 20  # more chunks than this in one segment: npTDMS reads its channels

Key = tuple[str, int | None]  # (channel path, DAQmx scaler id or None)


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
        order: Literal["big", "little"] = (
            "big" if int.from_bytes(lead[4:8], "little") & _TOC_BIG_ENDIAN else "little")
        raw_offset = int.from_bytes(lead[20:28], order)
        next_offset = int.from_bytes(lead[12:20], order)
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


def _object_keys(o: Any) -> list[Key]:
    """The keys of a segment object's values: its raw data and each of its DAQmx scalers."""
    return [(o.path, s) for s in [None, *(getattr(o, "scaler_data_types", None) or {})]]


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
                    last.update(dict.fromkeys(_object_keys(o), 0))
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
            bad.update(key for o in seg.ordered_objects for key in _object_keys(o))
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
