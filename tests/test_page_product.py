"""The chat page as people use it (issue 13), in Debian's headless Chromium driven by Playwright: markdown
(headings, lists, tables, safe links, code with a language label and a copy button) rendered by the vendored
marked + DOMPurify under the page's CSP, regenerate, edit and resend, a stop before the first token, the phone
layout, grouped model picker, the default length cap, readable errors.

Each feature's test saves a screenshot under ``tests/artifacts/page/`` (the path is printed) for a person to look
at. No sleeps: every wait is on something the page shows.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from tests.support.browser import chat_page, chromium, send
from tests.support.faults import FaultServer, Ok, Stall, Status
from tests.support.gateway import Gateway

ARTIFACTS = Path(__file__).parent / "artifacts" / "page"

MARKDOWN = """# Title

Some *emphasis*, **bold** and a [link](https://example.com/docs).

- one
- two

1. first
2. second

| name | value |
|------|-------|
| a    | 1     |

```python
print("hi")
```

<b>raw html stays text</b>
"""


def shot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


@pytest.fixture(scope="module")
def gateway(fault: FaultServer) -> Iterator[Gateway]:
    config = (
        f'[providers.md]\ntype = "openai"\nbase_url = "{fault.url}/s/md/v1"\nmodels = ["md-model"]\n'
        f'[providers.broken]\ntype = "openai"\nbase_url = "{fault.url}/s/broken/v1"\nmodels = ["broken-model"]\n'
        '[routes.fast]\nchain = ["md:md-model", "local"]\n'
    )
    with Gateway(config_text=config) as gw:
        yield gw


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    with chromium(tmp_path_factory.mktemp("chromium-profile"), height=800) as context:
        yield context


@pytest.fixture
def page(browser: BrowserContext, gateway: Gateway) -> Iterator[Page]:
    with chat_page(browser, f"{gateway.url}/", console_errors=True) as p:
        yield p


def wait_done(page: Page) -> None:
    expect(page.locator(".message.assistant.streaming")).to_have_count(0, timeout=60_000)


def test_markdown_as_people_expect(page: Page, fault: FaultServer, browser: BrowserContext) -> None:
    fault.scenario("md", Ok(text=MARKDOWN))
    send(page, "md-model", "Show me markdown")
    wait_done(page)
    content = page.locator(".message.assistant .content").last
    expect(content.locator("h1")).to_have_text("Title")
    expect(content.locator("em")).to_have_text("emphasis")
    expect(content.locator("ul > li")).to_have_count(2)
    expect(content.locator("ol > li")).to_have_count(2)
    expect(content.locator("table td").first).to_have_text("a")
    link = content.locator("a")
    expect(link).to_have_attribute("href", "https://example.com/docs")
    expect(link).to_have_attribute("rel", "noopener noreferrer nofollow")
    expect(link).to_have_attribute("target", "_blank")
    expect(content.locator(".code-lang")).to_have_text("python")
    expect(content.locator("pre code")).to_have_text('print("hi")')
    expect(content).to_contain_text("<b>raw html stays text</b>")
    assert content.locator("b").count() == 0
    browser.grant_permissions(["clipboard-read", "clipboard-write"], origin=page.url.rstrip("/"))
    content.locator("button.copy").click()
    expect(content.locator("button.copy")).to_have_text("Copied")
    assert page.evaluate("() => navigator.clipboard.readText()") == 'print("hi")'
    # the page sent the default length cap
    assert fault.requests("md")[-1].body["max_tokens"] == 512
    shot(page, "markdown")


def test_regenerate_and_edit_and_resend(page: Page, fault: FaultServer) -> None:
    fault.scenario("md", Ok(text="First answer"), Ok(text="Second answer"), Ok(text="Answer to the edit"))
    send(page, "md-model", "Original question")
    wait_done(page)
    expect(page.locator(".message.assistant .content").last).to_have_text("First answer")
    page.locator(".message.assistant .actions button", has_text="Regenerate").click()
    wait_done(page)
    expect(page.locator(".message.assistant")).to_have_count(1)
    expect(page.locator(".message.assistant .content")).to_have_text("Second answer")
    shot(page, "regenerated")

    page.locator(".message.user .actions button", has_text="Edit").click()
    box = page.locator(".message.user .edit-box")
    expect(box).to_have_value("Original question")
    shot(page, "editing")
    box.fill("Edited question")
    page.locator(".message.user .actions button", has_text="Send").click()
    wait_done(page)
    expect(page.locator(".message.user .content")).to_have_text(["Edited question"])
    expect(page.locator(".message.assistant .content")).to_have_text(["Answer to the edit"])
    assert fault.requests("md")[-1].body["messages"] == [{"role": "user", "content": "Edited question"}]


def test_stopped_before_the_first_token_leaves_no_empty_bubble(page: Page, fault: FaultServer) -> None:
    fault.scenario("md", Stall())
    send(page, "md-model", "This will never be answered")
    expect(page.locator("#stop")).to_be_visible()
    expect(page.locator(".message.assistant.streaming")).to_have_count(1)
    page.click("#stop")
    expect(page.locator("#send")).to_be_visible()
    expect(page.locator(".message.assistant")).to_have_count(0)
    expect(page.locator(".message.user .actions button", has_text="Retry")).to_be_visible()
    shot(page, "stopped-before-first-token")
    fault.scenario("md", Ok(text="Now it answers"))
    page.locator(".message.user .actions button", has_text="Retry").click()
    wait_done(page)
    expect(page.locator(".message.assistant .content")).to_have_text(["Now it answers"])


def test_errors_are_readable_and_the_picker_is_grouped(page: Page, fault: FaultServer) -> None:
    fault.scenario("broken", Status(500, message="the upstream is on fire"))
    groups = page.locator("#model optgroup")
    labels = [groups.nth(i).get_attribute("label") for i in range(groups.count())]
    assert labels[0] == "Routes (with failover)" and "md" in labels and "local" in labels
    send(page, "broken-model", "Will this work?")
    error = page.locator(".message.assistant .error").last
    expect(error).to_be_visible()
    expect(error).to_contain_text("Error 500")
    expect(error).to_contain_text("the upstream is on fire")
    shot(page, "error")


def test_the_bar_fits_a_phone(browser: BrowserContext, gateway: Gateway, fault: FaultServer) -> None:
    fault.scenario("md", Ok(text="Short **answer** with `code`."))
    with chat_page(browser, f"{gateway.url}/", console_errors=True, viewport=(360, 740)) as p:
        send(p, "md-model", "Hello from a phone")
        wait_done(p)
        button = p.locator("#new-chat").bounding_box()
        title = p.locator(".bar h1").bounding_box()
        assert button is not None and title is not None
        assert button["height"] < 2 * title["height"] + 4, button  # one line, not wrapped
        assert button["x"] + button["width"] <= 360
        assert p.evaluate("() => document.documentElement.scrollWidth") <= 360
        shot(p, "phone")


def test_the_key_panel_says_what_key_and_where_it_is_kept(browser: BrowserContext, fault: FaultServer) -> None:
    config = f'[providers.md]\ntype = "openai"\nbase_url = "{fault.url}/s/md/v1"\nmodels = ["md-model"]\n'
    with Gateway(config_text=config, env={"POLYCHAT_API_KEYS": "page-key-123456789"}) as gw:
        p = browser.new_page()
        try:
            p.goto(f"{gw.url}/")
            panel = p.locator("#key-panel")
            expect(panel).to_be_visible()
            expect(panel).to_contain_text("POLYCHAT_API_KEYS")
            expect(panel).to_contain_text("kept in this tab only")
            expect(p.locator("#status")).to_contain_text("Error 401")
            expect(p.locator("#status")).to_contain_text("Enter the gateway's API key above.")
            expect(p.locator("#api-key")).to_be_focused()
            shot(p, "key-panel")
        finally:
            p.close()
