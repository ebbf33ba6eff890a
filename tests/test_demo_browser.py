"""The demo page in a real headless Chromium: two tabs of one session, 375 px wide.

Debian's ``chromium`` is driven by playwright with ``executable_path`` (no
browser download); ``make test`` installs both.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator

import pytest
from aiohttp.pytest_plugin import AiohttpServer
from playwright.async_api import Browser, async_playwright, expect

from demo import make_app
from demo.key import random_key

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
TIMEOUT_MS = 5_000


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
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


async def test_two_tabs_at_375px_tell_which_button_closed_them(
    aiohttp_server: AiohttpServer, browser: Browser
) -> None:
    server = await aiohttp_server(make_app(random_key(), tick_interval=0.05))
    url = str(server.make_url("/"))
    context = await browser.new_context(viewport={"width": 375, "height": 740})
    context.set_default_timeout(TIMEOUT_MS)
    try:
        first = await context.new_page()
        await first.goto(url)
        await expect(first.locator("#state")).to_have_text("Socket open")
        second = await context.new_page()  # the same cookie: the same session
        await second.goto(url)
        await expect(second.locator("#state")).to_have_text("Socket open")
        await expect(first.locator("#connections")).to_have_text("2")

        # which node and backend serve the page
        assert await first.locator("#node").text_content() == (
            f"127.0.0.1:{server.port}"
        )
        assert "memory" in (await first.locator("#backend").text_content() or "")

        # the id fits the narrow screen: a few lines at most, not one a character
        session = first.locator("#session")
        await expect(session).not_to_have_text("\u2013")
        box = await session.bounding_box()
        line = await session.evaluate(
            "e => parseFloat(getComputedStyle(e).lineHeight) || 20"
        )
        assert box is not None
        assert box["height"] <= 3 * line
        page_width = await first.evaluate("document.documentElement.scrollWidth")
        assert page_width <= 375  # nothing sticks out sideways

        await first.locator("#logout").click()
        await expect(first.locator("#state")).to_contain_text("logout in this tab")
        await expect(second.locator("#state")).to_contain_text(
            "logout or reset in another tab"
        )
        await expect(first.locator("#result")).to_contain_text("2 websockets")
    finally:
        await context.close()
