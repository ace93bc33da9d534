"""Suite-wide policing: no test may leave a ``daqlab-*`` thread running."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers import daqlab_threads, wait_for


@pytest.fixture(autouse=True)
def _no_leaked_threads() -> Iterator[None]:
    before = set(daqlab_threads())
    yield
    try:
        wait_for(lambda: not (set(daqlab_threads()) - before), timeout=5.0,
                 what="daqlab threads to end")
    except AssertionError:
        leaked = sorted(t.name for t in set(daqlab_threads()) - before)
        pytest.fail(f"test leaked daqlab threads: {leaked}")
