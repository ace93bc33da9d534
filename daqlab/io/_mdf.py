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

This module holds the reader: the file opened by asammdf (:class:`_Source`) and the runs,
events and metadata of the tree (:func:`open_mdf`). The walk of the blocks and the patched
view are in :mod:`daqlab.io._mdf_scan`, the channels and their conversions in
:mod:`daqlab.io._mdf_channels`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import threading
import warnings
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
from daqlab.io._mdf_channels import _json, _Plan, _plan, _text, channel_names
from daqlab.io._mdf_scan import Layout, _err, _Patched, scan
from daqlab.model import Channel, Quality
from daqlab.run import assemble_run, chunked_variable, flag_quality, iso_utc, run_attrs
from daqlab.tree import make_events, make_tree, node_id, node_names

__all__ = ["TIME_CHUNK", "Layout", "channel_names", "open_mdf", "scan", "seconds_to_ns"]

TIME_CHUNK = 1 << 18
"""Records per lazy read: the file's own chunks (``chunks={}``)."""

_SYNC = {0: "none", 1: "time", 2: "angle", 3: "distance", 4: "index"}  # a master channel's kind


def _asammdf() -> Any:
    """The asammdf module; a message naming daqlab's extra when it is not installed."""
    return require("asammdf", "formats", "reading MDF4 files")


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


def _samples(values: Any, bits: Any) -> Samples:
    """asammdf's samples and invalidation bits (or None) as arrays."""
    return np.asarray(values), None if bits is None else np.asarray(bits, bool)


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
            asammdf = _asammdf()
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
                out.append(_samples(samples, bits))
            return out

    def read_all(self, group: int, index: list[int]) -> tuple[list[Samples], NDArray[Any]]:
        """Every record of channels ``index`` of ``group`` and of its master (in seconds), the
        group's data read once."""
        with self._lock, _Library(self.path, "read"):
            sigs = self.mdf.select([(None, group, i) for i in index], raw=True, copy_master=False)
            return [_samples(s.samples, s.invalidation_bits) for s in sigs], np.asarray(sigs[0].timestamps)

    def master(self, group: int, offset: int, count: int) -> NDArray[Any]:
        """The master channel (in seconds) of records ``offset`` to ``offset + count``."""
        with self._lock, _Library(self.path, "read the master channel of"):
            return np.asarray(self.mdf.get_master(group, record_offset=offset, record_count=count))


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


def _check_count(path: Path, raw: NDArray[Any], n: int, name: str, records: str) -> None:
    """A FormatError unless asammdf gave ``n`` samples of channel ``name`` (for ``records``)."""
    if raw.shape != (n,):
        raise _err(path, f"asammdf gave {raw.shape} samples of channel {name!r} for {records}.")


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
                _check_count(self.source.path, raw, t1 - t0, self.plan.channels[p].name,
                             f"records {t0} to {t1}")
                if not self.bad:
                    self.plan.physical(p, raw, out=out[p - c0])
                elif bits is not None:
                    out[p - c0] = bits
        if self.bad:
            out[[p - c0 for p in self.plan.all_invalid if c0 <= p < c1]] = True
        return out


def _assemble(values: Any, q: Any, ns: NDArray[np.int64], chans: tuple[Channel, ...],
              attrs: dict[str, Any]) -> xr.Dataset:
    """The run of ``values`` and quality ``q`` (numpy or dask, raw) at times ``ns``."""
    return assemble_run(values, q, ns.view("datetime64[ns]"), chans,
                        run_attrs(description="", sample_rate=_rate(ns), calibrated=False, **attrs))


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
            _check_count(self.path, raw, n, plan.channels[pos].name, f"{n} records")
            plan.physical(pos, raw, out=values[pos])
            if bits is not None:
                q[pos, bits] = Quality.BAD
        q[plan.all_invalid] = Quality.BAD
        chans = tuple(plan.channels)
        # the file's own times (a regular group's are start + k / rate, as daqlab stamps them);
        # make_run would copy the arrays, built and checked here already
        return _assemble(values, flag_quality(values, chans, calibrated=False, quality=q), ns, chans, attrs)

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
        run = _assemble(values, q, ns, chans, attrs)
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
    _asammdf()
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
