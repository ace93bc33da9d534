"""The daqlab error hierarchy.

Every error daqlab raises on purpose derives from :class:`DaqlabError` and also
from the builtin it resembles, so ``except ValueError`` keeps working. Messages
say what was given, what is allowed, and how to fix it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = [
    "AcquisitionError",
    "AlreadyCalibratedError",
    "CalibrationError",
    "CaptureTimeout",
    "ChannelError",
    "ChannelNotFoundError",
    "ConfigurationError",
    "DaqlabError",
    "DataRangeError",
    "DatasetNotFoundError",
    "FormatError",
    "IncompleteFileWarning",
    "MissingExtraError",
    "NotCalibratedError",
    "NotFoundError",
    "ProcessingError",
    "RunsLeftOutWarning",
    "SaveErrors",
    "SchemaError",
    "ShapeError",
    "SourceError",
    "SourceNotFoundError",
    "StorageError",
]


class DaqlabError(Exception):
    """Base of every error daqlab raises on purpose."""


class ConfigurationError(DaqlabError, ValueError):
    """A setting (sample rate, capacity, block size...) is out of its allowed range."""


class ChannelError(DaqlabError, ValueError):
    """A channel definition is invalid (name, range, duplicates)."""


class NotFoundError(DaqlabError, KeyError):
    """Something was asked for by a name or id that is not there; the message lists what is."""

    def __str__(self) -> str:
        # KeyError would repr() the message and wrap it in quotes.
        return str(self.args[0]) if self.args else ""


class ChannelNotFoundError(NotFoundError):
    """A channel name was asked for that the run or buffer does not have."""


class SourceNotFoundError(NotFoundError):
    """A source name was asked for that the DataManager does not have."""


class DatasetNotFoundError(NotFoundError):
    """A dataset id was asked for that the DataManager does not have."""


class CalibrationError(DaqlabError, ValueError):
    """A calibration is invalid (NaN/zero slope, non-finite offset)."""


class AlreadyCalibratedError(CalibrationError):
    """``calibrate`` was asked to calibrate a run that is calibrated already."""


class NotCalibratedError(CalibrationError):
    """``uncalibrate`` was asked to undo a calibration that was never applied."""


class ShapeError(DaqlabError, ValueError):
    """An array has the wrong shape or dtype for where it was given."""


class DataRangeError(DaqlabError, IndexError):
    """Samples were asked for that a buffer or run does not hold (any more)."""


class SchemaError(DaqlabError, ValueError):
    """A run does not follow the daqlab run schema.

    ``problems`` lists every problem found, one sentence each; ``hint`` says how
    to fix them (by default: build runs with ``daqlab.make_run``).
    """

    def __init__(self, problems: Iterable[str], *, what: str = "run",
                 hint: str = "Build runs with daqlab.make_run(...) or fix the items above.") -> None:
        self.problems: tuple[str, ...] = tuple(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        n = len(self.problems)
        super().__init__(
            f"this {what} does not follow the daqlab run schema "
            f"({n} problem{'s' if n != 1 else ''}):\n{lines}\n{hint}"
        )


class SourceError(DaqlabError, RuntimeError):
    """A source failed or was used out of order (read before start...)."""


class AcquisitionError(DaqlabError, RuntimeError):
    """Acquisition failed; the cause is chained as ``__cause__``."""


class StorageError(DaqlabError, OSError):
    """A file could not be written or read (disk full, permissions, vanished folder)."""


class SaveErrors(ExceptionGroup[Exception], DaqlabError):
    """Several things could not be saved (``DataManager.stop()`` tries them all); ``exceptions``
    holds each failure. ``except DaqlabError`` catches it, ``except*`` picks kinds out of it."""

    def derive(self, excs: Sequence[Exception]) -> SaveErrors:  # type: ignore[override]
        return SaveErrors(self.message, excs)  # what except* and split() pick out stays a SaveErrors


class FormatError(DaqlabError, ValueError):
    """A file is corrupt, truncated, foreign or of an unsupported format/version."""


class ProcessingError(DaqlabError, ValueError):
    """A processing step cannot run as asked on this run (a cut-off at or above Nyquist,
    a series shorter than the filter needs, a bad parameter)."""


class MissingExtraError(DaqlabError, ImportError):
    """An optional library daqlab needs for this is not installed; the message names the
    ``daqlab[...]`` extra that installs it."""


class IncompleteFileWarning(UserWarning):
    """A file was opened with only what is complete in it (cut short, being written, or not
    finalised); what was left out is said in the message and in the run's or tree's
    ``metadata["incomplete"]``."""


class RunsLeftOutWarning(UserWarning):
    """Runs were joined, and some of those asked for were left out (different channels, an
    overlap, unreadable); each is in the result's ``attrs["left_out"]`` with its reason."""


class CaptureTimeout(DaqlabError, TimeoutError):
    """No capture came from an armed trigger in the time given, or none will come any more."""
