"""WAV (RIFF, RF64) and FLAC audio as a run, read with soundfile (libsndfile).

One file is one run (a tree of one node: the root is the run), channels ``ch0``, ``ch1``...
Integer PCM stays raw, as stored, with its scaling to full scale [-1, 1) as Calibration:
PCM_16 ``1/2**15``, PCM_24 ``1/2**23``, PCM_32 ``1/2**31``, PCM_S8 ``1/2**7``, and PCM_U8
(stored unsigned, 0..255) ``1/2**7`` with offset -1; so ``slope * raw + offset`` equals
soundfile's float read exactly. Float WAV keeps its values (identity calibration); other
encodings (u-law, A-law, ADPCM...) are decoded by libsndfile to full-scale floats
(``calibrated=True``, said in ``metadata["conversions"]``). Values outside [-1, 1] are
flagged SUSPECT, NaN BAD.

Audio files rarely say when they were recorded: a Broadcast WAV ``bext`` chunk's origination
date and time give the start (taken as UTC); otherwise the run starts at the epoch, and
``metadata["start"]`` says so. The container is also walked here (a few header reads) to
tell a file cut short or never finalised (its ``data`` chunk shorter than declared, or of
size 0) from a complete one: libsndfile reads such a WAV's complete frames without a word.
A FLAC stream cut short is decoded up to its last frame that decodes (each FLAC frame has a
CRC), the rest dropped.
"""

from __future__ import annotations

import datetime as dt
import os
import struct
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import xarray as xr
from numpy.typing import NDArray

from daqlab.errors import FormatError, IncompleteFileWarning
from daqlab.io._extras import require
from daqlab.io._foreign import content_id, int24, stamps
from daqlab.model import Calibration, Channel
from daqlab.run import (
    assemble_run,
    chunk_samples,
    chunked_variable,
    flag_quality,
    run_attrs,
)
from daqlab.tree import as_tree

__all__ = ["open_audio"]

_CHUNK_FRAMES = 1 << 20  # preferred dask chunk along time
_BLOCK = 1 << 16  # frames read (and stamped) at a time: the buffers stay in the CPU's cache
_EPOCH_NOTE = ("not stored in the file: the epoch (1970-01-01T00:00:00Z) stands in for the start; "
               "sample times are offsets from it")
_POSITIONS = ("FL", "FR", "FC", "LFE", "BL", "BR", "FLC", "FRC", "BC", "SL", "SR", "TC", "TFL",
              "TFC", "TFR", "TBL", "TBC", "TBR")  # WAVE_FORMAT_EXTENSIBLE channel mask bits
_LIB_ERRORS = (RuntimeError, ValueError, OSError, TypeError, EOFError, struct.error, MemoryError)


@dataclass(frozen=True)
class _Encoding:
    """How a subtype's samples are read raw (soundfile ``dtype``, then ``>> shift`` and
    ``+ bias``) and scaled (``slope``, ``offset``); ``raw=False``: decoded floats."""

    dtype: str = "float64"
    shift: int = 0
    bias: int = 0
    slope: float = 1.0
    offset: float = 0.0
    raw: bool = True


_ENCODINGS = {
    "PCM_S8": _Encoding("int16", 8, 0, 2.0 ** -7),
    "PCM_U8": _Encoding("int16", 8, 128, 2.0 ** -7, -1.0),
    "PCM_16": _Encoding("int16", 0, 0, 2.0 ** -15),
    "PCM_24": _Encoding("int32", 8, 0, 2.0 ** -23),
    "PCM_32": _Encoding("int32", 0, 0, 2.0 ** -31),
    "FLOAT": _Encoding(),
    "DOUBLE": _Encoding(),
}
_DECODED = _Encoding(raw=False)


@dataclass
class _Container:
    """What daqlab reads of the container itself."""

    kind: str  # "WAV", "RF64", "BW64" or "FLAC"
    meta: dict[str, Any] = field(default_factory=dict)
    incomplete: dict[str, Any] | None = None
    start_ns: int | None = None
    max_block: int = 4096  # FLAC: frames per FLAC frame at most
    data: tuple[int, int, int] | None = None  # WAV: data chunk offset, bytes a frame, bits a sample


