"""Reading the samples of a TDMS file, for :mod:`daqlab.io._tdms`.

Opening the file and npTDMS's view of it (npTDMS's errors as FormatErrors), reading a
channel's values from the byte positions a :class:`~daqlab.io._tdms_layout._Layout` gives or
through npTDMS, the readers of a node's values and quality flags that any thread or worker can
use, and the lazy (dask) arrays made of them.
"""

from __future__ import annotations

import io
import os
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import dask.array
import dask.base
import numpy as np
import xarray as xr
from numpy.typing import NDArray

from daqlab.errors import DaqlabError, FormatError
from daqlab.io._extras import require
from daqlab.io._tdms_layout import _Layout
from daqlab.model import Quality
from daqlab.run import chunked_variable

__all__: list[str] = []  # private to daqlab.io._tdms, which imports by name

_CHUNK_SAMPLES = 1 << 18  # lazily: samples per chunk of one channel (2 MiB of float64)
_CHUNK_ROWS = 1 << 21  # samples per chunk of a node whose channels are interleaved (16 MiB)
_SLACK = 4096  # bytes between pieces that are still read in one go
_NATIVE_F8 = np.dtype(np.float64)


# --------------------------------------------------------------------------- the file


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


def _convert_from(buf: NDArray[np.uint8], lay: _Layout, n: int, stride: int, dst: NDArray[np.float64],
                  offset: int = 0) -> None:
    """The ``n`` values of ``lay`` lying ``stride`` bytes apart in ``buf`` from ``offset``, as
    float64 into ``dst``."""
    raw = np.ndarray((n,), lay.dtype, buffer=buf, offset=offset, strides=(stride,))
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
                _convert_from(buf, lay, n, stride, out[i, dst:dst + n], at - first)
            continue
        for (i, lay, at, n, stride, dst), (x, y) in zip(group, spans, strict=True):
            target = out[i, dst:dst + n]
            if lay.kind == "num" and lay.dtype == _NATIVE_F8 and stride == 8:
                _pread(f, at, target.data.cast("B"), path)
            else:
                buf = np.empty(y - x, np.uint8)
                _pread(f, x, buf.data, path)
                _convert_from(buf, lay, n, stride, target)


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

    def read_all(self, f: io.BufferedReader | None = None, tdms: Any = None) -> NDArray[Any]:
        """Every sample of every channel of the node (as :meth:`read`)."""
        return self.read(range(self.shape[0]), 0, self.shape[1], f, tdms)

    def __getitem__(self, key: Any) -> NDArray[Any]:
        key = (key if isinstance(key, tuple) else (key,)) + (slice(None),) * 2
        rows, times = key[:2]
        if isinstance(rows, slice) and isinstance(times, slice):
            a, b, step = times.indices(self.shape[1])
            if step == 1:
                return self.read(range(self.shape[0])[rows], a, b)
        # any other key (dask gives slices): read what it can touch, then index that
        whole: NDArray[Any] = self.read_all()[key[:2]]
        return whole


def _may_be_bad(row: Row) -> bool:
    """Whether a channel's values can be NaN or infinite (not if they are integers as stored)."""
    return not (isinstance(row, _Layout) and (row.kind != "num" or row.dtype.kind in "iu"))


def _quality(values: NDArray[np.float64]) -> NDArray[np.int8]:
    """BAD where a value is NaN or infinite, else GOOD (TDMS channels have no valid range)."""
    flags = np.isfinite(values)
    np.logical_not(flags, out=flags)
    out = flags.view(np.int8)
    out *= np.int8(Quality.BAD)
    return out


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


# --------------------------------------------------------------------------- lazily


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

    def lazy(source: _NodeReader, name: str) -> Any:
        return dask.array.from_array(  # type: ignore[no-untyped-call]
            source, chunks=asked, name=f"{name}-{token}", lock=False, asarray=True,
            meta=np.empty((0, 0), source.dtype))

    value = lazy(reader, "daqlab-tdms")
    if any(_may_be_bad(row) for row in reader.rows):
        quality = lazy(_FlagReader(reader), "daqlab-tdms-flags")
    else:
        quality = dask.array.zeros((c, n), chunks=asked, dtype=np.int8)
    return value, quality
