"""EDF, EDF+ and BDF files (biosignals) as a tree of runs: one node per sample rate.

The layout is simple and read here with numpy: a 256-byte header, 256 bytes per signal,
then data records, each holding every signal's next samples (``int16`` little-endian in
EDF, ``int24`` in BDF). pyEDFlib (the ``daqlab[formats]`` extra) checks a complete file's
compliance before it is read; reading the records with numpy is ~10x faster than its
``readSignal`` and also serves what pyEDFlib refuses: a file cut short (the complete records
open, flagged incomplete), one still being written (``-1`` records) and EDF+D
(discontinuous: each record stamped at the onset its time-keeping annotation gives).

* Signals of one rate form one node (``"256Hz"``), never resampled. Values stay the raw
  digital samples; the header's physical/digital extremes give each channel its
  Calibration (``slope = (pmax - pmin) / (dmax - dmin)``, ``offset = pmax - slope * dmax``)
  and its range. A sample is SUSPECT where its digital value lies outside
  ``[digital min, digital max]``: the exact image of the physical range (comparing
  calibrated floats would flag samples at the limits by round-off).
* EDF+ annotations (TALs) become an events node ``"annotations"``; start date and time with
  the first record's subsecond offset give ``created_at`` and the sample times.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import re
import unicodedata
import warnings
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from numpy.typing import NDArray

from daqlab.errors import DaqlabError, FormatError, IncompleteFileWarning
from daqlab.io._extras import require
from daqlab.io._foreign import content_id, int24, stamps
from daqlab.model import Calibration, Channel, Quality, numbered
from daqlab.run import assemble_run, chunked_variable, run_attrs, sample_times
from daqlab.tree import make_events, make_tree, node_id, node_names

__all__ = ["open_edf"]

_ANNOTATION_LABELS = ("EDF Annotations", "BDF Annotations")
_FIELDS = (  # per-signal header fields: name, width in bytes
    ("label", 16), ("transducer", 80), ("unit", 8), ("pmin", 8), ("pmax", 8), ("dmin", 8),
    ("dmax", 8), ("prefilter", 80), ("spr", 8), ("reserved", 32))
_CHUNK_SAMPLES = 4 << 20  # preferred dask chunk: about this many samples, whole records
_TAL = re.compile(rb"([+-][0-9.]*)(?:\x15([0-9.]*))?\x14([^\x00]*)\x00")
_BAD_NAME_CHARS = {"Cc", "Cf", "Cs", "Co", "Cn"}


@dataclass(frozen=True)
class _Signal:
    """One signal of the header."""

    index: int
    label: str
    transducer: str
    unit: str
    pmin: float
    pmax: float
    dmin: int
    dmax: int
    prefilter: str
    spr: int  # samples per data record
    reserved: str
    offset: int  # of its first sample within a record, in samples

    @property
    def is_annotations(self) -> bool:
        return self.label in _ANNOTATION_LABELS


@dataclass(frozen=True)
class _Header:
    """What the header says, checked."""

    path: Path
    bdf: bool
    version: str
    patient: str
    recording: str
    start_ns: int  # header date and time (whole seconds), ns since the epoch
    header_bytes: int
    reserved: str
    records_declared: int  # -1: not known (being written)
    duration_text: str
    duration: float  # of a data record, s
    signals: tuple[_Signal, ...]

    @property
    def sample_bytes(self) -> int:
        return 3 if self.bdf else 2

    @property
    def record_samples(self) -> int:
        return sum(s.spr for s in self.signals)

    @property
    def record_bytes(self) -> int:
        return self.record_samples * self.sample_bytes

    @property
    def plus(self) -> bool:
        return self.reserved[:5] in ("EDF+C", "EDF+D", "BDF+C", "BDF+D")

    @property
    def discontinuous(self) -> bool:
        return self.reserved.startswith(("EDF+D", "BDF+D"))

    @property
    def kind(self) -> str:
        return ("BDF" if self.bdf else "EDF") + (self.reserved[3:5] if self.plus else "")

    @property
    def data_signals(self) -> list[_Signal]:
        """The signals that hold samples (in EDF+/BDF+, not the annotation signals)."""
        return [s for s in self.signals if not (s.is_annotations and self.plus)]


def open_edf(path: Path, chunks: Any) -> xr.DataTree:
    """The EDF/EDF+/BDF file ``path`` as a tree: one run per sample rate (raw digital values
    with each channel's scaling as Calibration) and an ``annotations`` events node.

    ``chunks`` (checked, or None): dask arrays reading whole data records on demand. A file
    cut short opens with its complete data records, flagged incomplete (an
    :class:`~daqlab.IncompleteFileWarning` and ``metadata["incomplete"]``); a damaged header
    or a file pyEDFlib finds non-compliant is a :class:`~daqlab.FormatError`.
    """
    header = _read_header(path)
    size = path.stat().st_size
    data_bytes = size - header.header_bytes
    complete = data_bytes // header.record_bytes if header.record_bytes else 0
    declared = header.records_declared
    n = complete if declared < 0 else min(declared, complete)
    incomplete: dict[str, Any] | None = None
    meta: dict[str, Any] = {}
    if declared < 0:
        incomplete = {"reason": "the header gives -1 data records: the file was still being "
                                "written (or its writer died); the complete records are read",
                      "records_read": n, "bytes_dropped": data_bytes - n * header.record_bytes}
    elif complete < declared:
        incomplete = {"reason": "the file is shorter than its header says (cut short); the "
                                "complete data records are read",
                      "records_declared": declared, "records_read": n,
                      "bytes_unread": declared * header.record_bytes - data_bytes,
                      "bytes_dropped": data_bytes - n * header.record_bytes}
    else:
        if data_bytes > declared * header.record_bytes:
            meta["trailing_bytes"] = data_bytes - declared * header.record_bytes
        if not header.discontinuous:  # pyEDFlib reads no EDF+D
            complaint = _check_compliance(header, exact="trailing_bytes" not in meta)
            if complaint:
                meta["compliance"] = (f"pyEDFlib refuses a text field ({complaint}); daqlab read "
                                      "the file by its layout, its texts as UTF-8 or else Latin-1")
    identity = (size, path.stat().st_mtime_ns)
    raw = _read_records(header, 0, n) if chunks is None else None
    onsets, events = _annotations(header, n, raw)
    if header.plus and n and onsets[0] is None:
        raise FormatError(f"{path}: data record 0 has no time-keeping annotation, which every "
                          f"{header.kind} record needs; the file is damaged.")
    first = onsets[0] if n and header.plus else None
    start_ns = header.start_ns + (first or 0)
    tree_id = content_id(path)
    meta = {"format": "edf", "file": path.name, **_file_metadata(header, start_ns, n), **meta}
    nodes: dict[str, xr.Dataset] = {}
    groups = _groups(header)
    names = node_names(f"{_rate_text(header, spr)}Hz" for spr in groups)
    for node, (spr, signals) in zip(names, groups.items(), strict=True):
        nodes[node] = _group_run(header, signals, spr, n, raw, chunks, onsets, start_ns, identity,
                                 id=node_id(tree_id, node), incomplete=incomplete)
    if events is not None and events[0].size:
        times, labels, durations = events
        nodes["annotations"] = make_events(
            times, labels, durations, name="annotations",
            metadata={"signals": [s.label for s in header.signals if s.is_annotations],
                      **({"incomplete": incomplete} if incomplete else {})})
    if not nodes:
        raise FormatError(f"{path} holds no signals and no annotations: nothing to open.")
    if incomplete:
        meta["incomplete"] = incomplete
        warnings.warn(f"{path}: {incomplete['reason']} ({n} data records read).",
                      IncompleteFileWarning, stacklevel=2)
    return make_tree(nodes, id=tree_id, name=path.stem, created_at=np.datetime64(start_ns, "ns"),
                     metadata=meta)


# --------------------------------------------------------------------------- header


def _text(raw: bytes) -> str:
    """A header field as text: ASCII by the standard; UTF-8, else Latin-1, in the wild."""
    return _decoded(raw).strip()


def _decoded(raw: bytes) -> str:
    """Annotation text: UTF-8 by the standard, else Latin-1."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _number(path: Path, raw: bytes, what: str, kind: type[int] | type[float]) -> Any:
    text = raw.decode("latin-1").strip()
    try:
        value = kind(float(text)) if kind is int and "." in text else kind(text)
        if kind is int and float(text) != value:
            raise ValueError(text)
        if not math.isfinite(value):
            raise ValueError(text)
    except (ValueError, OverflowError):
        raise FormatError(f"{path}: the header's {what} is {text!r}, not a "
                          f"{'whole ' if kind is int else ''}number; the file is not EDF/BDF or "
                          "its header is damaged.") from None
    return value


def _read_header(path: Path) -> _Header:
    with path.open("rb") as f:
        fixed = f.read(256)
        if len(fixed) < 256:
            raise FormatError(f"{path} is cut short inside its EDF/BDF header ({len(fixed)} of "
                              "256 bytes): there are no samples to read. Copy the file again.")
        bdf = fixed[:8] == b"\xffBIOSEMI"
        if not bdf and fixed[:8] != b"0       ":
            raise FormatError(f"{path} is not EDF or BDF: its first 8 bytes are {fixed[:8]!r}, "
                              "not b'0       ' (EDF) or b'\\xffBIOSEMI' (BDF).")
        ns = _number(path, fixed[252:256], "number of signals", int)
        header_bytes = _number(path, fixed[184:192], "header size", int)
        if ns < 0 or ns > 100_000 or header_bytes != 256 * (ns + 1):
            raise FormatError(f"{path}: the header says {ns} signals and {header_bytes} header "
                              f"bytes; EDF/BDF needs 256 * (signals + 1) bytes. The header is damaged.")
        rest = f.read(256 * ns)
    if len(rest) < 256 * ns:
        raise FormatError(f"{path} is cut short inside its EDF/BDF header ({256 + len(rest)} of "
                          f"{header_bytes} bytes): there are no samples to read.")
    fields: dict[str, list[bytes]] = {}
    pos = 0
    for name, width in _FIELDS:
        fields[name] = [rest[pos + i * width: pos + (i + 1) * width] for i in range(ns)]
        pos += width * ns
    signals = []
    offset = 0
    for i in range(ns):
        def num(name: str, what: str, kind: type[int] | type[float]) -> Any:
            return _number(path, fields[name][i], f"{what} of signal {i}", kind)  # noqa: B023

        spr = num("spr", "samples per record", int)
        sig = _Signal(i, _text(fields["label"][i]), _text(fields["transducer"][i]),
                      _text(fields["unit"][i]), num("pmin", "physical minimum", float),
                      num("pmax", "physical maximum", float), num("dmin", "digital minimum", int),
                      num("dmax", "digital maximum", int), _text(fields["prefilter"][i]), spr,
                      _text(fields["reserved"][i]), offset)
        _check_signal(path, sig, bdf)
        signals.append(sig)
        offset += spr
    reserved = _text(fixed[192:236])
    recording = _text(fixed[88:168])
    declared = _number(path, fixed[236:244], "number of data records", int)
    duration = _number(path, fixed[244:252], "data record duration", float)
    if declared < -1:
        raise FormatError(f"{path}: the header says {declared} data records; EDF/BDF allows "
                          "-1 (unknown) or more.")
    if duration < 0 or (duration == 0 and any(not s.is_annotations for s in signals)):
        raise FormatError(f"{path}: the data record duration is {duration} s; signals need "
                          "a positive one. The header is damaged.")
    return _Header(path, bdf, "BIOSEMI" if bdf else "0", _text(fixed[8:88]), recording,
                   _start_ns(path, fixed[168:176], fixed[176:184], recording), header_bytes,
                   reserved, declared, fixed[244:252].decode("latin-1").strip(), duration,
                   tuple(signals))


def _check_signal(path: Path, sig: _Signal, bdf: bool) -> None:
    limit = 1 << 23 if bdf else 1 << 15
    what = f"{path}: signal {sig.index} ({sig.label!r})"
    if sig.spr < 1:
        raise FormatError(f"{what} has {sig.spr} samples per data record; EDF/BDF needs 1 or more.")
    if not -limit <= sig.dmin < sig.dmax <= limit - 1:
        raise FormatError(f"{what} has digital minimum {sig.dmin} and maximum {sig.dmax}; they "
                          f"must satisfy {-limit} <= min < max <= {limit - 1}. The header is damaged.")
    if sig.pmin == sig.pmax and not sig.is_annotations:
        raise FormatError(f"{what} has physical minimum = maximum = {sig.pmin}: its scaling "
                          "from digital values would be zero. The header is damaged.")


def _start_ns(path: Path, date: bytes, clock: bytes, recording: str) -> int:
    """The header's start date and time (UTC assumed: EDF stores local time without a zone)."""
    d, c = date.decode("latin-1"), clock.decode("latin-1")
    try:
        day, month, yy = d.split(".")
        hh, mm, ss = (int(x) for x in c.split("."))
        if yy.isdigit():
            year = int(yy) + (1900 if int(yy) >= 85 else 2000)
        else:  # after 2084 the header says 'yy': the EDF+ recording field has the year
            year = int(recording.split()[1].split("-")[2])
        when = dt.datetime(year, int(month), int(day), hh, mm, ss)
    except (ValueError, IndexError):
        raise FormatError(f"{path}: the header's start date {d!r} and time {c!r} are not "
                          "dd.mm.yy and hh.mm.ss; the header is damaged.") from None
    return int(np.datetime64(when, "s").astype("datetime64[ns]").astype(np.int64))


# pyEDFlib's complaints about text fields only (e.g. a Latin-1 "µV"): daqlab reads such files
_TEXT_COMPLAINTS = ("label is incorrect", "transducer is incorrect", "(Physical Dimension)",
                    "(Prefilter)", "(EDF+ Recordingfield)", "(EDF+ Patientname)")


def _check_compliance(header: _Header, exact: bool) -> str | None:
    """pyEDFlib's verdict on a complete EDF/BDF(+C) file: a FormatError if it refuses its
    structure; its complaint (returned) if it refuses only a text field."""
    pyedflib = require("pyedflib", "formats", "reading EDF files")
    path = header.path
    mode = pyedflib.CHECK_FILE_SIZE if exact else pyedflib.DO_NOT_CHECK_FILE_SIZE
    try:
        reader = pyedflib.EdfReader(str(path), pyedflib.READ_ALL_ANNOTATIONS, mode)
    except (OSError, ValueError, RuntimeError, UnicodeError, IndexError, KeyError) as exc:
        said = str(exc).removeprefix(f"{path}: ")
        if any(c in said for c in _TEXT_COMPLAINTS):
            return said
        raise FormatError(f"{path} is not a compliant {header.kind} file: pyEDFlib says "
                          f"{said!r}. Repair it (e.g. with EDFbrowser's header editor).") from exc
    try:
        data = header.data_signals
        theirs = (int(reader.signals_in_file), int(reader.datarecords_in_file),
                  [int(x) for x in reader.getNSamples()])
        ours = (len(data), header.records_declared, [s.spr * header.records_declared for s in data])
    finally:
        reader.close()
    if theirs != ours:
        raise FormatError(f"{path}: pyEDFlib reads (signals, records, samples) {theirs} where the "
                          f"header says {ours}; the file is damaged or not {header.kind}.")
    return None


def _rate(header: _Header, spr: int) -> float:
    """Samples per second, from the duration as written (``0.1`` s: 2560 Hz, not 2559.99...)."""
    try:
        return float(Fraction(spr) / Fraction(header.duration_text))
    except (ValueError, ZeroDivisionError):
        return spr / header.duration


def _rate_text(header: _Header, spr: int) -> str:
    return f"{_rate(header, spr):.10g}"


def _groups(header: _Header) -> dict[int, list[_Signal]]:
    """Data signals by samples per record (one rate each), in the order they first appear."""
    out: dict[int, list[_Signal]] = {}
    for s in header.data_signals:
        out.setdefault(s.spr, []).append(s)
    return out


def _channel_names(signals: list[_Signal]) -> tuple[list[str], dict[str, str]]:
    """Valid, unique channel names for the signals' labels ('/' and control characters
    replaced, repeats numbered, an empty one ``signal<index>``), and ``{new: label}`` where
    they differ."""
    cleaned = []
    for s in signals:
        name = "".join(c for c in s.label.replace("/", "_")
                       if unicodedata.category(c) not in _BAD_NAME_CHARS).strip()
        cleaned.append(name if name not in ("", ".", "..") else f"signal{s.index}")
    names = numbered(cleaned)
    renamed = {name: s.label for name, s in zip(names, signals, strict=True) if name != s.label}
    return names, renamed


def _file_metadata(header: _Header, start_ns: int, n: int) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "edf_type": header.kind, "version": header.version, "patient": header.patient,
        "recording": header.recording, "start": f"{np.datetime64(start_ns, 'ns')}Z",
        "record_duration": header.duration, "records": n,
        "records_declared": header.records_declared, "reserved": header.reserved,
        "time_zone": "not stored in EDF (local time of the recording); taken as UTC",
    }
    if header.plus:
        p = header.patient.split(" ")
        r = header.recording.split(" ")
        meta["patient_fields"] = dict(zip(("code", "sex", "birthdate", "name"), p[:4] + [""] * 4,
                                          strict=False)) | {"additional": " ".join(p[4:])}
        meta["recording_fields"] = dict(zip(("startdate", "admincode", "technician", "equipment"),
                                            r[1:5] + [""] * 4, strict=False)) | {
            "additional": " ".join(r[5:])}
    return meta