# soundfile subtypes whose WAV data daqlab maps itself (little-endian, frames packed): the
# stored sample's numpy type ("i3": 24-bit), in bytes
_PACKED = {"PCM_U8": ("u1", 1), "PCM_16": ("<i2", 2), "PCM_24": ("i3", 3), "PCM_32": ("<i4", 4),
           "FLOAT": ("<f4", 4), "DOUBLE": ("<f8", 8)}


@dataclass(frozen=True)
class _Source:
    """Where and how to read a file's frames: through soundfile, or (``packed``: the data
    chunk's offset and the stored sample type) straight from a WAV file's bytes."""

    path: Path
    enc: _Encoding
    channels: int
    identity: tuple[int, int]  # (size, mtime in ns) when opened
    packed: tuple[int, str] | None = None


def open_audio(path: Path, chunks: Any) -> xr.DataTree:
    """The WAV or FLAC file ``path`` as a tree of one run (the root): integer PCM raw with
    its full-scale scaling as Calibration, channels ``ch0``.. at the file's sample rate.

    ``chunks`` (checked, or None): dask arrays reading frame ranges on demand. A file cut
    short opens with its complete frames, flagged incomplete; a damaged or foreign file is a
    :class:`~daqlab.FormatError`.
    """
    sf = require("soundfile", "formats", "reading WAV and FLAC files")
    box = _flac_container(path) if _head(path, 4) == b"fLaC" else _wav_container(path)
    info: dict[str, Any] | None = None
    try:
        with sf.SoundFile(str(path)) as f:
            info = _info(f)
            if box.kind == "FLAC" and not _tail_decodes(f, info["frames"]):
                info = None
    except _LIB_ERRORS as exc:
        if box.kind != "FLAC":
            raise FormatError(f"{path} is not a WAV file soundfile can read: {exc}. Check that "
                              "it is whole and really WAV (RIFF/WAVE).") from exc
    identity = (path.stat().st_size, path.stat().st_mtime_ns)
    start_ns = box.start_ns if box.start_ns is not None else 0
    data: NDArray[np.float64] | None = None
    times: NDArray[np.datetime64] | None = None
    if info is not None:
        enc = _ENCODINGS.get(info["subtype"], _DECODED)
        src = _Source(path, enc, info["channels"], identity, _packed(box, info))
        if chunks is None:
            try:
                data, times = _read_stamped(src, info["frames"], start_ns, float(info["samplerate"]))
            except FormatError:
                if box.kind != "FLAC":
                    raise
                info = None  # a FLAC frame in the middle does not decode
    if info is None:  # a FLAC stream cut short or damaged: decode what is there
        data, info, enc = _decode_all(sf, path, box)
    c, n, rate = info["channels"], info["frames"], float(info["samplerate"])
    channels = tuple(Channel(f"ch{i}", "", range=(-1.0, 1.0),
                             calibration=Calibration(enc.slope, enc.offset)) for i in range(c))
    meta: dict[str, Any] = {"format": "wav", "file": path.name, "container": box.kind,
                            **{k: v for k, v in info.items() if k not in ("tags",)},
                            **box.meta}
    meta["start"] = box.meta.get("start", _EPOCH_NOTE)
    if info.get("tags"):
        meta["tags"] = info["tags"]
    if not enc.raw:
        meta["conversions"] = {ch.name: f"applied: decoded {info['subtype']} to full-scale floats"
                               for ch in channels}
    if box.incomplete:
        meta["incomplete"] = box.incomplete
        warnings.warn(f"{path}: {box.incomplete['reason']} ({n} frames read).",
                      IncompleteFileWarning, stacklevel=2)
    attrs = run_attrs(id=content_id(path), name=info.get("tags", {}).get("title") or path.stem,
                      description="", created_at=np.datetime64(start_ns, "ns"), sample_rate=rate,
                      metadata=meta, calibrated=not enc.raw)
    if times is None or len(times) != n:
        times = stamps(start_ns, n, rate)
    if data is not None:
        quality: Any = (np.zeros(data.shape, np.int8) if enc.dtype != "float64"
                        else flag_quality(data, channels, calibrated=True))
        run = assemble_run(data, quality, times, channels, attrs)
        if chunks is not None:
            run = chunk_samples(run, chunks)
    else:
        value = _lazy(_FrameArray(src, n, "value"), chunks)
        quality = (_lazy(_FrameArray(src, n, "quality"), chunks) if enc.dtype == "float64"
                   else _zeros(value))
        run = assemble_run(value, quality, times, channels, attrs)
    return as_tree(run)


