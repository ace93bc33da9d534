"""ASAM MDF4 files (vehicle and bus loggers), read with asammdf: one node per channel group.

Each channel group is a run at its own rate, never resampled to a common time base: sample
times are the file's start time (``hd_start_time_ns``) plus the group's master channel in
seconds, to the nanosecond. Values stay raw where the file's conversion is linear (its ``a``
and ``b`` become the channel's Calibration); value-to-text conversions keep the raw numbers
and put their table in ``metadata["value_to_text"]``; other conversions (rational,
algebraic, tables) are applied and noted in ``metadata["conversions"]``. A node is named
after its group's acquisition name, else ``group<i>`` (asammdf's group index); string,
byte-array and composed channels are left out and listed in ``metadata["skipped_channels"]``.

asammdf trusts the blocks it reads. daqlab first walks the file's links itself
(:func:`scan`): a block cut short or a loop of links is a FormatError before asammdf sees
the file, and a file whose data is cut short or not finalised (``UnFinMF``) is shown to
asammdf through :class:`_Patched`, a read-only view whose cycle counters and data blocks
say exactly the complete records (the file is never written nor copied).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import re
import struct
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any
from xml.etree import ElementTree

import numpy as np
import xarray as xr
from numpy.typing import NDArray

from daqlab.checks import shown
from daqlab.errors import DaqlabError, FormatError, IncompleteFileWarning
from daqlab.io._extras import require
from daqlab.io._foreign import content_id
from daqlab.model import Calibration, Channel, Quality
from daqlab.run import assemble_run, chunked_variable, flag_quality, iso_utc, run_attrs
from daqlab.tree import make_events, make_tree, node_id, node_names

__all__ = ["TIME_CHUNK", "Layout", "channel_names", "open_mdf", "scan", "seconds_to_ns"]

_HD = 64  # the header block follows the 64-byte identification block
_HEAD = struct.Struct("<4s4xQQ")  # block id, length, link count
_NEXT_FIRST = {b"##DG", b"##CG", b"##CN", b"##FH", b"##AT", b"##EV", b"##SR", b"##DL", b"##LD", b"##CH"}
_DATA_LINK = {b"##DG": 2, b"##CN": 5, b"##SR": 1}  # links to data: walked apart (DG) or not read
_BLOCK_ID = re.compile(rb"##[A-Z]{2}")
_UNFIN_CG, _UNFIN_DT, _UNFIN_DL = 0x1, 0x4, 0x10
TIME_CHUNK = 1 << 18
"""Records per lazy read: the file's own chunks (``chunks={}``)."""


def _err(path: Path, what: str) -> FormatError:
    return FormatError(f"{path.name} is not an MDF4 file daqlab can read: {what}")


# --------------------------------------------------------------------------- the file's blocks


@dataclass(frozen=True)
class _Block:
    address: int
    kind: bytes
    length: int
    links: tuple[int, ...]
    present: int  # bytes of the block inside the file (< length: cut short)

    @property
    def data_at(self) -> int:
        return self.address + 24 + 8 * len(self.links)


class _Blocks:
    """The blocks of an open file, each read once and checked to be a block."""

    def __init__(self, f: Any, size: int, path: Path) -> None:
        self.f, self.size, self.path = f, size, path
        self.seen: dict[int, _Block] = {}
        self.linked: set[int] = set()  # every address a link points to, the block there or not

    def read(self, address: int, n: int) -> bytes:
        self.f.seek(address)
        data: bytes = self.f.read(n)
        return data

    def block(self, address: int) -> _Block | None:
        """The block at ``address``; None when the file ends before its header and links."""
        if address in self.seen:
            return self.seen[address]
        self.linked.add(address)
        if address >= self.size:
            return None
        if address % 8 or address < _HD:
            raise _err(self.path, f"a link points to byte {address}, where no block can start "
                                  "(blocks start at multiples of 8 after the identification); "
                                  "the file is damaged.")
        head = self.read(address, 24)
        if len(head) < 24:
            return None
        kind, length, nlinks = _HEAD.unpack(head)
        if not _BLOCK_ID.fullmatch(kind) or length < 24 + 8 * nlinks:
            raise _err(self.path, f"byte {address} should start a block (another block links to "
                                  f"it) but holds {head[:16]!r}; the file is damaged.")
        raw = self.read(address + 24, 8 * nlinks)
        if len(raw) < 8 * nlinks:
            return None
        b = _Block(address, kind, length, struct.unpack(f"<{nlinks}Q", raw), min(length, self.size - address))
        self.seen[address] = b
        return b

    def data(self, b: _Block, offset: int, fmt: str) -> tuple[Any, ...]:
        s = struct.Struct("<" + fmt)
        start = b.data_at + offset
        raw = self.read(start, s.size) if start + s.size <= b.address + b.length else b""
        if len(raw) < s.size:
            raise _err(self.path, f"its {b.kind.decode()} block at byte {b.address} is too short "
                                  "for its fields; the file is damaged.")
        return s.unpack(raw)

    def walk(self, start: _Block) -> None:
        """Read every block reachable from ``start`` but data (DG data, VLSD and SR data); a
        missing or cut block is a FormatError, and so is a loop of 'next' links."""
        stack = [x for x in start.links if x]
        while stack:
            a, chain = stack.pop(), set()
            while a and a not in self.seen:
                b = self.block(a)
                if b is None or b.present < b.length:
                    raise self.cut(a, b)
                chain.add(a)
                skip = _DATA_LINK.get(b.kind, -1)
                nxt = b.kind in _NEXT_FIRST
                stack.extend(x for i, x in enumerate(b.links) if x and i != skip and not (nxt and i == 0))
                a = b.links[0] if nxt and b.links else 0
                if a in chain:
                    raise _err(self.path, f"its {b.kind.decode()} blocks link in a loop (back to byte "
                                          f"{a}); the file is damaged.")

    def cut(self, address: int, b: _Block | None) -> FormatError:
        what = f"the {b.kind.decode()} block" if b is not None else "the block"
        return _err(self.path, (
            f"it is cut short at byte {self.size}: {what} at byte {address}, part of the description "
            "of the recording (groups, channels, names, conversions), is not in the file. Writers "
            "such as asammdf write the description after the data, so no sample can be placed; "
            "copy the whole file again."))


