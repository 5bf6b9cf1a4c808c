"""Browser tests: Playwright for Python driving Debian's Chromium (`/usr/bin/chromium`) against a real
`ihub serve` on 127.0.0.1, as a person uses the console.

Each test gets a fresh hub (SQLite, its own data dir) and a fresh browser context; the browser process itself is
shared by the session. Every page a test visits can be saved with `shot(page, name)` into
`IHUB_SCREENSHOTS` (default `.artifacts/screenshots`), from which a few are copied into `docs/images/`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("IHUB_CHROMIUM", "/usr/bin/chromium")

pytestmark = pytest.mark.slow


# Module scope, not session: Playwright's sync API keeps an asyncio loop marked as running in this thread while
# it is open, and the async tests that run after the browser tests would find it ("Cannot run the event loop
# while another loop is running"). One browser per test module costs about a second.
@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    if not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists():
        # Not a skip: the README's test command must run these. .ci/run installs the package.
        raise AssertionError(f"{CHROMIUM} is missing: apt-get install chromium (or set IHUB_CHROMIUM)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def hub(start_live_hub: Any) -> Any:
    """A fresh `ihub serve` (SQLite) on a free port; `hub.signin_url` is the first Owner's link from `ihub init`."""
    return start_live_hub()


@pytest.fixture
def new_page(chromium: Any, hub: Any) -> Iterator[Any]:
    """`new_page()` opens a page in a fresh browser context (its own cookies: another person)."""
    contexts: list[Any] = []

    def open_page() -> Any:
        context = chromium.new_context(base_url=hub.url, accept_downloads=True)
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=hub.url)
        context.set_default_timeout(15_000)
        contexts.append(context)
        return context.new_page()

    yield open_page
    for context in contexts:
        context.close()


@pytest.fixture
def page(new_page: Any) -> Any:
    return new_page()
