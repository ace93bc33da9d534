"""A recording session of several sources: one small JSON manifest that makes their recordings
one tree (DESIGN.md, "Several rates").

A DataManager recording several sources writes, before any sample, ``<stem>.session.json``
beside the recordings: the session's id, name, created_at and metadata, and each source's run
file (relative to the manifest). ``open_tree`` of the manifest opens each as a node, whatever
state it is in: a finished run file, a recording folder still being written, or the folder a
killed process left (each recovered as ``open_run`` recovers it). A source whose recording is
missing altogether is left out, with an :class:`~daqlab.IncompleteFileWarning` and
``metadata["incomplete"]`` naming it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import xarray as xr

from daqlab.errors import ConfigurationError, DaqlabError, FormatError, IncompleteFileWarning
from daqlab.io._atomic import write_durably
from daqlab.io._codec import attrs_to_json, dumps, from_json, loads
from daqlab.tree import node_names, tree_attrs

__all__ = ["SESSION_FORMAT", "SESSION_SUFFIX", "open_session", "sniff_session", "write_session"]

SESSION_FORMAT = "daqlab-session"
SESSION_SUFFIX = ".session.json"
_VERSION = 1


def sniff_session(head: bytes) -> bool:
    """True if ``head`` (a file's first bytes) starts a session manifest."""
    return head.lstrip()[:1] == b"{" and f'"format": "{SESSION_FORMAT}"'.encode() in head[:200]


def write_session(path: Path, runs: Mapping[str, Path], *, id: str, name: str,
                  created_at: str, metadata: Mapping[str, Any]) -> Path:
    """Write the manifest of a session whose sources record to ``runs`` (source name -> run
    file), durably (nothing under ``path`` until it is complete)."""
    attrs = tree_attrs(id=id, name=name, created_at=created_at, metadata=metadata)
    try:
        body = {"format": SESSION_FORMAT, "version": _VERSION, "attrs": attrs_to_json(attrs),
                "nodes": [{"source": source, "path": _relative(run, path.parent)}
                          for source, run in runs.items()]}
    except ConfigurationError as exc:
        raise FormatError(f"cannot write the session manifest {path.name}: {exc}") from None
    text = dumps(body, indent=1) + "\n"
    write_durably(path, lambda tmp: tmp.write_text(text, encoding="utf-8", errors="surrogatepass"))
    return path


def _relative(run: Path, folder: Path) -> str:
    try:
        return str(run.resolve().relative_to(folder.resolve()))
    except ValueError:
        return str(run.resolve())


def _read(path: Path) -> tuple[dict[str, Any], list[tuple[str, Path]]]:
    try:
        body = loads(path.read_text(encoding="utf-8", errors="surrogatepass"))
        if not isinstance(body, dict) or body.get("format") != SESSION_FORMAT:
            raise ValueError("it is not a daqlab session manifest")
        if body.get("version") != _VERSION:
            raise ValueError(f"version {body.get('version')!r} is not {_VERSION} (a newer daqlab "
                             "wrote it: upgrade daqlab)")
        attrs = from_json(body["attrs"])
        nodes = [(str(n["source"]), path.parent / str(n["path"])) for n in body["nodes"]]
        if not isinstance(attrs, dict) or not nodes:
            raise ValueError("it names no recordings")
        return attrs, nodes
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FormatError(f"{path} is not a readable daqlab session manifest ({exc}); it lists the "
                          "recordings of a DataManager's sources: open each of them with "
                          "daqlab.open_run instead.") from None


def open_session(path: Path, chunks: Any, open_run: Callable[[Path, Any], xr.Dataset]
                 ) -> xr.DataTree:
    """The session at ``path`` as a tree, one node per source (``open_run`` opens each)."""
    attrs, nodes = _read(path)
    names = node_names(source for source, _ in nodes)
    runs: dict[str, xr.Dataset] = {}
    missing: list[dict[str, str]] = []
    for key, (source, run_path) in zip(names, nodes, strict=True):
        try:
            runs[key] = open_run(run_path, chunks)
        except DaqlabError as exc:
            missing.append({"source": source, "path": str(run_path), "error": str(exc)})
    if not runs:
        raise FormatError(f"{path}: none of the session's recordings can be opened: "
                          + "; ".join(f"{m['source']}: {m['error']}" for m in missing))
    if missing:
        attrs = {**attrs, "metadata": {**attrs.get("metadata", {}), "incomplete": {
            "reason": "recordings missing or unreadable", "left_out": missing}}}
        warnings.warn(f"{path}: the recordings of source(s) {[m['source'] for m in missing]} could "
                      "not be opened and are left out (metadata['incomplete'] says why).",
                      IncompleteFileWarning, stacklevel=3)
    root = xr.Dataset(attrs=attrs)
    return xr.DataTree.from_dict({"/": root, **{f"/{k}": v for k, v in runs.items()}})