@dataclass
class _Group:
    """One channel group as daqlab counted it."""

    cycles: int  # as the file says
    records: int | None = None  # complete records; None: not counted (asammdf sorts them)
    why: str = ""


@dataclass
class Layout:
    """What :func:`scan` found in a file: its identification, start time, the complete
    records of each channel group (by the address of its CG block), and what is incomplete."""

    size: int
    version: str
    program: str
    start_ns: int
    time_flags: int
    tz_offset_min: int
    dst_offset_min: int
    unfinalised: bool
    groups: dict[int, _Group] = field(default_factory=dict)
    patches: dict[int, bytes] = field(default_factory=dict)  # byte offset -> bytes shown instead
    incomplete: dict[str, Any] = field(default_factory=dict)


class _Data:
    """Walks a data group's data blocks and counts their complete bytes, recording the patches
    that show asammdf only those (a cut DT shortened, lists holding only present blocks)."""

    def __init__(self, blocks: _Blocks, flags: int, patches: dict[int, bytes]) -> None:
        self.blocks, self.flags, self.patches = blocks, flags, patches
        self.unread = 0  # bytes in the file not used: partial records, cut compressed blocks
        self.end = max((b.address + b.length for b in blocks.seen.values()), default=0)

    def headers(self, address: int) -> None:
        """Read the headers of every data block from ``address`` (so that a stale DT length can
        be bounded by the next block)."""
        b = self.blocks.block(address) if address else None
        while b is not None and b.kind in (b"##HL", b"##DL") and b.present == b.length:
            if b.kind == b"##DL":
                for x in b.links[1:]:
                    if x:
                        self.blocks.block(x)
            b = self.blocks.block(b.links[0]) if b.links and b.links[0] else None

    def piece(self, address: int, last: bool) -> tuple[int, bool]:
        """(payload bytes usable, whole?) of the data block at ``address``."""
        b = self.blocks.block(address)
        if b is None:
            return 0, False
        if b.kind in (b"##DT", b"##DV"):
            length = b.length
            if self.flags & _UNFIN_DT and last:  # its writer may not have updated it: up to what follows
                later = [x for x in self.blocks.linked if x > address]
                room = (min(later) if later else self.blocks.size) - address
                if room > (length + 7) // 8 * 8:  # more than the padding after it
                    length = room
            present = min(length, self.blocks.size - address)
            if present != b.length:
                self.patches[address + 8] = struct.pack("<Q", present)
            self.end = max(self.end, address + present)
            return present - 24, present == length
        if b.kind == b"##DZ":
            if b.present < b.length:  # a compressed block is of no use cut short
                return 0, False
            self.end = max(self.end, address + b.length)
            return int(self.blocks.data(b, 0, "2sBxIQ")[3]), True
        raise _err(self.blocks.path, f"its data holds a {b.kind.decode()} block at byte {address} "
                                     "where a DT or DZ block belongs.")

    def chain(self, dg: _Block) -> tuple[int, bool] | None:
        """(payload bytes complete, whole?) of the data of ``dg``; None for a layout daqlab does
        not count (column storage)."""
        link_at, addr = dg.address + 24 + 16, dg.links[2]
        if not addr:
            return 0, True
        b = self.blocks.block(addr)
        if b is not None and b.kind in (b"##DT", b"##DV", b"##DZ"):
            n, whole = self.piece(addr, last=True)
            if not whole and b.kind == b"##DZ":
                self.patches[link_at] = struct.pack("<Q", 0)
            return n, whole
        if b is not None and b.kind == b"##HL" and b.present == b.length:
            link_at, addr = b.address + 24, b.links[0]
            b = self.blocks.block(addr) if addr else None
        if b is not None and b.kind == b"##LD":
            return None
        total = 0
        while True:
            if b is None or b.present < b.length:
                self.patches[link_at] = struct.pack("<Q", 0)
                return total, False
            if b.kind != b"##DL":
                raise _err(self.blocks.path, f"its data list links to a {b.kind.decode()} block at "
                                             f"byte {b.address}.")
            dl_flags, count = self.blocks.data(b, 0, "B3xI")
            links = b.links[1:1 + count]
            k = next((i for i, x in enumerate(links) if not x), len(links))  # an unfinished list
            for i in range(k):
                n, whole = self.piece(links[i], last=not b.links[0] and i == k - 1)
                total += n
                if not whole:
                    self._shorten(b, dl_flags, count, i + (n > 0))
                    return total, False
            if k < len(links) or count > len(b.links) - 1:
                self._shorten(b, dl_flags, count, k)
                return total, False
            link_at, addr = b.address + 24, b.links[0]
            if not addr:
                return total, True
            b = self.blocks.block(addr)

    def _shorten(self, dl: _Block, dl_flags: int, count: int, keep: int) -> None:
        """Show the list ``dl`` with its first ``keep`` data blocks and no next list (written
        over its own bytes: the shorter list is never longer)."""
        links = (0, *dl.links[1:1 + keep])
        if dl_flags & 1:  # blocks of equal length
            data = struct.pack("<B3xIQ", 1, keep, *self.blocks.data(dl, 8, "Q"))
        else:
            offsets = self.blocks.data(dl, 8, f"{count}Q")[:keep]
            data = struct.pack(f"<B3xI{keep}Q", 0, keep, *offsets)
        body = struct.pack(f"<{len(links)}Q", *links) + data
        self.patches[dl.address] = _HEAD.pack(b"##DL", 24 + len(body), len(links)) + body


