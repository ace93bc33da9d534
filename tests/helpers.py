"""Shared test helpers: waiting on conditions, thread-leak checks."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from daqlab.model import check_channel_name
from daqlab.sources import Samples, Source

__all__ = ["FakeClock", "daqlab_threads", "is_valid_channel_name", "read_all_values", "read_to_end",
           "require_tool", "wait_for"]


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``predicate`` until it is true; fail with ``what`` after ``timeout`` seconds.

    Tests wait on conditions, never on fixed sleeps.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.005)


def daqlab_threads() -> list[threading.Thread]:
    """Live threads whose name starts with ``daqlab-``."""
    return [t for t in threading.enumerate() if t.name.startswith("daqlab-") and t.is_alive()]


def require_tool(name: str) -> str:
    """Path of command-line tool ``name``; missing fails under CI=true, else skips the test."""
    import os
    import shutil
    import sys
    from pathlib import Path

    import pytest

    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        msg = f"{name} is not installed (python3 dev.py test installs it)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(msg)
        pytest.skip(msg)
    return found


class FakeClock:
    """An injectable monotonic clock that moves only when told to, or when slept on."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0.0
        self.sleeps.append(seconds)
        self.now += seconds

    def advance(self, seconds: float) -> None:
        self.now += seconds


def read_to_end(src: Source, max_reads: int = 100_000) -> list[Samples]:
    """Every block of a started, unpaced, finite source, in order; it must end in ``max_reads``."""
    blocks: list[Samples] = []
    for _ in range(max_reads):
        if src.finished:
            break
        block = src.read(timeout=0.0)
        assert block is not None
        blocks.append(block)
    assert src.finished
    assert src.read(timeout=0.0) is None
    return blocks


def read_all_values(src: Source) -> NDArray[np.float64]:
    """Start a finite, unpaced source and return all it produces (channels x samples)."""
    src.start()
    return np.concatenate([b.values for b in read_to_end(src)], axis=1)


def is_valid_channel_name(name: str) -> bool:
    """Whether daqlab accepts ``name`` as a channel name (a filter for hypothesis strategies)."""
    try:
        check_channel_name(name)
    except ValueError:
        return False
    return True


def node(tree: object, key: str) -> Any:
    """The node ``key`` of a DataTree as a Dataset (its own variables, typed for mypy)."""
    import xarray as xr

    assert isinstance(tree, xr.DataTree), type(tree)
    sub = tree[key]
    assert isinstance(sub, xr.DataTree), f"{key} is not a node"
    return sub.to_dataset()
