"""Write a file under a temporary name, make it durable, then rename it into place."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from daqlab.errors import StorageError

__all__ = ["atomic_path", "fsync_dir", "temp_name"]


def temp_name(path: Path) -> Path:
    """A hidden sibling of ``path`` (temporary names start with ``.``)."""
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new file in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` durably.

    On any error the temporary file is removed and ``path`` is left as it was,
    so a full disk or a crash never leaves a half-written file under the
    final name.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise StorageError(
            errno.EEXIST,
            f"{path} exists already; daqlab does not write over a run by default. "
            "Choose another name, or pass overwrite=True to replace it.",
        )
    if not path.parent.is_dir():
        raise StorageError(
            errno.ENOENT,
            f"folder {path.parent} does not exist; create it first (Path.mkdir(parents=True)).",
        )
    tmp = temp_name(path)
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        if isinstance(exc, StorageError):
            raise
        raise StorageError(
            exc.errno or errno.EIO, f"could not write {path}: {exc.strerror or exc}. "
            "Nothing was written under that name; free space or fix permissions, then retry."
        ) from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
