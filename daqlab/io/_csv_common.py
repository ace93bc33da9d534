"""The CSV layout's names and the pieces :mod:`daqlab.io._csv_write` and :mod:`daqlab.io._csv_read`
share: column names, quality names, millisecond scale, formula protection, the CSV's fingerprint.

The layouts, cells and formula injection: docs/formats/csv.md.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from daqlab.model import Quality

__all__ = ["BOM", "LONG_COLUMNS", "MAX_MS", "NS_PER_MS", "QUALITY_NAMES", "TIME_COLUMN", "csv_field",
           "fingerprint", "protect", "unprotect"]

TIME_COLUMN = "timestamp_ms"
LONG_COLUMNS = (TIME_COLUMN, "value", "channel", "quality")
QUALITY_NAMES = tuple(q.name.capitalize() for q in Quality)
BOM = b"\xef\xbb\xbf"
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "'")
NS_PER_MS = 1_000_000
MAX_MS = np.iinfo(np.int64).max // NS_PER_MS


def protect(text: str) -> str:
    """OWASP: a leading ``'`` keeps a spreadsheet from executing the cell."""
    return "'" + text if text.startswith(_FORMULA_START) else text


def unprotect(text: str) -> str:
    return text[1:] if text.startswith("'") else text


def csv_field(text: str) -> str:
    if any(c in text for c in ',"\r\n') or text != text.strip():
        return '"' + text.replace('"', '""') + '"'
    return text


def fingerprint(path: Path) -> dict[str, int]:
    """Byte size and CRC-32 of a file: cheap (GB/s), and enough to tell two CSVs apart."""
    crc = size = 0
    with path.open("rb") as f:
        while block := f.read(1 << 22):
            crc = zlib.crc32(block, crc)
            size += len(block)
    return {"bytes": size, "crc32": crc}
