"""Write a file under a temporary name, make it durable, then rename it into place."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from daqlab.errors import ConfigurationError, DaqlabError, StorageError

__all__ = ["as_path", "atomic_path", "ensure_space", "fsync_dir", "fsync_path", "path_error",
           "probe", "replace_durably", "storage_errors", "temp_name", "write_durably"]


def _shown(path: object) -> str:
    """``path`` for a message: very long paths are cut, keeping both ends."""
    text = os.fspath(path) if isinstance(path, (str, os.PathLike)) else repr(path)
    text = text if isinstance(text, str) else repr(text)
    return text if len(text) <= 120 else f"{text[:60]}...{text[-40:]} ({len(text)} characters)"


def as_path(value: object, what: str) -> Path:
    """``value`` (a ``str`` or ``os.PathLike``) as a Path; anything else is a ConfigurationError."""
    if isinstance(value, (str, os.PathLike)):
        text = os.fspath(value)
        if isinstance(text, str):
            if "\0" in text:
                raise ConfigurationError(
                    f"{what} {_shown(text)!r} contains a NUL character, which no file name may hold; "
                    "remove it."
                )
            return Path(text)
        value = text
    if isinstance(value, (bytes, bytearray)):
        raise ConfigurationError(
            f"{what} must be a str or pathlib.Path; got bytes {_shown(bytes(value))}. Decode it "
            "first: os.fsdecode(path)."
        )
    raise ConfigurationError(
        f"{what} must be a str or pathlib.Path; got {type(value).__name__} ({_shown(value)}). "
        "Pass the file's path, e.g. 'run.nc' or Path('data') / 'run.nc'."
    )


def path_error(path: Path, exc: OSError, doing: str = "use") -> StorageError:
    """A StorageError for an OSError met while looking at ``path`` (too long, no permission...)."""
    hint = {
        errno.ENAMETOOLONG: "a file name may have at most 255 bytes and a whole path about 4096; "
                            "choose a shorter name",
        errno.EACCES: "check the permissions of the folders on the way",
        errno.ENOTDIR: "a part of the path that should be a folder is a file; fix the path",
        errno.ELOOP: "the path has a symbolic link loop; fix the links",
    }.get(exc.errno or 0, "check the path")
    return StorageError(exc.errno or errno.EIO,
                        f"cannot {doing} {_shown(path)}: {exc.strerror or exc}; {hint}.")


@contextlib.contextmanager
def storage_errors(path: Path, doing: str) -> Iterator[None]:
    """OS errors raised inside become StorageErrors naming ``path`` (DaqlabErrors pass as they are)."""
    try:
        yield
    except DaqlabError:
        raise
    except OSError as exc:
        raise path_error(path, exc, doing) from exc


def probe(path: Path, check: str = "exists", doing: str = "use") -> bool:
    """``path.exists()`` / ``is_dir()`` / ``is_file()``, an OS error being a StorageError."""
    try:
        return bool(getattr(path, check)())
    except OSError as exc:
        raise path_error(path, exc, doing) from exc


def temp_name(path: Path) -> Path:
    """A hidden sibling of ``path`` (temporary names start with ``.``)."""
    # a temporary name must fit wherever the final one does (255 bytes on common file
    # systems), so a long final name is shortened in it; it stays unique by the token
    limit = _NAME_MAX - len(".") - len(".12345678.tmp")
    name = path.name[:limit]
    while len(os.fsencode(name)) > limit:
        name = name[:-1]
    return path.with_name(f".{name}.{secrets.token_hex(4)}.tmp")


_NAME_MAX = 255  # bytes in one file name on Linux, macOS and Windows file systems


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


def write_durably(path: Path, write: Callable[[Path], object]) -> None:
    """``write(tmp)`` a hidden temporary sibling of ``path``, then make it ``path`` durably
    (fsync, rename, fsync the folder); the temporary file never outlives a failure. No checks
    (see :func:`atomic_path` for the checked write of a run): for files whose writer checked
    the folder and the free space already (a recording's segments and manifest)."""
    tmp = temp_name(path)
    try:
        write(tmp)
        replace_durably(tmp, path)
    finally:
        with contextlib.suppress(OSError):  # gone already (renamed), or never created
            tmp.unlink()


def replace_durably(tmp: Path, path: Path) -> None:
    """Rename the complete file ``tmp`` over ``path``, durably: its bytes, then the rename."""
    fsync_path(tmp)
    os.replace(tmp, path)
    fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_path(path: Path, *, overwrite: bool = False, expected_bytes: int = 0) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` durably.

    On any error the temporary file is removed and ``path`` is left as it was,
    so a full disk or a crash never leaves a half-written file under the
    final name. ``expected_bytes`` (an upper estimate of the file's size) is
    checked against the free space first, see :func:`ensure_space`.
    """
    path = as_path(path, "the path to write")
    if probe(path, "exists", "write") and not overwrite:
        raise StorageError(
            errno.EEXIST,
            f"{path} exists already; daqlab does not write over a run by default. "
            "Choose another name, or pass overwrite=True to replace it.",
        )
    if not probe(path.parent, "is_dir", "write into"):
        raise StorageError(
            errno.ENOENT,
            f"folder {path.parent} does not exist; create it first (Path.mkdir(parents=True)).",
        )
    ensure_space(path, expected_bytes)
    tmp = temp_name(path)
    try:
        yield tmp
        replace_durably(tmp, path)
    except OSError as exc:
        if isinstance(exc, StorageError):
            raise
        raise StorageError(
            exc.errno or errno.EIO, f"could not write {path}: {exc.strerror or exc}. "
            "Nothing was written under that name; free space or fix permissions, then retry."
        ) from exc
    finally:
        with contextlib.suppress(OSError):  # gone already (renamed), or never created
            tmp.unlink()
