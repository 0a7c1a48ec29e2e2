"""The chat page in headless Chromium (Debian's, driven by Playwright), served by a real ``polychat serve``.

Upstreams: the fault-injecting server (deterministic text, slow streams, failures) and the embedded model.
No sleeps: every wait is on something the page shows.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import BrowserContext, Locator, Page, expect

from tests.support.browser import chat_page, chromium, send
from tests.support.faults import FaultServer, Ok, Status
from tests.support.gateway import Gateway
from tests.support.servers import wait_until

SLOW_TEXT = " ".join(f"w{i}" for i in range(60))
XSS = '<img src=x onerror="window.__pwned=1"> and <script>window.__pwned=2</script> **still text**'
SCENARIOS = {"fast": "fast-model", "slow": "slow-model", "xss": "xss-model", "broken": "broken-model"}


def page_config(fault: FaultServer) -> str:
    out = []
    for scenario, model in SCENARIOS.items():
        out += [f"[providers.{scenario}prov]", 'type = "openai"', f'base_url = "{fault.url}/s/{scenario}/v1"']
        out += [f'models = ["{model}"]', ""]
    return "\n".join(out)


@pytest.fixture(scope="module")
def gateway(fault: FaultServer) -> Iterator[Gateway]:
    with Gateway(config_text=page_config(fault)) as gw:
        yield gw


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    with chromium(tmp_path_factory.mktemp("chromium-profile"), height=700) as context:
        yield context


@pytest.fixture
def page(browser: BrowserContext, gateway: Gateway) -> Iterator[Page]:
    with chat_page(browser, f"{gateway.url}/") as p:
        yield p


def last_answer(page: Page) -> tuple[Locator, Locator, Locator]:
    answer = page.locator(".message.assistant").last
    return answer.locator(".content"), answer.locator(".meta"), answer.locator(".error")


def test_models_are_listed(page: Page) -> None:
    options = page.locator("#model option").all_inner_texts()
    assert set(SCENARIOS.values()) <= set(options)
    assert "smollm2-135m" in options  # the embedded model


def test_send_a_message_and_see_the_streamed_answer(page: Page, fault: FaultServer) -> None:
    fault.scenario("fast", Ok(text="Hello from the page test"))
    send(page, "fast-model", "Hi there")
    expect(page.locator(".message.user").last).to_contain_text("Hi there")
    content, meta, error = last_answer(page)
    expect(content).to_have_text("Hello from the page test")
    expect(meta).to_contain_text("answered by fastprov")
    expect(error).to_be_hidden()
    assert fault.requests("fast")[-1].body["stream"] is True


def test_stop_button_then_reload_keeps_the_conversation(page: Page, fault: FaultServer) -> None:
    fault.scenario("slow", Ok(text=SLOW_TEXT, delay_between=0.1))
    send(page, "slow-model", "Count slowly")
    answer = page.locator(".message.assistant").last
    # the answer arrives piece by piece: part of it is shown while it is still streaming
    expect(answer).to_have_class("message assistant streaming")
    expect(answer.locator(".content")).to_contain_text("w3", timeout=15_000)
    expect(answer).to_have_class("message assistant streaming")
    expect(page.locator("#stop")).to_be_visible()
    page.click("#stop")
    expect(answer).to_have_class("message assistant")
    expect(answer.locator(".meta")).to_contain_text("stopped")
    expect(page.locator("#send")).to_be_visible()
    partial = answer.locator(".content").inner_text()
    assert partial.startswith("w0 w1 w2 w3") and "w59" not in partial
    # stopping in the page closed the request, and the gateway cancelled its upstream call
    record = fault.requests("slow")[-1]
    wait_until(lambda: record.closed is not None, 10, what="the upstream request to be cancelled")

    page.reload()
    expect(page.locator(".message.user .content")).to_have_text(["Count slowly"])
    kept = page.locator(".message.assistant").last
    expect(kept.locator(".content")).to_have_text(partial)
    expect(kept.locator(".meta")).to_contain_text("answered by slowprov")
    expect(kept.locator(".meta")).to_contain_text("stopped")


def test_model_output_is_shown_as_text_never_as_html(page: Page, fault: FaultServer) -> None:
    fault.scenario("xss", Ok(text=XSS))
    send(page, "xss-model", "Say something dangerous")
    content, _, _ = last_answer(page)
    expect(page.locator(".message.assistant.streaming")).to_have_count(0)
    expect(content).to_contain_text('<img src=x onerror="window.__pwned=1">')
    expect(content).to_contain_text("<script>window.__pwned=2</script>")
    assert page.locator(".message img").count() == 0
    assert page.locator(".message script").count() == 0
    assert page.locator(".message strong").last.inner_text() == "still text"  # the markdown subset, as DOM nodes
    assert page.evaluate("() => window.__pwned") is None


def test_errors_are_shown_plainly(page: Page, fault: FaultServer) -> None:
    fault.scenario("broken", Status(500, message="the upstream is on fire"))
    send(page, "broken-model", "Will this work?")
    _, _, error = last_answer(page)
    expect(error).to_be_visible()
    expect(error).to_contain_text("Error 500")
    expect(error).to_contain_text("the upstream is on fire")
    expect(page.locator("#send")).to_be_visible()


def test_embedded_model_answers(page: Page) -> None:
    send(page, "smollm2-135m", "Say hi in three words.")
    content, meta, error = last_answer(page)
    expect(page.locator(".message.assistant.streaming")).to_have_count(0, timeout=60_000)
    expect(meta).to_contain_text("answered by Local")
    expect(error).to_be_hidden()
    assert content.inner_text().strip()


def test_the_page_asks_for_a_key_when_the_gateway_needs_one(browser: BrowserContext, fault: FaultServer) -> None:
    fault.scenario("fast", Ok(text="Keyed answer"))
    with Gateway(config_text=page_config(fault), env={"POLYCHAT_API_KEYS": "page-key-123456789"}) as gw:
        p = browser.new_page()
        try:
            p.goto(f"{gw.url}/")
            expect(p.locator("#key-panel")).to_be_visible()
            expect(p.locator("#status")).to_contain_text("Error 401")
            p.fill("#api-key", "page-key-123456789")
            p.click("#key-form button")
            expect(p.locator("#key-panel")).to_be_hidden()
            expect(p.locator("#model option")).not_to_have_count(0)
            p.click("#new-chat")
            send(p, "fast-model", "hello with a key")
            expect(p.locator(".message.assistant .content").last).to_have_text("Keyed answer")
        finally:
            p.close()
