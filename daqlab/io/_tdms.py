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

This module builds the tree: properties, scalings and time bases, the nodes and their
runs. Where the values lie is found in :mod:`daqlab.io._tdms_layout`; they are read (at
once or lazily) by :mod:`daqlab.io._tdms_read`.
"""

from __future__ import annotations

import math
import os
import unicodedata
import warnings
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import xarray as xr
from numpy.typing import NDArray

from daqlab.errors import DaqlabError, FormatError, IncompleteFileWarning
from daqlab.io._extras import require
from daqlab.io._foreign import content_id
from daqlab.io._tdms_layout import Key, _Layout, _plan, _Tail, _walk
from daqlab.io._tdms_read import (
    Row,
    _lazy_arrays,
    _Library,
    _library_errors,
    _library_file,
    _may_be_bad,
    _NodeReader,
    _open_file,
    _quality,
)
from daqlab.model import Calibration, Channel, check_channel_name, numbered
from daqlab.run import assemble_run, run_attrs, sample_times
from daqlab.tree import make_tree, node_id, node_names

__all__ = ["open_tdms"]

_RAW_SOURCE = 0xFFFF_FFFF  # a scaling's input source meaning "the raw data"
_TDMS_EPOCH_S = 2_082_844_800  # seconds from 1904-01-01 (TDMS) to 1970-01-01, both UTC
_HASH_ASIDE = 8 << 20  # files larger than this are hashed for their id in a second thread


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


def _text_property(props: Any, name: str) -> str:
    """The text property ``name`` as :func:`_text` ("" where it is missing or not text)."""
    value = props.get(name)
    return _text(value) if isinstance(value, str) else ""


def _channel_names(names: Sequence[str]) -> list[str]:
    """Valid, unique channel names for TDMS channel names ('/' and control characters as '_')."""
    cleaned = []
    for i, raw in enumerate(names):
        text = "".join("_" if c == "/" or unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn")
                       else c for c in raw).strip()
        try:
            cleaned.append(check_channel_name(text))
        except ValueError:
            cleaned.append(f"channel {i}")
    return numbered(cleaned)


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


def _times(start_ns: int, n: int, rate: float) -> NDArray[np.datetime64]:
    """:func:`daqlab.run.sample_times` from sample 0, in one pass where the step is whole ns."""
    step = 1e9 / rate
    if step.is_integer() and abs(start_ns) + n * step < 2**62:
        return np.arange(start_ns, start_ns + n * int(step), int(step), dtype=np.int64)[:n].view(
            "datetime64[ns]")
    return sample_times(start_ns, 0, n, rate)


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
    renamed = {name: ch.name for name, ch in zip(names, node.channels, strict=True) if name != ch.name}
    meta["channels"] = {name: _props(ch.properties) for name, ch in zip(names, node.channels, strict=True)}
    for name, tdms_name in renamed.items():
        meta["channels"][name]["tdms_name"] = tdms_name
    conversions = {name: c.note for name, c in zip(names, node.conversions, strict=True) if c.note}
    if conversions:
        meta["conversions"] = conversions
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
                        samples.append((reader.read_all(f, tdms), None))
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
    return make_tree(runs, id=tree_id, metadata=root, name=_text_property(root_props, "name") or path.stem,
                     description=_text_property(root_props, "description"))


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
        attrs = run_attrs(id=node_id(tree_id, key), name=str(node.group.name),
                          description=_text_property(node.group.properties, "description"),
                          created_at=np.datetime64(node.time.start_ns, "ns"),
                          sample_rate=node.time.rate, metadata=meta, calibrated=False)
        times = _times(node.time.start_ns, n, node.time.rate)
        runs[key] = assemble_run(value, quality, times, channels, attrs)
    return runs
