"""One headless Chromium (Debian's, driven by Playwright) per browser-test session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser

from tests.helpers import require_tool
from tests.view.browser import chromium


@pytest.fixture(scope="session")
def chromium_browser() -> Iterator[Browser]:
    executable = require_tool("chromium")  # fails under CI=true when missing, else skips
    with chromium(executable) as browser:
        yield browser


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that opens Chromium is marked ``browser``: ``-m "not browser"`` leaves it out."""
    for item in items:
        if "chromium_browser" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.browser)