def scan(path: Path) -> Layout:
    """Check the structure of the MDF4 file ``path`` (every linked block whole, no loop of
    links) and count each channel group's complete records; a FormatError says what is wrong."""
    with path.open("rb") as f:
        size = f.seek(0, io.SEEK_END)
        f.seek(0)
        ident = f.read(_HD)
        if len(ident) < _HD:
            raise _err(path, f"it has {size} bytes, fewer than the 64 of the identification block "
                             "every MDF file starts with (empty, or cut short).")
        file_id, version, program = ident[:8], ident[8:16], ident[16:24]
        if file_id not in (b"MDF     ", b"UnFinMF ") or not version.startswith(b"4."):
            raise _err(path, f"it starts with {ident[:16]!r}; MDF4 files start with b'MDF     4.' "
                             "(b'UnFinMF 4.' while being written).")
        flags, custom = struct.unpack_from("<HH", ident, 60)
        unfinalised = file_id == b"UnFinMF "
        blocks = _Blocks(f, size, path)
        hd = blocks.block(_HD)
        if hd is None or hd.present < hd.length or hd.kind != b"##HD":
            raise _err(path, "its header block (##HD at byte 64) is missing or cut short.")
        start_ns, tz, dst, time_flags = blocks.data(hd, 0, "QhhB")
        if start_ns >= 2**63:
            raise _err(path, f"its start time ({start_ns} ns since 1970) is beyond the dates "
                             "datetime64[ns] holds; the header is damaged.")
        layout = Layout(size, version.decode("ascii", "replace").strip(" \0"),
                        program.decode("latin-1").strip(" \0"), start_ns, time_flags, tz, dst, unfinalised)
        blocks.walk(hd)
        short, unread = _count(blocks, hd, layout, flags if unfinalised else 0)
        reasons = ["not finalised (its writer has not finished it: UnFinMF)"] if unfinalised else []
        if short:
            reasons.append("cut short (data blocks are missing or partial)")
        if reasons:
            layout.incomplete = {"reason": "the file is " + " and ".join(reasons), "bytes": size,
                                 "bytes_unread": unread}
        if unfinalised:
            layout.incomplete["unfinalised_flags"] = flags
            if custom:
                layout.incomplete["custom_unfinalised_flags"] = custom
        if layout.patches or unfinalised:
            layout.patches[0] = b"MDF     "
            layout.patches[60] = b"\0\0\0\0"
    return layout


def _count(blocks: _Blocks, hd: _Block, layout: Layout, flags: int) -> tuple[bool, int]:
    """Each group's complete records into ``layout``, with the patches that show only them;
    (whether records are missing, bytes in the file not read)."""
    dgs = []
    a = hd.links[0]
    while a:
        dgs.append(blocks.seen[a])
        a = blocks.seen[a].links[0]
    data = _Data(blocks, flags, layout.patches)
    for dg in dgs:
        data.headers(dg.links[2])
    short = False
    for dg in dgs:
        (rec_id_size,) = blocks.data(dg, 0, "B")
        cgs: list[tuple[_Block, _Group, int]] = []
        c = dg.links[1]
        while c:
            cg = blocks.seen[c]
            _, cycles, cg_flags, _, nbytes, ninval = blocks.data(cg, 0, "QQHH4xII")
            if not cg_flags & 1:  # a VLSD group holds other channels' values, not records
                cgs.append((cg, _Group(cycles), nbytes + ninval))
                _check_channels(blocks, cg, nbytes, ninval)
            c = cg.links[0]
        counted = data.chain(dg)
        unsorted = rec_id_size > 0 or len(cgs) > 1
        for cg, g, size in cgs:
            layout.groups[cg.address] = g
            cycles_at = cg.data_at + 8
            if counted is None or unsorted:
                if (counted is None and not flags) or (counted is not None and counted[1] and
                                                       not flags & _UNFIN_CG):
                    continue  # complete: asammdf sorts (or reads) its records
                g.records, g.why = 0, ("its records are interleaved with other groups' (an unsorted "
                                       "data group) or stored by column, and the data is cut short or "
                                       "not finalised: not read")
                layout.patches[cycles_at] = struct.pack("<Q", 0)
                layout.patches[dg.address + 24 + 16] = struct.pack("<Q", 0)
                short = True
                continue
            fit = counted[0] // size if size else g.cycles
            g.records = fit if flags & _UNFIN_CG else min(g.cycles, fit)
            data.unread += counted[0] - g.records * size if not counted[1] or flags else 0
            if g.records != g.cycles:
                layout.patches[cycles_at] = struct.pack("<Q", g.records)
            if flags & _UNFIN_CG:
                g.why = f"{g.records} complete records counted in the data (not finalised)"
            elif g.records < g.cycles:
                short = True
                g.why = f"{g.cycles - g.records} of its {g.cycles} records are missing (cut short)"
    return short, data.unread + max(0, blocks.size - data.end)


