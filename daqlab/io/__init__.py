"""Saving and opening runs in every format; the streaming recorder."""

from daqlab.io._atomic import atomic_path, path_error, storage_errors
from daqlab.io._formats import TABLE, Format
from daqlab.io._open import FORMATS, detect_format, format_for, open_run, open_runs, save
from daqlab.io._recorder import Recorder, is_recording, open_recording

__all__ = [
    "FORMATS",
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
    "path_error",
    "save",
    "storage_errors",
]
