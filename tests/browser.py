"""Headless Chromium for the browser tests: Debian's /usr/bin/chromium driven by Playwright.

A browser test module calls `playwright_or_skip()` at import (it skips the module where
Chromium is not installed; CI installs it with `make browser`) and takes its browser from a
module-scoped fixture around `launched_chromium()`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def playwright_or_skip() -> Any:
    """Playwright's sync API, or skip the calling test module (call it at module level)."""
    if not CHROMIUM.exists():  # pragma: no cover - CI installs it (`make browser`)
        pytest.skip(
            "Debian's chromium is not installed: run `make browser`", allow_module_level=True
        )
    return pytest.importorskip("playwright.sync_api")


@contextmanager
def launched_chromium() -> Iterator[Any]:
    """A headless Chromium browser, closed afterwards."""
    sync_api = playwright_or_skip()
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            browser.close()