def _check_channels(blocks: _Blocks, cg: _Block, nbytes: int, ninval: int) -> None:
    """Every channel of ``cg`` (and of its structures) lies inside the group's records: asammdf
    does not check, and its C code reads outside its buffers for a channel that does not."""
    stack = [cg.links[1]]
    while stack:
        a = stack.pop()
        while a:
            cn = blocks.seen[a]
            if cn.kind != b"##CN":
                break  # a channel array (CA) of a structure: asammdf reads its layout
            kind, _, _, bit_offset, byte_offset, bit_count, flags, inval_bit = blocks.data(cn, 0, "BBBBIIII")
            end = byte_offset + (bit_offset + bit_count + 7) // 8
            if kind not in (3, 6) and end > nbytes:  # (virtual channels have no bytes)
                raise _err(blocks.path, f"the channel at byte {a} lies outside its group's records "
                                        f"(bytes {byte_offset}..{end} of {nbytes}); the file is damaged.")
            if flags & 2 and inval_bit // 8 >= ninval:
                raise _err(blocks.path, f"the channel at byte {a} has its invalidation bit {inval_bit} "
                                        f"outside its group's {ninval} invalidation bytes; the file is "
                                        "damaged.")
            if len(cn.links) > 1 and cn.links[1]:
                stack.append(cn.links[1])  # a structure's members
            a = cn.links[0]


class _Patched(io.BufferedIOBase):
    """The file ``path`` read-only, showing the bytes of ``patches`` in place of its own."""

    def __init__(self, path: Path, patches: dict[int, bytes]) -> None:
        super().__init__()
        self._f = path.open("rb", buffering=0)
        self._size = self._f.seek(0, io.SEEK_END)
        self._pos = 0
        self._patches = sorted(patches.items())

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def read(self, n: int | None = -1) -> bytes:
        start = self._pos
        end = self._size if n is None or n < 0 else min(self._size, start + n)
        if end <= start:
            return b""
        self._f.seek(start)
        data = bytearray(self._f.read(end - start))
        for at, new in self._patches:
            lo, hi = max(at, start), min(at + len(new), start + len(data))
            if lo < hi:
                data[lo - start:hi - start] = new[lo - at:hi - at]
        self._pos = start + len(data)
        return bytes(data)

    def read1(self, n: int = -1) -> bytes:
        return self.read(n)

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)

    def close(self) -> None:
        self._f.close()
        super().close()


# --------------------------------------------------------------------------- asammdf


class _Library:
    """A context that turns what asammdf raises into a FormatError naming the file."""

    def __init__(self, path: Path, doing: str) -> None:
        self.path, self.doing = path, doing

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        # asammdf raises its MdfException, bare Exception and every builtin error on a damaged file
        if exc is None or isinstance(exc, DaqlabError) or not isinstance(exc, Exception):
            return
        _close_half_built(exc)
        raise FormatError(f"asammdf could not {self.doing} {self.path.name}: {type(exc).__name__}: "
                          f"{shown(str(exc), 200)}. The file is damaged or uses an MDF4 feature "
                          "asammdf does not read.") from exc


def _close_half_built(exc: BaseException) -> None:
    """Close what an asammdf MDF4 that failed in its constructor left open, and mark it closed:
    its ``__del__`` would otherwise raise (an 'Exception ignored' report) on the attributes
    it never set."""
    tb = exc.__traceback__
    while tb is not None:
        obj: Any = tb.tb_frame.f_locals.get("self")
        if type(obj).__name__ == "MDF4" and not getattr(obj, "_closed", True):
            for name in ("_file", "_mapped_file", "_tempfile"):
                with contextlib.suppress(Exception):
                    getattr(obj, name).close()
            obj._closed = True
        tb = tb.tb_next


Samples = tuple[NDArray[Any], NDArray[np.bool_] | None]


class _Source:
    """A file's asammdf MDF, opened when first needed, read by one thread at a time; in a dask
    graph it pickles to the path and layout (a worker opens its own).

    ``mapped``: asammdf maps the file into memory (its fastest reads, used to load a whole
    file); otherwise it reads through a file object, so that a lazy run's reads add nothing
    to the process's resident memory once used (mapped pages count until unmapped)."""

    def __init__(self, path: Path, layout: Layout, mapped: bool) -> None:
        self.path, self.layout, self.mapped = path, layout, mapped
        self._lock = threading.Lock()
        self._mdf: Any = None
        self._stream: io.BufferedIOBase | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "layout": self.layout, "mapped": self.mapped}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], state["layout"], state["mapped"])  # type: ignore[misc]

    @property
    def mdf(self) -> Any:
        if self._mdf is None:
            asammdf = require("asammdf", "formats", "reading MDF4 files")
            with _Library(self.path, "open"), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # asammdf's own (deprecations...) are not the user's
                if self.layout.patches:
                    self._stream = _Patched(self.path, self.layout.patches)
                elif not self.mapped:
                    self._stream = self.path.open("rb")
                self._mdf = asammdf.MDF(self.path if self._stream is None else self._stream)
        return self._mdf

    def close(self) -> None:
        with self._lock:
            if self._mdf is not None:
                self._mdf.close()
            if self._stream is not None:
                self._stream.close()
            self._mdf = self._stream = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # never raise from a finaliser
            self.close()

    def read(self, group: int, index: list[int], offset: int, count: int) -> list[Samples]:
        """Raw samples and invalidation bits of channels ``index`` of ``group``, records
        ``offset`` to ``offset + count``. (asammdf's ``get`` drops invalid samples unless told
        to ignore the bits, which it then returns.)"""
        with self._lock, _Library(self.path, "read"):
            out = []
            for i in index:
                samples, bits = self.mdf.get(group=group, index=i, raw=True, samples_only=True,
                                             ignore_invalidation_bits=True, record_offset=offset,
                                             record_count=count)
                out.append((np.asarray(samples), None if bits is None else np.asarray(bits, bool)))
            return out

    def read_all(self, group: int, index: list[int]) -> tuple[list[Samples], NDArray[Any]]:
        """Every record of channels ``index`` of ``group`` and of its master (in seconds), the
        group's data read once."""
        with self._lock, _Library(self.path, "read"):
            sigs = self.mdf.select([(None, group, i) for i in index], raw=True, copy_master=False)
            return ([(np.asarray(s.samples), None if s.invalidation_bits is None
                      else np.asarray(s.invalidation_bits, bool)) for s in sigs],
                    np.asarray(sigs[0].timestamps))

    def master(self, group: int, offset: int, count: int) -> NDArray[Any]:
        """The master channel (in seconds) of records ``offset`` to ``offset + count``."""
        with self._lock, _Library(self.path, "read the master channel of"):
            return np.asarray(self.mdf.get_master(group, record_offset=offset, record_count=count))