# --------------------------------------------------------------------------- soundfile


def _info(f: Any) -> dict[str, Any]:
    """What soundfile says of an open file, as JSON values."""
    log = "\n".join(line for line in str(f.extra_info).splitlines()
                    if not line.startswith("File :"))  # the path it was opened by
    tags = {k: str(v) for k, v in f.copy_metadata().items() if str(v)}
    return {"frames": int(f.frames), "channels": int(f.channels), "samplerate": int(f.samplerate),
            "subtype": str(f.subtype), "subtype_info": str(f.subtype_info),
            "format_info": str(f.format_info), "endian": str(f.endian),
            "sections": int(f.sections), "extra_info": log, "tags": tags}


def _tail_decodes(f: Any, frames: int) -> bool:
    """Whether the last frame of a FLAC stream decodes (a stream cut short fails here)."""
    if frames >= 1 << 62:  # the stream does not say its length (written as a stream)
        return False
    if frames == 0:
        return True
    f.seek(frames - 1)
    return len(f.read(1, dtype="int32")) == 1


def _convert(block: NDArray[Any], enc: _Encoding, out: NDArray[np.float64] | None = None
             ) -> NDArray[np.float64]:
    """soundfile's ``(frames, channels)`` block as raw values, channels x frames (into ``out``)."""
    if enc.shift:
        block >>= enc.shift
    if enc.bias:
        block += enc.bias
    if out is None:
        out = np.empty(block.shape[::-1])
    out[...] = block.T
    return out


def _packed(box: _Container, info: dict[str, Any]) -> tuple[int, str] | None:
    """The data chunk's offset and sample type of a WAV file whose frames daqlab maps itself."""
    kind = _PACKED.get(info["subtype"])
    if box.data is None or kind is None or info["endian"] not in ("FILE", "LITTLE"):
        return None
    offset, align, bits = box.data
    if align != kind[1] * info["channels"] or bits != 8 * kind[1]:
        return None
    return offset, kind[0]


def _read(src: _Source, start: int, n: int) -> NDArray[np.float64]:
    """Frames ``start .. start + n - 1``, raw, channels x frames."""
    st = os.stat(src.path)
    if (st.st_size, st.st_mtime_ns) != src.identity:
        raise FormatError(f"{src.path} was replaced or changed after it was opened; its samples are "
                          "no longer the ones opened. Open it again.")
    out = np.empty((src.channels, n))
    if n == 0:
        return out
    if src.packed is not None:
        return _read_packed(src, start, n, out)
    sf = require("soundfile", "formats", "reading WAV and FLAC files")
    buffer = np.empty((min(n, _BLOCK), src.channels), src.enc.dtype)
    try:
        with sf.SoundFile(str(src.path)) as f:
            if start:
                f.seek(start)
            for i in range(0, n, _BLOCK):
                m = min(_BLOCK, n - i)
                got = len(f.read(m, dtype=src.enc.dtype, always_2d=True, out=buffer[:m]))
                if got != m or f.channels != src.channels:
                    raise FormatError(
                        f"{src.path}: frames {start}..{start + n - 1} of {src.channels} channels are "
                        f"no longer all there ({f.channels} channels, {start + i + got} frames); "
                        "the file changed or is damaged. Open it again.")
                _convert(buffer[:m], src.enc, out[:, i:i + m])
    except FormatError:
        raise
    except _LIB_ERRORS as exc:
        raise FormatError(f"{src.path}: reading frames {start}..{start + n - 1} failed: {exc}") from exc
    return out


def _read_stamped(src: _Source, n: int, start_ns: int, rate: float
                  ) -> tuple[NDArray[np.float64], NDArray[np.datetime64]]:
    """All ``n`` frames and their times. Through soundfile, the times are computed by a second
    thread meanwhile (libsndfile decodes without the GIL): on two cores they come for free."""
    if src.packed is not None:
        return _read(src, 0, n), stamps(start_ns, n, rate)
    with ThreadPoolExecutor(1, thread_name_prefix="daqlab-audio-times") as pool:
        pending = pool.submit(stamps, start_ns, n, rate)
        data = _read(src, 0, n)
        return data, pending.result()


