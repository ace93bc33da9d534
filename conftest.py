"""Doctest namespace for the package's docstring examples."""

from __future__ import annotations

import datetime
from typing import Any

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _doctest_namespace(doctest_namespace: dict[str, Any]) -> None:
    doctest_namespace["np"] = np
    doctest_namespace["datetime"] = datetime