# --------------------------------------------------------------------------- channels


_LINEAR, _IDENTITY = 1, 0
_TEXT_KINDS = {7: "value_to_text", 8: "range_to_text", 11: "bitfield_text"}
_APPLIED = {2: "rational", 3: "algebraic", 4: "table with interpolation", 5: "table",
            6: "value range to value"}
_NUMERIC = {0, 1, 2, 3, 4, 5}  # unsigned, signed and float data types (Intel or Motorola)
_BAD_CHARS = re.compile(r"[/\x00-\x1f\x7f-\x9f]")


def _text(x: Any) -> str:
    if isinstance(x, bytes):
        return x.decode("utf-8", "replace").rstrip("\0")
    return "" if x is None else str(x)


def _json(x: Any) -> Any:
    """A number as a JSON number, anything else as text."""
    if isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x)
    return _text(x)


def _text_table(conv: Any) -> dict[str, Any]:
    """The table of a value-to-text conversion, as JSON values."""
    kind = int(conv.conversion_type)
    refs = conv.referenced_blocks or {}

    def ref(key: str) -> Any:
        v = refs.get(key)
        if v is None or isinstance(v, (bytes, str)):
            return _text(v)
        sub = int(getattr(v, "conversion_type", -1))  # a nested conversion: what it is
        if sub == _LINEAR:
            return {"conversion": "linear", "a": _json(v.a), "b": _json(v.b)}
        return {"conversion": _TEXT_KINDS.get(sub) or _APPLIED.get(sub, f"type {sub}")}

    if kind == 11:
        masks = [[_json(conv[f"mask_{i}"]), ref(f"text_{i}")] for i in range(int(conv.val_param_nr))]
        return {"kind": _TEXT_KINDS[kind], "table": masks}
    n = int(conv.ref_param_nr) - 1
    table = ([[_json(conv[f"val_{i}"]), ref(f"text_{i}")] for i in range(n)] if kind == 7 else
             [[_json(conv[f"lower_{i}"]), _json(conv[f"upper_{i}"]), ref(f"text_{i}")] for i in range(n)])
    return {"kind": _TEXT_KINDS[kind], "table": table, "default": ref("default_addr")}


def channel_names(names: list[str]) -> tuple[list[str], dict[str, str]]:
    """Names a run takes ('/' and control characters as '_', trimmed, repeats made unique
    with ``_2``, ``_3``...) and ``{new: original}`` for those changed.

    >>> channel_names(["a", "a", "b/c", " d "])
    (['a', 'a_2', 'b_c', 'd'], {'a_2': 'a', 'b_c': 'b/c', 'd': ' d '})
    """
    out: list[str] = []
    taken: set[str] = set()
    for raw in names:
        name = _BAD_CHARS.sub("_", raw).strip()
        if name in ("", ".", ".."):
            name = "channel"
        base, k = name, 1
        while name in taken:
            k += 1
            name = f"{base}_{k}"
        taken.add(name)
        out.append(name)
    return out, {n: o for n, o in zip(out, names, strict=True) if n != o}


def _range(ch: Any, conv: Any, numeric: bool) -> tuple[float, float] | None:
    """The channel's limits (physical for numeric conversions, raw for value-to-text ones, as
    the values daqlab keeps), else its conversion's physical range."""
    lo = hi = math.nan
    if ch.flags & (1 << 4):
        lo, hi = float(ch.lower_limit), float(ch.upper_limit)
    elif conv is not None and numeric and int(getattr(conv, "flags", 0)) & 2:
        lo, hi = float(conv.min_phy_value), float(conv.max_phy_value)
    return (lo, hi) if lo < hi else None


@dataclass
class _Plan:
    """How a group's channels become a run's."""

    index: list[int] = field(default_factory=list)  # asammdf's channel indexes read
    channels: list[Channel] = field(default_factory=list)
    convert: dict[int, Any] = field(default_factory=dict)  # position -> conversion applied
    all_invalid: list[int] = field(default_factory=list)  # positions flagged BAD throughout
    with_bits: set[int] = field(default_factory=set)  # positions with invalidation bits
    metadata: dict[str, Any] = field(default_factory=dict)

    def physical(self, pos: int, raw: NDArray[Any], out: NDArray[np.float64]) -> None:
        """Channel ``pos``'s values into ``out``: ``raw`` as float64, or converted where the
        conversion is applied."""
        conv = self.convert.get(pos)
        if conv is None:
            out[...] = raw
        else:
            with np.errstate(all="ignore"):  # a conversion's inf/NaN are flagged BAD, not warned
                out[...] = conv.convert(raw)


