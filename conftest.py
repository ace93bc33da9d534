"""Doctest namespace for the package's docstring examples."""

from __future__ import annotations

import datetime
from typing import Any

import numpy as np
import pytest
import xarray as xr

import daqlab as dl


@pytest.fixture(autouse=True)
def _doctest_namespace(doctest_namespace: dict[str, Any]) -> None:
    doctest_namespace["np"] = np
    doctest_namespace["xr"] = xr
    doctest_namespace["dl"] = dl
    doctest_namespace["rng"] = np.random.default_rng(0)  # seeded: examples print the same numbers
    doctest_namespace["datetime"] = datetime