def _read_packed(src: _Source, start: int, n: int, out: NDArray[np.float64]) -> NDArray[np.float64]:
    """Frames of a PCM or float WAV straight from its mapped data chunk (no copy in between)."""
    assert src.packed is not None
    offset, kind = src.packed
    width = 3 if kind == "i3" else np.dtype(kind).itemsize
    try:
        frames = np.memmap(src.path, dtype=np.uint8, mode="r", offset=offset + start * width * src.channels,
                           shape=(n, width * src.channels))
    except (OSError, ValueError) as exc:  # the file shrank since it was opened
        raise FormatError(f"{src.path}: reading frames {start}..{start + n - 1} failed: {exc}; the file "
                          "changed. Open it again.") from exc
    for i in range(0, n, _BLOCK):
        block = frames[i:i + _BLOCK]
        samples = (int24(block.reshape(len(block), src.channels, 3)) if kind == "i3"
                   else block.view(kind))
        out[:, i:i + len(block)] = samples.T
    return out


def _decode_all(sf: ModuleType, path: Path, box: _Container
                ) -> tuple[NDArray[np.float64], dict[str, Any], _Encoding]:
    """Every FLAC frame that decodes, from the start, FLAC frame by FLAC frame (each has a
    CRC); what follows the first that does not is left out and the run flagged incomplete."""
    blocks: list[NDArray[Any]] = []
    error: str | None = None
    try:
        with path.open("rb") as fh, sf.SoundFile(fh) as f:  # by path, libsndfile refuses a cut stream
            info = _info(f)
            enc = _ENCODINGS.get(info["subtype"], _DECODED)
            while True:
                try:
                    block = f.read(box.max_block, dtype=enc.dtype, always_2d=True)
                except _LIB_ERRORS as exc:
                    error = str(exc)
                    break
                if not len(block):
                    break
                blocks.append(block)
    except _LIB_ERRORS as exc:
        raise FormatError(f"{path} is not a FLAC stream soundfile can read: {exc}.") from exc
    got = sum(len(b) for b in blocks)
    if error is not None:  # libsndfile fails a read that ends where a damaged frame begins:
        lo, hi, last = 0, box.max_block, None  # the most frames after `got` that do read
        while hi - lo > 1:
            mid = (lo + hi) // 2
            block = _read_at(sf, path, enc, got, mid)
            lo, hi, last = (mid, hi, block) if block is not None else (lo, mid, last)
        if last is not None:
            blocks.append(last)
            got += len(last)
    declared = info["frames"] if info["frames"] < 1 << 62 else None
    info["frames_declared"] = declared
    info["frames"] = got
    if declared is None:
        box.incomplete = {"reason": "the FLAC stream's header gives no length: its writer did not "
                                    "finalise it (or streamed it); every frame that decodes is read",
                          "frames_read": got, "error": error}
    elif error is not None or got < declared:
        box.incomplete = {"reason": "the FLAC stream stops decoding before its end (cut short or "
                                    "damaged); the frames before are read",
                          "frames_read": got, "frames_declared": declared, "error": error}
    data = (np.concatenate(blocks) if blocks else np.empty((0, info["channels"]), enc.dtype))
    return _convert(data, enc), info, enc


def _read_at(sf: ModuleType, path: Path, enc: _Encoding, start: int, n: int) -> NDArray[Any] | None:
    """Frames ``start .. start + n - 1`` of a damaged FLAC stream as soundfile gives them, or
    None if they do not all decode."""
    try:
        with path.open("rb") as fh, sf.SoundFile(fh) as f:
            f.seek(start)
            block: NDArray[Any] = f.read(n, dtype=enc.dtype, always_2d=True)
    except _LIB_ERRORS:
        return None
    return block if len(block) == n else None


