"""What daqlab needs from a source of samples."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from daqlab.model import Channel

__all__ = ["Samples", "Source"]


@dataclass(frozen=True, eq=False)
class Samples:
    """One block from a source: ``(channels, n)`` values with their timestamps."""

    values: NDArray[np.float64]
    """``(channels, n)`` raw values."""
    times: NDArray[np.datetime64]
    """``(n,)`` UTC timestamps, ``datetime64[ns]``, non-decreasing."""
    quality: NDArray[np.int8] | None = None
    """Flags the source knows of (``None``: all GOOD as far as it knows)."""

    def __len__(self) -> int:
        return int(self.times.shape[0])


@runtime_checkable
class Source(Protocol):
    """A producer of sample blocks, driven by one acquisition thread.

    ``start()`` is called once, then ``read()`` repeatedly from one thread, then
    ``stop()`` (possibly from another thread, to interrupt a waiting ``read``).
    """

    @property
    def channels(self) -> tuple[Channel, ...]:
        """The channels, in the order of the rows of every block."""
        ...

    @property
    def sample_rate(self) -> float:
        """Nominal sample rate in Hz."""
        ...

    @property
    def finished(self) -> bool:
        """True once a finite source has delivered its last block."""
        ...

    def start(self) -> None:
        """Begin producing; paced sources take their time origin here."""
        ...

    def read(self, timeout: float) -> Samples | None:
        """The next block, waiting at most ``timeout`` s; ``None`` when none is due yet."""
        ...

    def stop(self) -> None:
        """Stop producing and wake a waiting ``read``."""
        ...

    def describe(self) -> dict[str, Any]:
        """A JSON-able description of the source's configuration, for run metadata."""
        ...
