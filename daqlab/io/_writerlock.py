"""Whether a recording is still being written: a lock its recorder holds while it writes.

The recorder takes an exclusive ``flock`` on ``writer.lock`` in its folder when it starts and
lets it go when it stops, then writes ``closed.json``. The kernel drops the lock when the
process ends, however it ends (SIGKILL, power cut: the lock is not on disk), so a reader that
finds the lock free and no ``closed.json`` knows the recorder died: the recording crashed.
Taking a shared lock to test it writes nothing (a catalog must leave the folder as it is).
Where ``fcntl`` is missing (Windows), a recording without ``closed.json`` counts as crashed.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

from daqlab.io._atomic import write_durably
from daqlab.io._codec import dumps
from daqlab.run import iso_utc

__all__ = ["CLOSED", "LOCK", "WriterLock", "recording_state"]

LOCK = "writer.lock"
CLOSED = "closed.json"


class WriterLock:
    """The lock a recorder holds on its folder while it writes."""

    def __init__(self, folder: Path) -> None:
        self._fd: int | None = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is not None:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def finish(self, folder: Path, note: Mapping[str, Any]) -> None:
        """Write ``closed.json`` (``note`` and the time, durably) into ``folder``, then let the
        lock go, whatever happened to the note."""
        text = dumps({"closed_at": iso_utc(), **note})
        try:
            write_durably(folder / CLOSED, lambda p: p.write_text(text))
        finally:
            self.release()

    def release(self) -> None:
        """Let the lock go (idempotent)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing drops the flock


def recording_state(folder: Path) -> Literal["recording", "crashed", "complete"]:
    """``"recording"`` while a recorder holds ``folder``'s lock, ``"complete"`` once it closed
    it, ``"crashed"`` when neither (its process ended without closing)."""
    if (folder / CLOSED).is_file():
        return "complete"
    if fcntl is None:
        return "crashed"  # type: ignore[unreachable]
    try:
        fd = os.open(folder / LOCK, os.O_RDONLY)
    except OSError:
        return "crashed"  # no lock file: a recorder from before locks, or one that never started
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return "complete" if (folder / CLOSED).is_file() else "recording"
    except OSError:
        return "crashed"
    else:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        # the recorder may have closed between the two looks
        return "complete" if (folder / CLOSED).is_file() else "crashed"
    finally:
        os.close(fd)