def _plan(grp: Any, master_index: int | None) -> _Plan:
    plan = _Plan()
    skipped: dict[str, str] = {}
    for i, ch in enumerate(grp.channels):
        if i == master_index:
            continue
        deps = grp.channel_dependencies[i] if i < len(grp.channel_dependencies) else None
        if ch.channel_type not in (0, 6) or ch.data_type not in _NUMERIC or deps or ch.component_addr:
            skipped[_text(ch.name)] = (f"not a numeric scalar channel (channel type {ch.channel_type}, "
                                       f"data type {ch.data_type}{', composed' if deps else ''})")
            continue
        plan.index.append(i)
    names, renamed = channel_names([_text(grp.channels[i].name) for i in plan.index])
    meta: dict[str, dict[str, Any]] = {k: {} for k in (
        "renamed", "conversions", "value_to_text", "comments", "raw_value_ranges", "extended_limits")}
    meta["renamed"] = dict(renamed)
    for pos, (i, name) in enumerate(zip(plan.index, names, strict=True)):
        ch = grp.channels[i]
        conv = ch.conversion
        kind = _IDENTITY if conv is None else int(conv.conversion_type)
        cal = Calibration()
        if kind == _LINEAR:
            a, b = float(conv.a), float(conv.b)
            if a != 0.0 and math.isfinite(a) and math.isfinite(b):
                cal = Calibration(slope=a, offset=b)
            elif not (a == 1.0 and b == 0.0):
                plan.convert[pos] = conv
                meta["conversions"][name] = f"applied: linear with a={a!r}, b={b!r} (not invertible)"
        elif kind in _TEXT_KINDS:
            meta["value_to_text"][name] = _text_table(conv)
        elif kind != _IDENTITY:
            plan.convert[pos] = conv
            what = _APPLIED.get(kind, f"conversion type {kind}")
            formula = f" ({_text(conv.formula)})" if kind == 3 else ""
            meta["conversions"][name] = f"applied: {what}{formula}"
        unit = _text((conv is not None and getattr(conv, "unit", "")) or ch.unit)
        plan.channels.append(Channel(name, unit, range=_range(ch, conv, kind not in _TEXT_KINDS),
                                     calibration=cal))
        if _text(ch.comment):
            meta["comments"][name] = _text(ch.comment)
        if ch.flags & (1 << 3):
            meta["raw_value_ranges"][name] = [float(ch.min_raw_value), float(ch.max_raw_value)]
        if ch.flags & (1 << 5):
            meta["extended_limits"][name] = [float(ch.lower_ext_limit), float(ch.upper_ext_limit)]
        if ch.flags & 1:
            plan.all_invalid.append(pos)
        if ch.flags & 2:
            plan.with_bits.add(pos)
    plan.metadata = {k: v for k, v in {**meta, "skipped_channels": skipped}.items() if v}
    return plan


# --------------------------------------------------------------------------- times and runs


def seconds_to_ns(t: NDArray[Any]) -> NDArray[np.int64]:
    """Seconds (float64) as whole nanoseconds: the whole seconds and the fraction apart, so
    the result is the nanosecond nearest the float's own value at any magnitude.

    >>> seconds_to_ns(np.array([0.001, 1e5 + 0.1, -0.5])).tolist()
    [1000000, 100000100000000, -500000000]
    """
    t = np.asarray(t, dtype=np.float64)
    whole = np.floor(t)
    ns: NDArray[np.int64] = whole.astype(np.int64) * np.int64(1_000_000_000) + \
        np.rint((t - whole) * 1e9).astype(np.int64)
    return ns


def _rate(ns: NDArray[np.int64]) -> float:
    """1e9 / the median positive step of ``ns`` (as ``daqlab.io._foreign.estimate_rate``, with
    one copy of the steps); 1.0 Hz where there is none."""
    steps = np.diff(ns)
    if not (steps > 0).all():
        steps = steps[steps > 0]
    return float(1e9 / float(np.median(steps, overwrite_input=True))) if steps.size else 1.0


_SYNC = {0: "none", 1: "time", 2: "angle", 3: "distance", 4: "index"}


def _group_name(grp: Any, index: int) -> str:
    return _text(grp.channel_group.acq_name).strip() or f"group{index}"


class _Samples:
    """A group's values (``bad=False``: float64) or invalid-sample flags (``bad=True``: bool)
    as a (channels, records) array read from the file slice by slice (for dask). Flags are
    read only for channels that have invalidation bits."""

    def __init__(self, source: _Source, group: int, plan: _Plan, n: int, bad: bool) -> None:
        self.source, self.group, self.plan, self.bad = source, group, plan, bad
        self.shape = (len(plan.channels), n)
        self.dtype = np.dtype(bool if bad else np.float64)
        self.ndim = 2

    def __getitem__(self, key: tuple[slice, slice]) -> NDArray[Any]:
        c0, c1, _ = key[0].indices(self.shape[0])
        t0, t1, _ = key[1].indices(self.shape[1])
        out = np.zeros((c1 - c0, t1 - t0), self.dtype)
        wanted = [p for p in range(c0, c1) if not self.bad or p in self.plan.with_bits]
        if t1 > t0 and wanted:
            got = self.source.read(self.group, [self.plan.index[p] for p in wanted], t0, t1 - t0)
            for p, (raw, bits) in zip(wanted, got, strict=True):
                if raw.shape != (t1 - t0,):
                    raise _err(self.source.path, f"asammdf gave {raw.shape} samples of channel "
                                                 f"{self.plan.channels[p].name!r} for records {t0} to {t1}.")
                if not self.bad:
                    self.plan.physical(p, raw, out=out[p - c0])
                elif bits is not None:
                    out[p - c0] = bits
        if self.bad:
            out[[p - c0 for p in self.plan.all_invalid if c0 <= p < c1]] = True
        return out


