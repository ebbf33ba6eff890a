"""Debian's chromium, driven by playwright (browsers cannot be downloaded here)."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, async_playwright

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
"""The browser the tests drive; ``make test`` installs it when missing."""


@contextlib.asynccontextmanager
async def launched() -> AsyncIterator[Browser]:
    """A headless Chromium, closed at the end (a test fails if it is missing)."""
    if not shutil.which(CHROMIUM):
        pytest.fail("chromium is missing: `make test` installs it with apt-get")
    async with async_playwright() as driver:
        browser = await driver.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox"]
        )
        try:
            yield browser
        finally:
            await browser.close()
