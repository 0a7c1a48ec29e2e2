"""Debian's headless Chromium, driven by Playwright, for the chat page tests (``test_page*.py``).

One launch and one way of opening the page, so the page suites use the same browser flags and the same error
checks; each suite keeps only its own fixtures' scope and viewport.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import BrowserContext, ConsoleMessage, Page, expect, sync_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def chromium(profile: Path, *, height: int) -> Iterator[BrowserContext]:
    """A persistent Chromium context (its profile in ``profile``), 900 pixels wide, closed on the way out."""
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 900, "height": height},
        )
        try:
            yield context
        finally:
            context.close()


@contextmanager
def chat_page(
    browser: BrowserContext, url: str, *, console_errors: bool = False, viewport: tuple[int, int] | None = None
) -> Iterator[Page]:
    """The chat page at ``url`` with a new chat open (in a ``viewport`` of its own if given: width, height); fails
    the test if the page raised a JavaScript error (and, with ``console_errors``, logged an error to the console:
    a CSP violation is one)."""
    page = browser.new_page()
    if viewport is not None:
        page.set_viewport_size({"width": viewport[0], "height": viewport[1]})
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(str(e)))

    def on_console(message: ConsoleMessage) -> None:
        # the browser's own note on an error status it fetched is not the page's fault
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            problems.append(message.text)

    if console_errors:
        page.on("console", on_console)
    page.goto(url)
    expect(page.locator("#model option")).not_to_have_count(0)
    page.click("#new-chat")
    yield page
    page.close()
    assert not problems, f"errors on the page: {problems}"


def send(page: Page, model: str, text: str) -> None:
    """Pick ``model``, type ``text`` and press Enter, as a person would."""
    page.select_option("#model", model)
    page.fill("#prompt", text)
    page.press("#prompt", "Enter")