def _quality(values: NDArray[np.float64], bad: NDArray[np.bool_], chans: tuple[Channel, ...]
             ) -> NDArray[np.int8]:
    q = np.where(bad, np.int8(Quality.BAD), np.int8(Quality.GOOD))
    return flag_quality(values, chans, calibrated=False, quality=q)


class _Reader:
    """Builds the runs of one file."""

    def __init__(self, path: Path, layout: Layout, source: _Source, chunks: Any, tree_id: str) -> None:
        self.path, self.layout, self.source, self.chunks, self.tree_id = path, layout, source, chunks, tree_id
        # dask keys: this file as it is now (the id alone samples the bytes of a big file)
        stat = path.stat()
        where = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{tree_id}"
        self.key = "mdf4-" + hashlib.sha256(where.encode("utf-8", "surrogatepass")).hexdigest()[:32]

    def run(self, gi: int, grp: Any, node: str) -> xr.Dataset | None:
        """The run of group ``gi`` (node name ``node``); None when it has no numeric channel."""
        cg = grp.channel_group
        info = self.layout.groups.get(cg.address)
        count = info.records if info is not None and info.records is not None else int(cg.cycles_nr)
        master_index = self.source.mdf.masters_db.get(gi)
        plan = _plan(grp, master_index)
        if not plan.channels:
            return None
        meta: dict[str, Any] = {"group_index": gi, "records": count}
        for key, value in (("acq_name", cg.acq_name), ("comment", cg.comment)):
            if _text(value):
                meta[key] = _text(value)
        if cg.acq_source:
            meta["source"] = {k: _json(getattr(cg.acq_source, k, "")) for k in ("name", "path", "comment")}
        if info is not None and info.why:
            meta["incomplete"] = {"reason": info.why, "records_read": count, "records_stated": info.cycles}
        sync = 1
        if master_index is not None:
            mch = grp.channels[master_index]
            sync = int(mch.sync_type)
            meta["master"] = {"name": _text(mch.name), "unit": _text(mch.unit),
                              "sync": _SYNC.get(sync, str(sync))}
            if sync != 1:
                meta["master"]["note"] = "not a time: samples are stamped 1 s apart from the start"
        meta.update(plan.metadata)
        attrs = {"id": node_id(self.tree_id, node), "name": _group_name(grp, gi),
                 "created_at": np.datetime64(self.layout.start_ns, "ns"), "metadata": meta}
        where = f"the master channel of group {node!r}"
        if self.chunks is None:
            return self._eager(gi, plan, count, sync, where, attrs)
        ns = np.empty(count, np.int64)
        for lo in range(0, count, TIME_CHUNK):  # in pieces: asammdf holds ~10x a piece meanwhile
            hi = min(count, lo + TIME_CHUNK)
            ns[lo:hi] = self._ns(self.source.master(gi, lo, hi - lo), lo, hi, sync, where)
        return self._lazy(gi, plan, self._checked(ns, where), attrs)

    def _ns(self, t: NDArray[Any], lo: int, hi: int, sync: int, where: str) -> NDArray[np.int64]:
        """Records ``lo`` to ``hi``'s master values ``t`` (seconds) as int ns since the epoch."""
        limit = (2**63 - 1 - abs(self.layout.start_ns)) / 1e9 - 1.0  # within datetime64[ns]
        if t.shape != (hi - lo,) or t.dtype.kind not in "iuf" or not np.isfinite(t).all() or \
                (t.size and np.abs(t).max() > limit):
            raise _err(self.path, f"{where} holds {t.shape} values of {t.dtype} for records {lo} to "
                                  f"{hi}; it should hold a finite time in seconds for each.")
        if sync != 1:
            t = np.arange(lo, hi, dtype=np.float64)
        return seconds_to_ns(t) + np.int64(self.layout.start_ns)

    def _checked(self, ns: NDArray[np.int64], where: str) -> NDArray[np.int64]:
        back = ns[1:] < ns[:-1]
        if back.any():
            k = int(np.argmax(back))
            raise _err(self.path, f"{where} goes back in time at record {k + 1} ({ns[k]} ns, then "
                                  f"{ns[k + 1]} ns since the epoch); daqlab needs times in order.")
        return ns

    def _eager(self, gi: int, plan: _Plan, n: int, sync: int, where: str, attrs: dict[str, Any]
               ) -> xr.Dataset:
        values = np.empty((len(plan.channels), n))
        q = np.zeros((len(plan.channels), n), dtype=np.int8)
        got, t = self.source.read_all(gi, plan.index) if n else ([], np.empty(0))
        ns = self._checked(self._ns(t, 0, n, sync, where), where)
        del t
        for pos in range(len(got)):
            raw, bits = got[pos]
            got[pos] = (raw[:0], None)  # each channel's copy freed once it is in ``values``
            if raw.shape != (n,):
                raise _err(self.path, f"asammdf gave {raw.shape} samples of channel "
                                      f"{plan.channels[pos].name!r} for {n} records.")
            plan.physical(pos, raw, out=values[pos])
            if bits is not None:
                q[pos, bits] = Quality.BAD
        q[plan.all_invalid] = Quality.BAD
        chans = tuple(plan.channels)
        # the file's own times (a regular group's are start + k / rate, as daqlab stamps them);
        # make_run would copy the arrays, built and checked here already
        return assemble_run(values, flag_quality(values, chans, calibrated=False, quality=q),
                            ns.view("datetime64[ns]"), chans,
                            run_attrs(description="", sample_rate=_rate(ns), calibrated=False, **attrs))

    def _lazy(self, gi: int, plan: _Plan, ns: NDArray[np.int64], attrs: dict[str, Any]) -> xr.Dataset:
        import dask.array as da

        n, chans = ns.size, tuple(plan.channels)
        sizes = tuple(min(TIME_CHUNK, n - s) for s in range(0, n, TIME_CHUNK)) or (0,)
        values, bad = (
            da.from_array(  # type: ignore[no-untyped-call]
                _Samples(self.source, gi, plan, n, flags), chunks=((len(chans),), sizes),
                name=f"{self.key}-{gi}-{flags}", asarray=False, fancy=False,
                meta=np.empty((0, 0), dtype=bool if flags else np.float64))
            for flags in (False, True))
        q = da.map_blocks(_quality, values, bad, chans, dtype=np.int8)  # type: ignore[no-untyped-call]
        run = assemble_run(values, q, ns.view("datetime64[ns]"), chans, run_attrs(
            description="", sample_rate=_rate(ns), calibrated=False, **attrs))
        if self.chunks:
            run = run.assign({k: chunked_variable(run[k].variable, self.chunks) for k in run.data_vars})
        return run


