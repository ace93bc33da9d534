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

This module builds the tree; the chunks are parsed by :mod:`daqlab.io._xdf_chunks` and the
timestamps synchronised by :mod:`daqlab.io._xdf_clock`.
"""

from __future__ import annotations

import datetime as _dt
import json
import unicodedata
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from numpy.typing import NDArray

from daqlab.errors import FormatError, IncompleteFileWarning
from daqlab.io._foreign import content_id, estimate_rate
from daqlab.io._xdf_chunks import _MAGIC, _File, _load, _scan, _Stream, _text
from daqlab.io._xdf_clock import _timestamps
from daqlab.model import Channel, check_channel_name, numbered
from daqlab.run import chunk_samples, make_run
from daqlab.tree import make_events, make_tree, node_id, node_names

__all__ = ["open_xdf"]

_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
_BAD_CATEGORIES = ("Cc", "Cf", "Cs", "Co", "Cn")


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
        units.append(_text(ch, "unit"))
        types.append(_text(ch, "type"))
    cleaned = []
    for i, label in enumerate(labels):
        name = "".join(c for c in label.replace("/", "_")
                       if unicodedata.category(c) not in _BAD_CATEGORIES).strip()
        cleaned.append(name if name not in ("", ".", "..") else f"ch{i}")
    names = [check_channel_name(name) for name in numbered(cleaned)]
    renamed = {name: label for name, label in zip(names, labels, strict=True) if name != label}
    meta: dict[str, Any] = {"channel_types": types}
    if renamed:
        meta["renamed_channels"] = renamed
    if len(described) != s.nchan:
        meta["described_channels"] = f"{len(described)} of {s.nchan} in desc/channels"
    return [Channel(n, u) for n, u in zip(names, units, strict=True)], meta


def _origin(header: ET.Element | None) -> tuple[int | None, dict[str, Any]]:
    """The file header's ``datetime`` as ns since the epoch (UTC), and what the time base is."""
    text = _text(header, "datetime")
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
    synced = {sid: _timestamps(s) for sid, s in f.streams.items()}
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
                     "type": _text(s.info, "type"), "nominal_srate": s.srate}
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
