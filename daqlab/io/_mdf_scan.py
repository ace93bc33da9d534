"""The structure of an ASAM MDF4 file, checked before asammdf reads it (see :mod:`daqlab.io._mdf`).

:func:`scan` walks the file's block links itself: every block of the description (groups,
channels, names, conversions) must be whole and no chain of 'next' links may loop, and every
channel must lie inside its group's records, else a FormatError. It then counts each channel
group's complete records in its data blocks; for a file cut short or not finalised
(``UnFinMF``) it records the patches that show asammdf only those records (cycle counters,
data block lengths, shortened data lists), and :class:`_Patched` is the read-only view of the
file with those patches in place (the file is never written nor copied).
"""

from __future__ import annotations

import io
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daqlab.errors import FormatError

__all__ = ["Layout", "scan"]

_HD = 64  # the header block follows the 64-byte identification block
_HEAD = struct.Struct("<4s4xQQ")  # block id, length, link count
_U64 = struct.Struct("<Q")  # a link or a counter
_NEXT_FIRST = {b"##DG", b"##CG", b"##CN", b"##FH", b"##AT", b"##EV", b"##SR", b"##DL", b"##LD", b"##CH"}
_DATA_LINK = {b"##DG": 2, b"##CN": 5, b"##SR": 1}  # links to data: walked apart (DG) or not read
_BLOCK_ID = re.compile(rb"##[A-Z]{2}")
_UNFIN_CG, _UNFIN_DT, _UNFIN_DL = 0x1, 0x4, 0x10


def _err(path: Path, what: str) -> FormatError:
    return FormatError(f"{path.name} is not an MDF4 file daqlab can read: {what}")


@dataclass(frozen=True)
class _Block:
    address: int
    kind: bytes
    length: int
    links: tuple[int, ...]
    present: int  # bytes of the block inside the file (< length: cut short)

    @property
    def next(self) -> int:
        """Its first link (the next block of its kind, for most kinds); 0 when it has none."""
        return self.links[0] if self.links else 0

    @property
    def data_at(self) -> int:
        return self.link_at(len(self.links))

    def link_at(self, i: int) -> int:
        """The byte where its link ``i`` is written."""
        return self.address + 24 + 8 * i


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

    def maybe(self, address: int) -> _Block | None:
        """The block at ``address`` (as :meth:`block`); None for the null link 0."""
        return self.block(address) if address else None

    def series(self, address: int) -> Iterator[_Block]:
        """The walked blocks from ``address`` on, each linked by its predecessor's first link."""
        while address:
            b = self.seen[address]
            yield b
            address = b.next

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
                a = b.next if nxt else 0
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
        b = self.blocks.maybe(address)
        while b is not None and b.kind in (b"##HL", b"##DL") and b.present == b.length:
            if b.kind == b"##DL":
                for x in b.links[1:]:
                    self.blocks.maybe(x)
            b = self.blocks.maybe(b.next)

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
                self.patches[address + 8] = _U64.pack(present)
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
        link_at, addr = dg.link_at(2), dg.links[2]
        if not addr:
            return 0, True
        b = self.blocks.block(addr)
        if b is not None and b.kind in (b"##DT", b"##DV", b"##DZ"):
            n, whole = self.piece(addr, last=True)
            if not whole and b.kind == b"##DZ":
                self.patches[link_at] = _U64.pack(0)
            return n, whole
        if b is not None and b.kind == b"##HL" and b.present == b.length:
            link_at, addr = b.link_at(0), b.links[0]
            b = self.blocks.maybe(addr)
        if b is not None and b.kind == b"##LD":
            return None
        total = 0
        while True:
            if b is None or b.present < b.length:
                self.patches[link_at] = _U64.pack(0)
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
            link_at, addr = b.link_at(0), b.links[0]
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
    dgs = list(blocks.series(hd.links[0]))
    data = _Data(blocks, flags, layout.patches)
    for dg in dgs:
        data.headers(dg.links[2])
    short = False
    for dg in dgs:
        (rec_id_size,) = blocks.data(dg, 0, "B")
        cgs: list[tuple[_Block, _Group, int]] = []
        for cg in blocks.series(dg.links[1]):
            _, cycles, cg_flags, _, nbytes, ninval = blocks.data(cg, 0, "QQHH4xII")
            if not cg_flags & 1:  # a VLSD group holds other channels' values, not records
                cgs.append((cg, _Group(cycles), nbytes + ninval))
                _check_channels(blocks, cg, nbytes, ninval)
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
                layout.patches[cycles_at] = layout.patches[dg.link_at(2)] = _U64.pack(0)
                short = True
                continue
            fit = counted[0] // size if size else g.cycles
            g.records = fit if flags & _UNFIN_CG else min(g.cycles, fit)
            data.unread += counted[0] - g.records * size if not counted[1] or flags else 0
            if g.records != g.cycles:
                layout.patches[cycles_at] = _U64.pack(g.records)
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
        for cn in blocks.series(stack.pop()):
            if cn.kind != b"##CN":
                break  # a channel array (CA) of a structure: asammdf reads its layout
            kind, _, _, bit_offset, byte_offset, bit_count, flags, inval_bit = blocks.data(cn, 0, "BBBBIIII")
            end = byte_offset + (bit_offset + bit_count + 7) // 8
            if kind not in (3, 6) and end > nbytes:  # (virtual channels have no bytes)
                raise _err(blocks.path, f"the channel at byte {cn.address} lies outside its group's records "
                                        f"(bytes {byte_offset}..{end} of {nbytes}); the file is damaged.")
            if flags & 2 and inval_bit // 8 >= ninval:
                raise _err(blocks.path, f"the channel at byte {cn.address} has its invalidation bit "
                                        f"{inval_bit} outside its group's {ninval} invalidation bytes; "
                                        "the file is damaged.")
            if len(cn.links) > 1 and cn.links[1]:
                stack.append(cn.links[1])  # a structure's members


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