class _FrameArray:
    """The file's frames (``"value"``) or their flags (``"quality"``) as an array reading the
    frame range it is sliced at; for ``dask.array.from_array``. Pickles as its path."""

    def __init__(self, src: _Source, frames: int, kind: str) -> None:
        self.src, self.kind = src, kind
        self.shape = (src.channels, frames)
        self.dtype = np.dtype(np.float64 if kind == "value" else np.int8)
        self.ndim = 2

    def __getitem__(self, key: Any) -> NDArray[Any]:
        ckey, tkey = key if isinstance(key, tuple) else (key, slice(None))
        t = range(self.shape[1])[tkey] if isinstance(tkey, slice) else None
        if t is None or t.step != 1:
            return self[:, :][ckey, tkey]
        values = _read(self.src, t.start, len(t))
        if self.kind == "quality":
            chans = [Channel(f"ch{i}", range=(-1.0, 1.0)) for i in range(self.shape[0])]
            return flag_quality(values, chans, calibrated=True)[ckey]
        return values[ckey]


def _lazy(array: _FrameArray, chunks: dict[str, Any]) -> Any:
    import dask.array as da  # lazily: dask.array costs time to import
    import dask.base

    c, n = array.shape
    own = da.empty((c, n), dtype=array.dtype, chunks=(c, max(1, min(n, _CHUNK_FRAMES))))
    asked = (chunked_variable(xr.Variable(("channel", "time"), own), chunks).chunks if chunks
             else own.chunks)
    token = dask.base.tokenize(str(array.src.path), array.src.identity, array.kind, asked)
    return da.from_array(  # type: ignore[no-untyped-call]
        array, chunks=asked, name=f"daqlab-audio-{array.kind}-{token}",
        lock=False, asarray=True, meta=np.empty((0, 0), array.dtype))


def _zeros(value: Any) -> Any:
    import dask.array as da

    return da.zeros(value.shape, dtype=np.int8, chunks=value.chunks)


# --------------------------------------------------------------------------- containers


def _head(path: Path, n: int) -> bytes:
    with path.open("rb") as f:
        return f.read(n)


def _cut(path: Path, what: str) -> FormatError:
    return FormatError(f"{path} is cut short inside its header ({what}): there are no samples to "
                       "read. Copy the file again.")