# --------------------------------------------------------------------------- samples


def _read_records(header: _Header, r0: int, r1: int) -> NDArray[Any]:
    """Data records ``r0..r1-1`` as one row each: int16 samples (EDF) or bytes (BDF)."""
    dtype = np.dtype(np.uint8) if header.bdf else np.dtype("<i2")
    per = header.record_bytes // dtype.itemsize
    count = (r1 - r0) * per
    try:
        raw = np.fromfile(header.path, dtype=dtype, count=count,
                          offset=header.header_bytes + r0 * header.record_bytes)
    except (OSError, ValueError) as exc:
        raise FormatError(f"{header.path}: reading data records {r0}..{r1 - 1} failed: {exc}") from exc
    if raw.size != count:
        raise FormatError(f"{header.path} holds fewer data records than when it was opened "
                          f"(records {r0}..{r1 - 1} asked); it was changed. Open it again.")
    return raw.reshape(r1 - r0, per)


def _signal_block(raw: NDArray[Any], header: _Header, s: _Signal) -> NDArray[Any]:
    """Signal ``s``'s samples in the records ``raw`` as an ``(records, spr)`` integer array."""
    if header.bdf:
        return int24(raw[:, 3 * s.offset: 3 * (s.offset + s.spr)].reshape(raw.shape[0], s.spr, 3))
    block: NDArray[Any] = raw[:, s.offset: s.offset + s.spr]
    return block


