"""Saving and opening runs in every format; the streaming recorder."""

from daqlab.io._atomic import atomic_path, path_error, storage_errors
from daqlab.io._formats import TABLE, Format
from daqlab.io._open import (
    FORMATS,
    READ_ONLY,
    detect_format,
    format_for,
    open_run,
    open_runs,
    open_tree,
    save,
)
from daqlab.io._recorder import Recorder, is_recording, open_recording
from daqlab.io._session import SESSION_SUFFIX, write_session

__all__ = [
    "FORMATS",
    "READ_ONLY",
    "SESSION_SUFFIX",
    "TABLE",
    "Format",
    "Recorder",
    "atomic_path",
    "detect_format",
    "format_for",
    "is_recording",
    "open_recording",
    "open_run",
    "open_runs",
    "open_tree",
    "path_error",
    "save",
    "storage_errors",
    "write_session",
]