def _wav_container(path: Path) -> _Container:
    """Walk a RIFF/RF64 WAVE file's chunks up to ``data``: its declared size, ``fmt``,
    ``bext`` and ``ds64``."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[8:12] != b"WAVE" or head[:4] not in (b"RIFF", b"RF64", b"BW64"):
            raise _cut(path, "RIFF header") if len(head) < 12 else FormatError(
                f"{path} is not WAV: it starts {head!r}, not RIFF....WAVE.")
        box = _Container("WAV" if head[:4] == b"RIFF" else head[:4].decode())
        fmt: bytes | None = None
        big_data: int | None = None
        while True:
            ch = f.read(8)
            if len(ch) < 8:
                raise _cut(path, "no complete 'data' chunk header")
            cid, csize = ch[:4], struct.unpack("<I", ch[4:])[0]
            if not all(32 <= c < 127 for c in cid):  # not a chunk: libsndfile has heuristics
                box.meta["container_note"] = (f"no RIFF chunk header at byte {f.tell() - 8} "
                                              f"({ch!r}); soundfile read the file as it could")
                return box
            if cid == b"data":
                break
            body = f.read(min(csize, 1 << 16)) if cid in (b"fmt ", b"bext", b"ds64") else b""
            if cid in (b"fmt ", b"ds64") and len(body) < min(csize, 1 << 16):
                raise _cut(path, f"its {cid.decode()!r} chunk")
            if cid == b"fmt ":
                fmt = body
            elif cid == b"ds64" and len(body) >= 16:
                big_data = struct.unpack("<Q", body[8:16])[0]
            elif cid == b"bext":
                _bext(body, box)
            f.seek(csize + (csize & 1) - len(body), os.SEEK_CUR)
        data_offset = f.tell()
    if fmt is None or len(fmt) < 16:
        raise FormatError(f"{path}: its WAVE chunks hold no valid 'fmt ' chunk before 'data'; the "
                          "file is damaged.")
    tag, _, _, _, align, bits = struct.unpack("<HHIIHH", fmt[:16])
    box.data = (data_offset, align, bits)
    box.meta["wave_format"] = f"0x{tag:04X}"
    box.meta["bits_per_sample"] = bits
    if tag == 0xFFFE and len(fmt) >= 40:
        valid, mask = struct.unpack("<HI", fmt[18:24])
        box.meta["valid_bits"] = valid
        box.meta["channel_mask"] = mask
        box.meta["channel_positions"] = [p for i, p in enumerate(_POSITIONS) if mask >> i & 1]
    declared: int | None = csize
    if csize == 0xFFFFFFFF:  # RF64: the size is in ds64; RIFF: a streaming writer's "unknown"
        declared = big_data if box.kind != "WAV" else None
    available = size - data_offset
    if (declared is None or declared == 0) and available > 0:
        box.incomplete = {"reason": "the WAV header was never finalised (its data chunk gives no "
                                    "size: the writer did not close the file); the complete "
                                    "frames are read",
                          "bytes_dropped": available % align if align else 0}
    elif declared is not None and available < declared:
        box.incomplete = {"reason": "the file is shorter than its data chunk says (cut short); "
                                    "the complete frames are read",
                          "bytes_unread": declared - available,
                          "bytes_dropped": available % align if align else 0}
        if tag in (1, 3, 0xFFFE) and align:
            box.incomplete["frames_declared"] = declared // align
    return box


def _bext(body: bytes, box: _Container) -> None:
    """A Broadcast WAV ``bext`` chunk into ``box``: its fields, and the start it gives."""
    if len(body) < 348:
        return

    def text(a: int, b: int) -> str:
        return body[a:b].split(b"\x00", 1)[0].decode("latin-1").strip()

    date, clock = text(320, 330), text(330, 338)
    low, high, version = struct.unpack("<IIH", body[338:348])
    box.meta["bext"] = {"description": text(0, 256), "originator": text(256, 288),
                        "originator_reference": text(288, 320), "origination_date": date,
                        "origination_time": clock, "time_reference": high << 32 | low,
                        "version": version,
                        "coding_history": body[602:].split(b"\x00", 1)[0].decode("latin-1").strip()}
    try:
        d = [int(x) for x in date.replace(":", "-").replace("/", "-").replace(".", "-").split("-")]
        c = [int(x) for x in clock.replace("-", ":").replace(".", ":").split(":")]
        when = dt.datetime(d[0], d[1], d[2], c[0], c[1], c[2])
    except (ValueError, IndexError):
        box.meta["start"] = (f"{_EPOCH_NOTE} (the bext origination date {date!r} and time "
                             f"{clock!r} are not YYYY-MM-DD and hh:mm:ss)")
        return
    box.start_ns = int(np.datetime64(when, "s").astype("datetime64[ns]").astype(np.int64))
    box.meta["start"] = ("the bext chunk's origination date and time, taken as UTC (Broadcast "
                         "WAV does not store a time zone)")


def _flac_container(path: Path) -> _Container:
    """Walk a FLAC stream's metadata blocks (STREAMINFO first): a FormatError if they are
    cut or not FLAC's."""
    box = _Container("FLAC")
    with path.open("rb") as f:
        f.seek(4)
        first = True
        while True:
            head = f.read(4)
            if len(head) < 4:
                raise _cut(path, "FLAC metadata blocks")
            last, kind, length = head[0] >> 7, head[0] & 0x7F, int.from_bytes(head[1:], "big")
            if first:
                if kind != 0 or length != 34:
                    raise FormatError(f"{path} is not a FLAC stream: its first metadata block is "
                                      f"of type {kind} and {length} bytes, not STREAMINFO (0, 34).")
                info = f.read(34)
                if len(info) < 34:
                    raise _cut(path, "STREAMINFO")
                box.max_block = max(16, struct.unpack(">H", info[2:4])[0])
                bits = int.from_bytes(info[10:18], "big")
                box.meta["bits_per_sample"] = (bits >> 36 & 0x1F) + 1
                first = False
            elif kind == 127:
                raise FormatError(f"{path} is not a valid FLAC stream: metadata block type 127 is "
                                  "forbidden.")
            else:
                f.seek(length, os.SEEK_CUR)
            if last:
                break
        if f.tell() > path.stat().st_size:
            raise _cut(path, "FLAC metadata blocks")
    return box
