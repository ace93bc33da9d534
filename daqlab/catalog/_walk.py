"""Finding the runs under a folder: every file and recording folder, with a cheap signature.

Hidden names (a leading dot: the index, temporary files of saves in progress, editors' files)
are passed over, and so are CSV sidecars (part of their CSV's run). A recording folder is one
entry, and so is a folder of captures (neither is descended into); other folders are walked,
symbolic links to folders are not (no loops). Only ``stat`` is called here: the signature says
whether a file changed, so the catalog reads only what did.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from daqlab.io import SESSION_SUFFIX, SIDECAR_SUFFIX, is_captures, recording_state

__all__ = ["Entry", "shown", "walk"]

_MANIFEST = "run.json"


@dataclass(frozen=True)
class Entry:
    """One file or recording folder under the root."""

    path: Path
    signature: str
    bytes: int
    modified_ns: int
    recording: bool = False


def shown(text: str) -> str:
    """``text`` as valid UTF-8: a file name that is not (``os`` gives its bytes as lone
    surrogates) with those bytes as ``\\xNN`` escapes. Rows are keyed by it; opening uses the
    real path."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return text


def _rel(path: Path, root: Path) -> str:
    return shown(path.relative_to(root).as_posix())


def _stat_part(st: os.stat_result) -> str:
    return f"{st.st_size}:{st.st_mtime_ns}"


def _recording(path: Path) -> Entry:
    parts, size, newest = [], 0, 0
    with os.scandir(path) as it:
        for e in sorted(it, key=lambda e: e.name):
            if e.name.startswith(".") or not e.is_file(follow_symlinks=False):
                continue
            st = e.stat(follow_symlinks=False)
            parts.append(f"{e.name}={_stat_part(st)}")
            size += st.st_size
            newest = max(newest, st.st_mtime_ns)
    # the state is part of the signature: a recorder that died changes no file
    state = recording_state(path)
    return Entry(path, f"{state};{';'.join(parts)}", size, newest, recording=True)


def walk(root: Path) -> dict[str, Entry]:
    """Every entry under ``root`` by its path relative to ``root`` (POSIX separators)."""
    found: dict[str, Entry] = {}
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError:
            continue  # a folder we may not list (or that vanished): nothing of it is shown
        names = {e.name for e in entries}
        for e in entries:
            name = e.name
            if name.startswith("."):
                continue
            path = Path(e.path)
            try:
                if e.is_dir(follow_symlinks=False):
                    if (path / _MANIFEST).is_file() or is_captures(path):
                        found[_rel(path, root)] = _recording(path)
                    else:
                        stack.append(path)
                    continue
                if not e.is_file():
                    continue
                if name.endswith(SIDECAR_SUFFIX) and name[: -len(SIDECAR_SUFFIX)] in names:
                    continue  # a CSV's sidecar
                st = e.stat()
                signature, size = _stat_part(st), st.st_size
                if name.lower().endswith(".csv") and f"{name}{SIDECAR_SUFFIX}" in names:
                    side = (path.parent / f"{name}{SIDECAR_SUFFIX}").stat()
                    signature += f"+{_stat_part(side)}"
                    size += side.st_size
            except OSError:
                continue  # vanished between the listing and the look
            found[_rel(path, root)] = Entry(path, signature, size, st.st_mtime_ns)
    for rel, entry in list(found.items()):
        if rel.endswith(SESSION_SUFFIX):
            found[rel] = _session(entry, found, root)
    return found


def _session(entry: Entry, found: dict[str, Entry], root: Path) -> Entry:
    """A session manifest's entry, its signature extended by those of the recordings it lists
    (they change while the manifest does not)."""
    try:
        body = json.loads(entry.path.read_text(encoding="utf-8", errors="surrogatepass"))
        listed = [entry.path.parent / str(n["path"]) for n in body["nodes"]]
    except (OSError, ValueError, KeyError, TypeError):
        return entry  # the reader says what is wrong with it
    parts = []
    for run in listed:
        for candidate in (run, run.with_suffix(".daqrec")):
            try:
                rel = _rel(candidate.resolve(), root)
            except (ValueError, OSError):
                continue
            if rel in found:
                parts.append(f"{rel}={found[rel].signature}")
    return Entry(entry.path, f"{entry.signature}|{'|'.join(parts)}", entry.bytes, entry.modified_ns)
