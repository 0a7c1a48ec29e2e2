"""A recorded, scrubbed Claude Code session (``tests/fixtures/sessions/claude_code.json``: three streamed turns with
thinking, tools and tool results, as Claude Code sends them and Anthropic streams back) replayed through the gateway:
to an Anthropic upstream it must arrive byte-for-byte as sent and come back event for event; to the llama.cpp server
it must be translated and answered in Anthropic's stream grammar.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest

from tests.support.fake_anthropic import Answer, FakeAnthropic, check_grammar, sse_events
from tests.support.gateway import Gateway
from tests.support.protocol_gateway import SESSION_MODEL, UPSTREAM_KEY

SESSION = json.loads((Path(__file__).parent / "fixtures" / "sessions" / "claude_code.json").read_text())
TURNS = SESSION["turns"]
CLIENT_KEY = "sk-ant-client-key-0000"


def replay(protocol_gw: Gateway, body: dict[str, Any]) -> httpx.Response:
    headers = {**SESSION["headers"], "x-api-key": CLIENT_KEY}
    return httpx.post(f"{protocol_gw.url}/v1/messages", json=body, headers=headers, timeout=300)


@pytest.mark.parametrize("turn", range(len(TURNS)))
def test_session_passes_through_event_by_event(protocol_gw: Gateway, fake: FakeAnthropic, turn: int) -> None:
    recorded = TURNS[turn]
    assert recorded["request"]["model"] == SESSION_MODEL
    fake.scenario("session", Answer([tuple(e) for e in recorded["events"]]))
    r = replay(protocol_gw, recorded["request"])
    assert r.status_code == 200 and r.headers["x-polychat-provider"] == "session"
    events = sse_events(r.text)
    assert len(events) == len(recorded["events"])
    for got, want in zip(events, recorded["events"], strict=True):
        assert list(got) == want
    sent = fake.requests_for("session")[-1]
    assert sent.body == recorded["request"]  # thinking, signatures, cache_control, tools, metadata: all as sent
    assert sent.headers["anthropic-beta"] == SESSION["headers"]["anthropic-beta"]
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.headers["x-api-key"] == UPSTREAM_KEY and CLIENT_KEY not in json.dumps(sent.headers)


def test_session_through_the_sdk_accumulates_like_anthropics(protocol_gw: Gateway, fake: FakeAnthropic) -> None:
    last = TURNS[-1]
    fake.scenario("session", Answer([tuple(e) for e in last["events"]]))
    body = {k: v for k, v in last["request"].items() if k != "stream"}
    with (
        anthropic.Anthropic(base_url=protocol_gw.url, api_key=CLIENT_KEY, max_retries=0) as c,
        c.messages.stream(**body, extra_headers={"anthropic-beta": SESSION["headers"]["anthropic-beta"]}) as stream,
    ):
        final = stream.get_final_message()
    thinking, text = final.content
    assert thinking.type == "thinking" and thinking.signature.startswith("ErUBCkYIBRgCIkDZq0Scrubbed")
    assert text.text == "This project is a command-line tool that converts CSV files to JSON (see README.md)."
    assert final.usage.cache_read_input_tokens == 14371 and final.stop_reason == "end_turn"


@pytest.mark.parametrize("turn", range(len(TURNS)))
def test_session_translated_for_the_llama_cpp_server(protocol_gw: Gateway, turn: int) -> None:
    body = {**TURNS[turn]["request"], "model": "llama-smol", "max_tokens": 48}
    r = replay(protocol_gw, body)
    assert r.status_code == 200, r.text
    assert r.headers["x-polychat-provider"] == "llama"
    dropped = r.headers["x-polychat-dropped"].split(", ")
    assert "cache_control" in dropped and (("thinking" in dropped) == (turn > 0))  # earlier turns' thinking
    events = sse_events(r.text)
    check_grammar(events)
    assert events[-2][1]["delta"]["stop_reason"] in ("end_turn", "max_tokens", "tool_use")
    for name, data in events:
        if name == "content_block_start" and data["content_block"]["type"] == "tool_use":
            assert data["content_block"]["name"] in ("Bash", "Read")
