"""Saving and opening runs in every format; the streaming recorder."""

from daqlab.io._atomic import as_path, atomic_path, path_error, storage_errors
from daqlab.io._capfile import CAPTURES_SUFFIX, CaptureWriter, is_captures, open_captures
from daqlab.io._codec import from_json
from daqlab.io._csv import SIDECAR_SUFFIX
from daqlab.io._describe import describe, disk_bytes
from daqlab.io._formats import TABLE, Format
from daqlab.io._open import (
    FORMATS,
    READ_ONLY,
    detect_format,
    format_for,
    join_problems,
    join_runs,
    open_run,
    open_runs,
    open_tree,
    overlap_problem,
    save,
)
from daqlab.io._recorder import Recorder, is_recording, open_recording
from daqlab.io._session import SESSION_SUFFIX, write_session
from daqlab.io._writerlock import recording_state

__all__ = [
    "CAPTURES_SUFFIX",
    "FORMATS",
    "READ_ONLY",
    "SESSION_SUFFIX",
    "SIDECAR_SUFFIX",
    "TABLE",
    "CaptureWriter",
    "Format",
    "Recorder",
    "as_path",
    "atomic_path",
    "describe",
    "detect_format",
    "disk_bytes",
    "format_for",
    "from_json",
    "is_captures",
    "is_recording",
    "join_problems",
    "join_runs",
    "open_captures",
    "open_recording",
    "open_run",
    "open_runs",
    "open_tree",
    "overlap_problem",
    "path_error",
    "recording_state",
    "save",
    "storage_errors",
    "write_session",
]
