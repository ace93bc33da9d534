"""The catalog's index: one SQLite file in the folder it lists (standard library, no server).

One row per file or recording folder: its path (relative to the folder), a signature (size and
modification time; for a recording, those of its files and whether its recorder still holds it)
and the record :func:`daqlab.io.describe` made of it. A rescan reads again only what changed.

- Two kernels may scan at once: SQLite's own locking serialises their writes (each waits up to
  :data:`BUSY_TIMEOUT` s), and a row is a whole record, so either one's result is right.
- An index that is damaged, or from another schema version, is rebuilt: a new file is written
  beside it and renamed over it.
- A folder daqlab may not write to is still listed: the index then lives in the user's cache
  folder (``$XDG_CACHE_HOME/daqlab/catalogs``), or in memory if that fails too.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["INDEX_NAME", "Index"]

INDEX_NAME = ".daqlab-catalog.sqlite"
SCHEMA = 1  # PRAGMA user_version of the index
BUSY_TIMEOUT = 60.0
_CREATE = ("CREATE TABLE IF NOT EXISTS runs (path TEXT PRIMARY KEY, signature TEXT NOT NULL, "
           "record TEXT NOT NULL)")


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "daqlab" / "catalogs"


def _connect(path: Path | str) -> sqlite3.Connection:
    # used from the thread that scans (a widget's callback may be another): the catalog serialises
    db = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if version != SCHEMA or (tables and "runs" not in tables):
            if version != 0 or tables:
                raise _Outdated(f"index schema {version}, tables {sorted(tables)}")
            with _transaction(db):
                db.execute(_CREATE)
                db.execute(f"PRAGMA user_version = {SCHEMA}")
        elif "runs" not in tables:
            with _transaction(db):
                db.execute(_CREATE)
        db.execute("SELECT count(*) FROM runs").fetchone()  # a damaged file fails here at the latest
    except BaseException:
        db.close()
        raise
    return db


class _Outdated(Exception):
    """The index was written by another version of daqlab: rebuilt."""


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Any:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _probe_write(db: sqlite3.Connection) -> None:
    """Raise unless ``db`` can be written (SQLite opens a file it may not write read-only, and
    an empty transaction succeeds there: a real write, rolled back, tells)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute(f"PRAGMA user_version = {SCHEMA}")
    finally:
        db.execute("ROLLBACK")


def _rebuild(path: Path) -> sqlite3.Connection:
    """A fresh index renamed over the damaged or outdated one at ``path``."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    _connect(tmp).close()
    os.replace(tmp, path)
    return _connect(path)


class Index:
    """The catalog index of ``root`` (see the module). ``location``: where to keep it,
    ``None`` for the folder (falling back to the cache folder, then memory), ``":memory:"``
    to keep nothing on disk, or a file path."""

    def __init__(self, root: Path, location: str | os.PathLike[str] | None = None) -> None:
        self.root = root
        self.rebuilt: str | None = None
        """Why the index was rebuilt on opening (damaged, outdated), or None."""
        candidates: list[Path | str]
        if location is None:
            digest = hashlib.sha1(os.fsencode(root)).hexdigest()[:16]
            candidates = [root / INDEX_NAME, _cache_dir() / f"{root.name[:40]}-{digest}.sqlite", ":memory:"]
        else:
            candidates = [":memory:" if str(location) == ":memory:" else Path(location)]
        self.path: Path | None = None
        self._ident: tuple[int, int] | None = None
        self.db = self._open(candidates)

    def _open(self, candidates: list[Path | str]) -> sqlite3.Connection:
        problems = []
        for where in candidates:
            if where == ":memory:":
                return _connect(":memory:")
            assert isinstance(where, Path)
            try:
                db = self._open_file(where)
                _probe_write(db)
            except (sqlite3.Error, OSError) as exc:
                problems.append(f"{where}: {exc}")
                continue
            self.path = where
            self._ident = _identity(where)
            return db
        raise sqlite3.OperationalError("; ".join(problems))  # only with an explicit location

    def _open_file(self, path: Path) -> sqlite3.Connection:
        if path.parent != self.root:
            path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return _connect(path)
        except _Outdated as exc:
            self.rebuilt = f"outdated ({exc})"
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and not path.exists():
                raise  # cannot create it here
            self.rebuilt = f"damaged ({exc})"
        return _rebuild(path)

    def _current(self) -> None:
        """Reconnect if another catalog replaced the index file (rebuilt it) since we opened it:
        our connection would write into the old, unlinked file."""
        if self.path is None or _identity(self.path) == self._ident:
            return
        self.db.close()
        self.db = self._open_file(self.path)
        self._ident = _identity(self.path)

    def load(self) -> dict[str, tuple[str, dict[str, Any] | None]]:
        """Every row: path -> (signature, record or None for a file that is no run)."""
        self._current()
        rows = self.db.execute("SELECT path, signature, record FROM runs").fetchall()
        return {p: (sig, json.loads(rec)) for p, sig, rec in rows}

    def update(self, changed: Mapping[str, tuple[str, dict[str, Any] | None]],
               removed: Iterable[str]) -> None:
        """Store the rows of ``changed`` and drop those of ``removed``, in one transaction."""
        rows = [(p, sig, json.dumps(rec, allow_nan=True)) for p, (sig, rec) in changed.items()]
        gone = [(p,) for p in removed]
        if not rows and not gone:
            return
        for attempt in (1, 2):
            self._current()
            try:
                with _transaction(self.db):
                    self.db.executemany("INSERT OR REPLACE INTO runs VALUES (?, ?, ?)", rows)
                    self.db.executemany("DELETE FROM runs WHERE path = ?", gone)
                return
            except sqlite3.DatabaseError:
                if attempt == 2 or self.path is None:
                    raise
                self._ident = None  # replaced meanwhile ("database moved"...): reconnect, once

    def close(self) -> None:
        """Close the connection (an index in memory is gone then)."""
        self.db.close()