def _file_metadata(mdf: Any, layout: Layout, path: Path) -> dict[str, Any]:
    hd = mdf.header
    meta: dict[str, Any] = {"format": "mdf4", "file": path.name, "version": layout.version,
                            "program": layout.program,
                            "start_time": iso_utc(np.datetime64(layout.start_ns, "ns"))}
    if layout.time_flags & 1:
        meta["start_time_is_local"] = True  # local time of an unknown zone, taken as UTC
    if layout.time_flags & 2:
        meta["tz_offset_min"], meta["dst_offset_min"] = layout.tz_offset_min, layout.dst_offset_min
    if text := _text(getattr(hd, "description", "")):
        meta["description"] = text
    properties = getattr(hd, "_common_properties", None)  # the header comment's <common_properties>
    if isinstance(properties, dict):
        meta.update({str(k): v if isinstance(v, dict) else _text(v) for k, v in properties.items()
                     if k not in meta})
    history = []
    for fh in getattr(mdf, "file_history", []):
        entry = _xml_fields(_text(getattr(fh, "comment", "")))
        if getattr(fh, "abs_time", 0):
            entry["time"] = iso_utc(np.datetime64(int(fh.abs_time), "ns"))
        history.append(entry)
    if history:
        meta["history"] = history
    return meta


def _xml_fields(text: str) -> dict[str, str]:
    """The elements of an MDF comment (``<FHcomment><TX>..</TX><tool_id>..``) as {tag: text};
    a comment that is not XML as {"TX": text}."""
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError:
        return {"TX": text} if text else {}
    return {el.tag.rpartition("}")[2]: (el.text or "").strip() for el in root if (el.text or "").strip()}


def _events(mdf: Any, start_ns: int) -> xr.Dataset | None:
    """The file's time events (markers, triggers) as an events node."""
    times, labels = [], []
    for ev in getattr(mdf, "events", None) or []:
        if int(getattr(ev, "sync_type", 0)) == 1:
            t = float(ev.sync_base) * float(ev.sync_factor)
            times.append(start_ns + int(seconds_to_ns(np.array([t]))[0]))
            labels.append(_text(getattr(ev, "name", "")) or _text(getattr(ev, "comment", "")))
    return make_events(np.array(times, np.int64), labels, name="events") if times else None


def open_mdf(path: Path, chunks: Any) -> xr.DataTree:
    """The MDF4 file ``path`` as a tree, one run per channel group (see the module docstring).

    ``chunks`` (as checked by ``daqlab.run.check_chunks``): None reads every sample now;
    otherwise ``value`` and ``quality`` are dask arrays read from the file when computed,
    :data:`TIME_CHUNK` records at a time (``{}``) or as asked. A file cut short or not
    finalised opens with its complete records, an IncompleteFileWarning and
    ``metadata["incomplete"]``; a damaged one is a FormatError.
    """
    require("asammdf", "formats", "reading MDF4 files")
    if path.is_dir():
        raise _err(path, "it is a folder.")
    layout = scan(path)
    tree_id = content_id(path)
    source = _Source(path, layout, mapped=chunks is None)  # lazy runs keep it, closed with them
    try:
        mdf = source.mdf
        reader = _Reader(path, layout, source, chunks, tree_id)
        with _Library(path, "read"):
            groups = [(gi, grp) for gi, grp in enumerate(mdf.groups) if not grp.channel_group.flags & 1]
            nodes: dict[str, xr.Dataset] = {}
            skipped: list[str] = []
            names = node_names([_group_name(g, i) for i, g in groups])
            for (gi, grp), node in zip(groups, names, strict=True):
                run = reader.run(gi, grp, node)
                if run is None:
                    skipped.append(node)
                else:
                    nodes[node] = run
            meta = _file_metadata(mdf, layout, path)
            events = _events(mdf, layout.start_ns)
    except BaseException:
        source.close()
        raise
    if chunks is None:
        source.close()
    if not nodes:
        raise _err(path, "it holds no channel group with a numeric channel daqlab reads"
                         + (f" ({layout.incomplete['reason']})" if layout.incomplete else "") + ".")
    if events is not None:
        nodes[node_names([*nodes, "events"])[-1]] = events
    if skipped:
        meta["groups_without_numeric_channels"] = skipped
    if layout.incomplete:
        meta["incomplete"] = layout.incomplete
        warnings.warn(f"{path.name}: {layout.incomplete['reason']}; opened with its complete records "
                      f"only ({layout.incomplete.get('bytes_unread', 0)} bytes not read); see the "
                      "tree's metadata['incomplete'].", IncompleteFileWarning, stacklevel=2)
    return make_tree(nodes, id=tree_id, name=path.stem, created_at=np.datetime64(layout.start_ns, "ns"),
                     metadata=meta)