def _samples(raw: NDArray[Any], header: _Header, signals: list[_Signal], kind: str | None = None
             ) -> tuple[NDArray[np.float64] | None, NDArray[np.int8] | None]:
    """The signals' raw digital samples in the records ``raw`` as float64, channels x samples,
    and their flags: SUSPECT where a value is outside its signal's [digital min, digital max].
    ``kind``: ``"value"`` or ``"quality"`` for only one of them."""
    n, spr = raw.shape[0], signals[0].spr
    values = np.empty((len(signals), n * spr)) if kind != "quality" else None
    quality = np.zeros((len(signals), n * spr), np.int8) if kind != "value" else None
    top = (1 << 23) - 1 if header.bdf else (1 << 15) - 1
    for c, s in enumerate(signals):  # one block copy per channel
        block = _signal_block(raw, header, s)
        if values is not None:
            values[c].reshape(n, spr)[...] = block
        if quality is not None and (s.dmin > -top - 1 or s.dmax < top):  # else none can be outside
            quality[c].reshape(n, spr)[(block < s.dmin) | (block > s.dmax)] = Quality.SUSPECT
    return values, quality


class _GroupArray:
    """One rate group's samples (``"value"``) or flags (``"quality"``) as an array that reads
    the data records it is sliced at; for ``dask.array.from_array``. Pickles as the header
    (path and layout), so dask.distributed workers read it too."""

    def __init__(self, header: _Header, signals: list[_Signal], n_records: int, kind: str,
                 identity: tuple[int, int]) -> None:
        self.header, self.signals, self.kind, self.identity = header, signals, kind, identity
        self.spr = signals[0].spr
        self.shape = (len(signals), n_records * self.spr)
        self.dtype = np.dtype(np.float64 if kind == "value" else np.int8)
        self.ndim = 2

    def __getitem__(self, key: Any) -> NDArray[Any]:
        ckey, tkey = key if isinstance(key, tuple) else (key, slice(None))
        t = range(self.shape[1])[tkey] if isinstance(tkey, slice) else None
        if t is None or t.step != 1:
            return self[ckey, :][..., tkey]
        which = np.arange(len(self.signals))[ckey]
        sigs = [self.signals[i] for i in np.atleast_1d(which)]
        if not sigs or not len(t):
            return np.empty((len(sigs), len(t)), self.dtype)[0 if which.ndim == 0 else slice(None)]
        st = os.stat(self.header.path)
        if (st.st_size, st.st_mtime_ns) != self.identity:
            raise FormatError(f"{self.header.path} was replaced or changed after it was opened "
                              "lazily; its samples are no longer the ones opened. Open it again.")
        r0, r1 = t.start // self.spr, -(-t.stop // self.spr)
        values, quality = _samples(_read_records(self.header, r0, r1), self.header, sigs, self.kind)
        out = values if values is not None else quality
        assert out is not None
        out = out[:, t.start - r0 * self.spr: t.stop - r0 * self.spr]
        return out[0] if which.ndim == 0 else out


