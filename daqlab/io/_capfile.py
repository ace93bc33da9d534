"""Captures on disk: a folder ``NAME.daqcap/`` that an armed trigger fills, crash-safely.

Layout: ``captures.json`` (the manifest: channels, the run attributes, the trigger, written
first), ``writer.lock`` (held while captures are written: see :mod:`daqlab.io._writerlock`),
numbered segments ``seg-00000001.h5`` (each a batch of whole captures, written under a hidden
temporary name, made durable, then renamed into place: a killed process leaves only complete
captures), and ``closed.json`` once the writer stopped. Each segment holds ``value`` and
``quality`` ``(capture, channel, sample)``, ``time`` ``(capture, sample)`` (ns since 1970,
UTC), and per capture ``capture`` (its number), ``trigger_sample`` (write counter) and
``triggered``.

:func:`open_captures` gives all captures stacked (a ``capture`` dimension, each capture's
``time`` beside an ``offset`` from its trigger sample); :func:`open_captures_tree` a tree of
runs, one node per capture (``dl.open_tree`` of the folder).
"""

from __future__ import annotations

import errno
import json
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import xarray as xr

from daqlab._version import __version__
from daqlab.errors import FormatError, StorageError
from daqlab.io._atomic import ensure_space, probe, write_durably
from daqlab.io._codec import JSON, decode_attrs, dumps, encode_attrs, to_json
from daqlab.io._records import channel_from_record, channel_record, check_schema_version
from daqlab.io._writerlock import WriterLock
from daqlab.model import Channel
from daqlab.run import SCHEMA_VERSION, assemble_run
from daqlab.tree import make_tree

__all__ = ["CAPTURES_SUFFIX", "CaptureWriter", "is_captures", "open_captures", "open_captures_tree"]

CAPTURES_SUFFIX = ".daqcap"
_MANIFEST = "captures.json"
_LIBVER = ("earliest", "v110")


def is_captures(path: Path) -> bool:
    """True for a folder of captures (being written or not)."""
    return path.is_dir() and (path / _MANIFEST).is_file()


class CaptureWriter:
    """Writes captures (runs of ``pre + post`` samples) into the folder ``folder``, a batch per
    segment at each :meth:`flush`."""

    def __init__(self, folder: Path, channels: tuple[Channel, ...], attrs: Mapping[str, Any],
                 trigger: Mapping[str, Any], pre: int, post: int) -> None:
        if probe(folder, "exists", "record captures into"):
            raise StorageError(errno.EEXIST, f"{folder} exists already; captures never go into an "
                               "existing folder. Choose another name.")
        values, types = encode_attrs(dict(attrs), JSON, "the captures'")
        text = dumps({"format": "daqlab-captures", "schema_version": SCHEMA_VERSION,
                      "daqlab_version": __version__, "attrs": values, "attr_types": types,
                      "trigger": to_json(dict(trigger)), "pre": pre, "post": post,
                      "channels": [to_json(channel_record(c)) for c in channels]})
        self.folder = folder
        self.written = 0
        """Captures durable on disk."""
        self._pending: list[xr.Dataset] = []
        self._segments = 0
        try:
            folder.mkdir(parents=True)
            self._lock: WriterLock | None = WriterLock(folder)
            write_durably(folder / _MANIFEST, lambda p: p.write_text(text))
        except OSError as exc:
            raise StorageError(exc.errno or errno.EIO,
                               f"cannot record captures into {folder}: {exc}") from exc

    def add(self, capture: xr.Dataset) -> None:
        """Queue a capture for the next segment."""
        self._pending.append(capture)

    @property
    def pending(self) -> int:
        """Captures queued, not written yet."""
        return len(self._pending)

    def flush(self) -> None:
        """Write the queued captures as one durable segment (raises OSError on a full disk...)."""
        if not self._pending:
            return
        caps = self._pending
        value = np.stack([c["value"].values for c in caps])
        quality = np.stack([c["quality"].values for c in caps])
        time = np.stack([c["time"].values.astype("datetime64[ns]").view(np.int64) for c in caps])
        numbers = np.array([c.attrs["capture"] for c in caps], np.int64)
        samples = np.array([c.attrs["trigger_sample"] for c in caps], np.int64)
        triggered = np.array([bool(c.attrs["triggered"]) for c in caps], np.int8)
        ids = np.array([str(c.attrs["id"]).encode() for c in caps], "S36")
        seg = self.folder / f"seg-{self._segments + 1:08d}.h5"

        def write(p: Path) -> None:
            with h5py.File(p, "w", libver=_LIBVER) as f:
                for name, data in (("value", value), ("quality", quality), ("time", time),
                                   ("capture", numbers), ("trigger_sample", samples),
                                   ("triggered", triggered), ("id", ids)):
                    f.create_dataset(name, data=data)

        ensure_space(seg, value.nbytes + quality.nbytes + time.nbytes, f"segment {seg.name}")
        write_durably(seg, write)
        self._segments += 1
        self.written += len(caps)
        self._pending = []

    def close(self) -> None:
        """Write what is queued, note the folder closed, let its lock go."""
        lock, self._lock = self._lock, None
        try:
            self.flush()
        finally:
            if lock is not None:
                lock.finish(self.folder, {"captures": self.written})


