"""Write a file under a temporary name, make it durable, then rename it into place."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

from daqlab.errors import StorageError

__all__ = ["atomic_path", "ensure_space", "fsync_dir", "fsync_path", "temp_name"]


def temp_name(path: Path) -> Path:
    """A hidden sibling of ``path`` (temporary names start with ``.``)."""
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")


def fsync_path(path: Path) -> None:
    """fsync a file (its data) or a folder (the names in it: a rename, a new file)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new file in ``folder`` durable."""
    fsync_path(folder)


_MARGIN = 1 << 20  # bytes kept free beyond an estimate: HDF5 metadata, file system slack


def ensure_space(path: Path, nbytes: int, what: str = "") -> None:
    """Refuse (ENOSPC) before writing ``nbytes`` into ``path``'s folder if they will not fit.

    HDF5 2.0 was seen to crash the process (SIGSEGV) when the disk filled up in the
    middle of a write, so daqlab never lets a write run into a full disk: it checks
    first, with a margin.
    """
    free = shutil.disk_usage(path.parent).free
    need = int(nbytes * 1.1) + _MARGIN
    if free < need:
        raise StorageError(
            errno.ENOSPC,
            f"could not write {what or path}: it needs about {need / 2**20:.1f} MiB and "
            f"{path.parent} has {free / 2**20:.1f} MiB free (No space left on device). Nothing "
            "was written under that name; free space or choose another folder, then retry.",
        )


@contextlib.contextmanager
def atomic_path(path: Path, *, overwrite: bool = False, expected_bytes: int = 0) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` durably.

    On any error the temporary file is removed and ``path`` is left as it was,
    so a full disk or a crash never leaves a half-written file under the
    final name. ``expected_bytes`` (an upper estimate of the file's size) is
    checked against the free space first, see :func:`ensure_space`.
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
    ensure_space(path, expected_bytes)
    tmp = temp_name(path)
    try:
        yield tmp
        fsync_path(tmp)
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