def _lazy(array: _GroupArray, chunks: dict[str, Any], name: str) -> Any:
    import dask.array as da  # lazily: dask.array costs time to import
    import dask.base

    c, n = array.shape
    per = max(1, _CHUNK_SAMPLES // max(1, c * array.spr)) * array.spr
    own = da.empty((c, n), dtype=array.dtype, chunks=(c, max(1, min(n, per))))
    asked = (chunked_variable(xr.Variable(("channel", "time"), own), chunks).chunks if chunks
             else own.chunks)
    token = dask.base.tokenize(str(array.header.path), array.identity, name, array.kind, asked)
    return da.from_array(  # type: ignore[no-untyped-call]
        array, chunks=asked, name=f"daqlab-edf-{array.kind}-{token}", lock=False,
        asarray=True, meta=np.empty((0, 0), array.dtype))


def _group_run(header: _Header, signals: list[_Signal], spr: int, n: int, raw: NDArray[Any] | None,
               chunks: Any, onsets: list[int | None], start_ns: int, identity: tuple[int, int], *,
               id: str, incomplete: dict[str, Any] | None) -> xr.Dataset:
    rate = _rate(header, spr)
    names, renamed = _channel_names(signals)
    channels = []
    for name, s in zip(names, signals, strict=True):
        slope = (s.pmax - s.pmin) / (s.dmax - s.dmin)
        unit = "".join(c for c in s.unit if unicodedata.category(c) not in ("Cc", "Cs"))
        try:
            channels.append(Channel(name, unit, range=(min(s.pmin, s.pmax), max(s.pmin, s.pmax)),
                                    calibration=Calibration(slope, s.pmax - slope * s.dmax)))
        except DaqlabError as exc:  # e.g. a scaling that overflows
            raise FormatError(f"{header.path}: signal {s.index} ({s.label!r}) cannot be a channel: "
                              f"{exc}") from exc
    if header.discontinuous:
        if any(o is None for o in onsets):
            raise FormatError(f"{header.path}: a data record of this EDF+D file has no time-keeping "
                              "annotation, so its samples cannot be placed in time; it is damaged.")
        base = sample_times(0, 0, spr, rate).view(np.int64)
        ticks = (header.start_ns + np.array(onsets, np.int64)[:, None] + base[None, :]).reshape(-1)
        back = np.flatnonzero(ticks[1:] < ticks[:-1])
        if back.size:
            raise FormatError(f"{header.path}: data records of this EDF+D file overlap or go back "
                              f"in time (at sample {int(back[0]) + 1} of the {_rate_text(header, spr)} "
                              "Hz signals); it is damaged.")
        times = ticks.view("datetime64[ns]")
    else:
        times = stamps(start_ns, n * spr, rate)
    value: Any
    quality: Any
    if raw is not None:
        value, quality = _samples(raw, header, signals)
    else:
        value = _lazy(_GroupArray(header, signals, n, "value", identity), chunks, id)
        quality = _lazy(_GroupArray(header, signals, n, "quality", identity), chunks, id)
    meta: dict[str, Any] = {
        "samples_per_record": spr,
        "signals": {name: {"label": s.label, "index": s.index, "transducer": s.transducer,
                           "prefilter": s.prefilter, "physical_min": s.pmin, "physical_max": s.pmax,
                           "digital_min": s.dmin, "digital_max": s.dmax, "reserved": s.reserved}
                    for name, s in zip(names, signals, strict=True)},
    }
    if renamed:
        meta["renamed"] = renamed
    if incomplete:
        meta["incomplete"] = incomplete
    attrs = run_attrs(id=id, name=f"{_rate_text(header, spr)} Hz", description="",
                      created_at=np.datetime64(start_ns, "ns"),
                      sample_rate=rate, metadata=meta, calibrated=False)
    return assemble_run(value, quality, times, tuple(channels), attrs)


# --------------------------------------------------------------------------- annotations


def _seconds_ns(text: bytes) -> int:
    """A TAL onset or duration (``+12.5``) in ns, exactly (beyond ns: cut)."""
    sign = -1 if text.startswith(b"-") else 1
    whole, _, frac = text.lstrip(b"+-").partition(b".")
    if not (whole + frac).isdigit():
        raise ValueError(text)
    return sign * (int(whole or b"0") * 1_000_000_000 + int((frac + b"000000000")[:9]))


_Events = tuple[NDArray[np.int64], list[str], NDArray[np.float64]]


def _annotations(header: _Header, n: int, raw: NDArray[Any] | None
                 ) -> tuple[list[int | None], _Events | None]:
    """Each record's onset (ns after the header's start; None where a record has no
    time-keeping annotation) and the annotations (absolute times in ns, texts, durations in s;
    None in plain EDF/BDF), from the first ``n`` records."""
    sigs = [s for s in header.signals if s.is_annotations] if header.plus else []
    onsets: list[int | None] = [None] * n
    if not sigs:
        return onsets, None
    mm: NDArray[np.uint8] = np.empty((0, header.record_bytes), np.uint8)
    if raw is None and n:  # lazily: only the annotation bytes are read
        mm = np.memmap(header.path, dtype=np.uint8, mode="r", offset=header.header_bytes,
                       shape=(n, header.record_bytes))
    times: list[int] = []
    labels: list[str] = []
    durations: list[float] = []
    b = header.sample_bytes
    for j, s in enumerate(sigs):
        width = s.spr * b
        records = raw.view(np.uint8).reshape(n, header.record_bytes) if raw is not None else mm
        slots = records[:, s.offset * b: s.offset * b + width]
        blob = np.ascontiguousarray(slots).tobytes()
        previous = -1
        for m in _TAL.finditer(blob):
            rec = m.start() // width
            if m.end() > (rec + 1) * width:
                raise FormatError(f"{header.path}: an annotation of data record {rec} runs into the "
                                  "next record; the file is damaged.")
            texts = m.group(3).split(b"\x14")
            if texts and texts[-1] == b"":
                texts = texts[:-1]
            # the first TAL of the first annotation signal in a record keeps the record's time
            keeps_time = j == 0 and rec != previous and m.start() == rec * width and texts[:1] == [b""]
            previous = rec
            if keeps_time:
                texts = texts[1:]
            if not texts and not (keeps_time and (rec == 0 or header.discontinuous)):
                continue  # (an EDF+C record's onset follows from its number)
            try:
                onset = _seconds_ns(m.group(1))
                duration = _seconds_ns(m.group(2)) / 1e9 if m.group(2) else math.nan
            except ValueError:
                raise FormatError(f"{header.path}: annotation onset/duration {m.group(0)[:40]!r} "
                                  f"in data record {rec} is not a number; the file is damaged.") from None
            if keeps_time:
                onsets[rec] = onset
            for t in texts:
                times.append(header.start_ns + onset)
                labels.append(_decoded(t))
                durations.append(duration)
    return onsets, (np.array(times, np.int64), labels, np.array(durations, np.float64))