def _manifest(folder: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((folder / _MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise FormatError(f"{folder}/{_MANIFEST} is not readable: {exc}.") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != "daqlab-captures":
        raise FormatError(f"{folder}/{_MANIFEST} does not describe daqlab captures.")
    check_schema_version(manifest.get("schema_version", 0), source=folder, where=f"{folder}/{_MANIFEST}",
                         written_by=manifest.get("daqlab_version"))
    return manifest


def _read(folder: Path) -> tuple[dict[str, Any], tuple[Channel, ...], dict[str, Any],
                                 dict[str, np.ndarray[Any, Any]]]:
    manifest = _manifest(folder)
    try:
        channels = tuple(channel_from_record(c) for c in manifest["channels"])
        attrs = decode_attrs(manifest["attrs"], manifest["attr_types"])
        pre, post = int(manifest["pre"]), int(manifest["post"])
    except (KeyError, TypeError, ValueError) as exc:
        raise FormatError(f"{folder}/{_MANIFEST} is damaged: {exc!r}.") from exc
    parts: dict[str, list[np.ndarray[Any, Any]]] = {k: [] for k in ("value", "quality", "time", "capture",
                                                          "trigger_sample", "triggered", "id")}
    for seg in sorted(p for p in folder.glob("seg-*.h5") if not p.name.startswith(".")):
        try:
            with h5py.File(seg, "r") as f:
                for k in parts:
                    parts[k].append(np.asarray(f[k][()]))
        except (OSError, KeyError) as exc:
            raise FormatError(f"segment {seg} of captures {folder} is unreadable: {exc}") from exc
    c, n = len(channels), pre + post
    empty: dict[str, np.ndarray[Any, Any]] = {
             "value": np.empty((0, c, n)), "quality": np.empty((0, c, n), np.int8),
             "time": np.empty((0, n), np.int64), "capture": np.empty(0, np.int64),
             "trigger_sample": np.empty(0, np.int64), "triggered": np.empty(0, np.int8),
             "id": np.empty(0, "S36")}
    arrays = {k: np.concatenate(v) if v else empty[k] for k, v in parts.items()}
    return manifest, channels, attrs, arrays


def _capture_attrs(attrs: Mapping[str, Any], manifest: Mapping[str, Any], arrays: Mapping[str, Any],
                   i: int) -> dict[str, Any]:
    trig = manifest["trigger"]
    pre = int(manifest["pre"])
    t = arrays["time"][i, pre if int(manifest["post"]) else -1].view("datetime64[ns]")
    number = int(arrays["capture"][i])
    return {**attrs, "id": arrays["id"][i].decode(),
            "name": f"{attrs.get('name') or trig['channel']} capture {number}",
            "trigger_time": f"{np.datetime_as_string(t, unit='ns')}Z", "trigger_index": pre,
            "trigger_sample": int(arrays["trigger_sample"][i]), "trigger_channel": trig["channel"],
            "trigger_level": trig["level"], "trigger_edge": trig["edge"],
            "triggered": bool(arrays["triggered"][i]), "capture": number,
            "metadata": {**attrs.get("metadata", {}), "trigger": trig}}


def open_captures_tree(folder: Path, chunks: Any = None) -> xr.DataTree:
    """The captures in ``folder`` as a tree: a node per capture (``capture_000000``...), each a
    run with its trigger's attributes."""
    manifest, channels, attrs, arrays = _read(folder)
    nodes = {}
    for i in range(arrays["capture"].shape[0]):
        a = _capture_attrs(attrs, manifest, arrays, i)
        run = assemble_run(arrays["value"][i], arrays["quality"][i], arrays["time"][i].view("datetime64[ns]"),
                           channels, a)
        nodes[f"capture_{a['capture']:06d}"] = run if chunks is None else run.chunk(chunks or {})
    tree_id = str(attrs.get("id") or uuid.uuid4())
    return make_tree(nodes, id=tree_id, name=str(attrs.get("name", "")),
                     created_at=attrs.get("created_at"),
                     metadata={**attrs.get("metadata", {}), "trigger": manifest["trigger"],
                               "captures": len(nodes)})


def open_captures(path: str | Path) -> xr.Dataset:
    """Every capture in the folder ``path``, stacked: ``value`` and ``quality`` ``(capture,
    channel, sample)``, ``time`` ``(capture, sample)``, ``offset`` (seconds from the trigger
    sample, the same for all), and per capture ``trigger_time``, ``trigger_sample``,
    ``triggered``; the channels' coordinates as in a run. Averaging captures:
    ``caps["value"].mean("capture")``."""
    folder = Path(path)
    if not is_captures(folder):
        raise FormatError(f"{folder} is not a folder of captures (no {_MANIFEST} in it).")
    manifest, channels, attrs, arrays = _read(folder)
    pre, n = int(manifest["pre"]), int(manifest["pre"]) + int(manifest["post"])
    rate = float(attrs["sample_rate"])
    one = assemble_run(np.zeros((len(channels), 0)), np.zeros((len(channels), 0), np.int8),
                       np.empty(0, "datetime64[ns]"), channels, attrs)
    times = arrays["time"].view("datetime64[ns]")
    ds = xr.Dataset(
        {"value": (("capture", "channel", "sample"), arrays["value"]),
         "quality": (("capture", "channel", "sample"), arrays["quality"])},
        coords={**{name: one[name].variable for name in one.coords if name != "time"},
                "capture": ("capture", arrays["capture"]),
                "time": (("capture", "sample"), times),
                "offset": ("sample", (np.arange(n) - pre) / rate, {"units": "s"}),
                "trigger_time": ("capture", times[:, min(pre, n - 1)]),
                "trigger_sample": ("capture", arrays["trigger_sample"]),
                "triggered": ("capture", arrays["triggered"].astype(bool))},
        attrs={**attrs, "trigger": manifest["trigger"], "trigger_index": pre},
    )
    return ds
