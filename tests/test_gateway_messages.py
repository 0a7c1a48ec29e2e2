"""``POST /v1/messages`` end to end: the official ``anthropic`` client against ``polychat serve``, in front of the
real llama.cpp server, the embedded model, the fake Anthropic upstream (pass-through) and the fault server.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest

from polychat.protocols.anthropic_messages import to_chat
from tests.support.fake_anthropic import SIGNATURE, Fail, FakeAnthropic, check_grammar, sse_events, thinking_answer
from tests.support.faults import FaultServer
from tests.support.gateway import Gateway
from tests.support.protocol_gateway import FIRST_TEXT, UPSTREAM_KEY

WEATHER = {
    "name": "get_weather",
    "description": "The current weather of a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
ASK = [{"role": "user", "content": "What is the capital of France?"}]
#: Greedy sampling, for answers that repeat (the anthropic package no longer types temperature; the API takes it).
T0 = {"temperature": 0}


@pytest.fixture
def client(protocol_gw: Gateway) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=protocol_gw.url, api_key="client-key", max_retries=0, timeout=120) as c:
        yield c


def post(protocol_gw: Gateway, body: dict[str, Any], **headers: str) -> httpx.Response:
    return httpx.post(f"{protocol_gw.url}/v1/messages", json=body, headers=headers, timeout=120)


# -- translated: the llama.cpp server and the embedded model ---------------------------------------------------


@pytest.mark.parametrize("model", ["llama-smol", "local"])
def test_create_with_system_prompt(client: anthropic.Anthropic, model: str) -> None:
    message = client.messages.create(
        model=model, max_tokens=24, system="Answer in one short sentence.", messages=ASK, extra_body=T0
    )
    assert message.type == "message" and message.role == "assistant" and message.id.startswith("msg_")
    assert message.content[0].type == "text" and message.content[0].text.strip()
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert message.usage.input_tokens > 0 and 0 < message.usage.output_tokens <= 24


def test_system_prompt_as_blocks_reaches_the_model(client: anthropic.Anthropic) -> None:
    # The embedded model shows its prompt's length in usage: blocks count as the same text, a longer prompt as more.
    text = "You are a geography teacher. " * 5
    blocks = [{"type": "text", "text": text, "cache_control": {"type": "ephemeral"}}]
    as_text = client.messages.create(model="local", max_tokens=4, messages=ASK, system=text, extra_body=T0)
    as_blocks = client.messages.create(model="local", max_tokens=4, messages=ASK, system=blocks, extra_body=T0)
    short = client.messages.create(model="local", max_tokens=4, messages=ASK, system="Be brief.", extra_body=T0)
    assert as_blocks.usage.input_tokens == as_text.usage.input_tokens > short.usage.input_tokens + 20
    assert as_blocks.content[0].text == as_text.content[0].text


@pytest.mark.parametrize("model", ["llama-smol", "local"])
def test_stream_sync(client: anthropic.Anthropic, model: str) -> None:
    with client.messages.stream(model=model, max_tokens=24, messages=ASK, extra_body=T0) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text.strip() and final.content[0].text == text
    assert final.stop_reason in ("end_turn", "max_tokens")


@pytest.mark.anyio
@pytest.mark.parametrize("model", ["llama-smol", "local"])
async def test_create_and_stream_async(protocol_gw: Gateway, model: str) -> None:
    async with anthropic.AsyncAnthropic(base_url=protocol_gw.url, api_key="k", max_retries=0, timeout=120) as c:
        message = await c.messages.create(model=model, max_tokens=16, messages=ASK, extra_body=T0)
        assert message.content[0].text.strip()
        async with c.messages.stream(model=model, max_tokens=16, messages=ASK, extra_body=T0) as stream:
            pieces = [t async for t in stream.text_stream]
            final = await stream.get_final_message()
        assert len(pieces) > 1 and final.content[0].text == "".join(pieces)
        # same request, same sampling: the streamed answer is the non-streamed one
        assert final.content[0].text == message.content[0].text


def test_stream_event_sequence_is_anthropics(protocol_gw: Gateway) -> None:
    r = post(protocol_gw, {"model": "local", "max_tokens": 12, "stream": True, "messages": ASK, "temperature": 0})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["x-polychat-provider"] == "Local"
    events = sse_events(r.text)
    check_grammar(events)
    assert [n for n, _ in events[:3]] == ["message_start", "ping", "content_block_start"]
    start = events[0][1]["message"]
    assert start["role"] == "assistant" and start["content"] == [] and start["stop_reason"] is None
    deltas = [d["delta"] for n, d in events if n == "content_block_delta"]
    assert deltas and all(d["type"] == "text_delta" for d in deltas)
    final = events[-2][1]
    assert final["delta"]["stop_reason"] in ("end_turn", "max_tokens")
    assert final["usage"]["output_tokens"] > 0 and final["usage"]["input_tokens"] > 0


def test_stop_sequences(client: anthropic.Anthropic) -> None:
    free = client.messages.create(model="local", max_tokens=24, messages=ASK, extra_body=T0)
    text = free.content[0].text
    words = text.split()
    assert len(words) > 3, text
    stop = " " + words[2]
    cut = client.messages.create(model="local", max_tokens=24, messages=ASK, extra_body=T0, stop_sequences=[stop])
    assert cut.content[0].text == text[: text.index(stop)]
    assert cut.stop_reason in ("end_turn", "stop_sequence")


def test_tool_use_then_tool_result_turn(client: anthropic.Anthropic) -> None:
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    # the same forced tool call, asked for whole and streamed
    forced: dict[str, Any] = {
        "model": "llama-smol",
        "max_tokens": 64,
        "tools": [WEATHER],
        "tool_choice": {"type": "tool", "name": "get_weather"},
        "messages": ask,
        "extra_body": T0,
    }
    first = client.messages.create(**forced)
    assert first.stop_reason == "tool_use"
    use = first.content[-1]
    assert use.type == "tool_use" and use.name == "get_weather" and isinstance(use.input, dict)
    assert use.id and isinstance(use.input.get("city"), str)
    result = {"type": "tool_result", "tool_use_id": use.id, "content": "Sunny, 24 degrees."}
    turns = [*ask, {"role": "assistant", "content": first.content}, {"role": "user", "content": [result]}]
    second = client.messages.create(model="llama-smol", max_tokens=24, tools=[WEATHER], messages=turns, extra_body=T0)
    assert second.content and second.content[0].type == "text" and second.content[0].text.strip()
    with client.messages.stream(**forced) as stream:
        kinds = [event.type for event in stream]
        streamed = stream.get_final_message()
    assert "input_json" in kinds and streamed.stop_reason == "tool_use"
    assert streamed.content[-1].type == "tool_use" and streamed.content[-1].input == use.input


def test_tool_turns_translate_to_tool_calls_and_tool_messages(protocol_gw: Gateway) -> None:
    """The translated request: system blocks joined, tool_use → tool_calls, tool_result → a tool message before the
    rest of its user turn; the gateway answers it from the llama.cpp server."""
    body = {
        "model": "llama-smol",
        "max_tokens": 8,
        "system": [{"type": "text", "text": "S1"}, {"type": "text", "text": "S2"}],
        "messages": [
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Let me look."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "sunny"}]},
                    {"type": "text", "text": "and tomorrow?"},
                ],
            },
        ],
        "tools": [WEATHER],
    }
    call = to_chat(body)
    assert call.messages == [
        {"role": "system", "content": "S1\n\nS2"},
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
        {"role": "user", "content": "and tomorrow?"},
    ]
    assert call.kwargs["tools"][0]["function"]["parameters"] == WEATHER["input_schema"]
    assert post(protocol_gw, body).status_code == 200


def test_image_block_reaches_a_vision_less_model_as_a_clear_400(client: anthropic.Anthropic) -> None:
    png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png}}
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.create(
            model="local", max_tokens=8, messages=[{"role": "user", "content": [image, {"type": "text", "text": "?"}]}]
        )
    assert info.value.body["error"]["type"] == "invalid_request_error"
    assert "image" in info.value.body["error"]["message"].lower()


# -- errors --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"model": "local", "messages": ASK}, "max_tokens"),
        ({"max_tokens": 5, "messages": ASK}, "model"),
        ({"model": "local", "max_tokens": 5}, "messages"),
        ({"model": "local", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}, "messages.0.role"),
        ({"model": "local", "max_tokens": 5, "messages": ASK, "temperature": 1.5}, "temperature"),
        ({"model": "local", "max_tokens": 5, "messages": ASK, "tool_choice": {"type": "maybe"}}, "tool_choice"),
        ({"model": "local", "max_tokens": 5, "messages": ASK, "base_url": "http://evil"}, "base_url"),
    ],
)
def test_invalid_bodies_raise_the_sdks_bad_request_error(
    protocol_gw: Gateway, body: dict[str, Any], needle: str
) -> None:
    r = post(protocol_gw, body)
    assert r.status_code == 400
    assert r.json()["type"] == "error" and r.json()["error"]["type"] == "invalid_request_error"
    assert needle in r.json()["error"]["message"]
    with (
        anthropic.Anthropic(base_url=protocol_gw.url, api_key="k", max_retries=0) as c,
        pytest.raises(anthropic.BadRequestError),
    ):
        c.post("/v1/messages", cast_to=httpx.Response, body=body)  # the SDK's own request path and error mapping


def test_body_that_is_not_json(protocol_gw: Gateway) -> None:
    r = httpx.post(f"{protocol_gw.url}/v1/messages", content=b"{", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "max_tokens" in r.json()["error"]["message"]  # the example body


def test_unknown_model_on_an_anthropic_upstream_is_the_sdks_not_found(
    protocol_gw: Gateway, fake: FakeAnthropic
) -> None:
    fake.scenario("claude", Fail(404, "not_found_error", "model: claude-nope"))
    try:
        with (
            anthropic.Anthropic(base_url=protocol_gw.url, api_key="k", max_retries=0) as c,
            pytest.raises(anthropic.NotFoundError) as info,
        ):
            c.messages.create(model="claude-fake", max_tokens=5, messages=ASK)
        assert info.value.body["error"]["type"] == "not_found_error"
        assert "claude-nope" in info.value.body["error"]["message"]
    finally:
        fake.scenario("claude")


def test_bad_key_is_the_sdks_authentication_error(fake: FakeAnthropic, fault: FaultServer) -> None:
    keys = {"POLYCHAT_API_KEYS": "gw-key-1234567890", "FAKE_ANTHROPIC_KEY": UPSTREAM_KEY}
    root = fake.scenario("authed")
    config = f'[providers.claude]\ntype = "anthropic"\nbase_url = "{root}"\napi_key_env = "FAKE_ANTHROPIC_KEY"\n'
    with Gateway(config_text=config, env=keys) as gateway:
        with anthropic.Anthropic(base_url=gateway.url, api_key="wrong-key", max_retries=0) as c:
            with pytest.raises(anthropic.AuthenticationError) as info:
                c.messages.create(model="claude:claude-fake", max_tokens=5, messages=ASK)
            assert info.value.body["error"]["type"] == "authentication_error"
        for auth in ({"api_key": "gw-key-1234567890"}, {"auth_token": "gw-key-1234567890"}):  # x-api-key, Bearer
            with anthropic.Anthropic(base_url=gateway.url, max_retries=0, **auth) as c:  # type: ignore[arg-type]
                assert c.messages.create(model="claude:claude-fake", max_tokens=5, messages=ASK).content
        sent = fake.requests_for("authed")
        assert len(sent) == 2 and all(r.headers["x-api-key"] == UPSTREAM_KEY for r in sent)
        assert "gw-key-1234567890" not in gateway.log_text()


# -- pass-through to an Anthropic upstream -------------------------------------------------------------------------


def test_pass_through_keeps_thinking_signatures_and_cache_counts(
    client: anthropic.Anthropic, fake: FakeAnthropic
) -> None:
    system = [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}]
    history = [
        {"role": "user", "content": "Hi"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Greeting.", "signature": "sig-earlier"},
                {"type": "text", "text": "Hello."},
            ],
        },
        {
            "role": "user",
            "content": [{"type": "text", "text": "Capital of France?", "cache_control": {"type": "ephemeral"}}],
        },
    ]
    before = len(fake.requests_for("claude"))
    message = client.messages.create(
        model="claude-fake",
        max_tokens=2048,
        system=system,
        messages=history,
        thinking={"type": "enabled", "budget_tokens": 1024},
        extra_body={"top_k": 5},
        extra_headers={"anthropic-beta": "interleaved-thinking-2025-05-14"},
    )
    thinking, text = message.content
    assert thinking.type == "thinking" and thinking.signature == SIGNATURE
    assert thinking.thinking == "The user asks about France. Its capital is Paris."
    assert text.type == "text" and text.text == "Paris is the capital."
    assert message.usage.cache_read_input_tokens == 100 and message.usage.cache_creation_input_tokens == 7
    assert message.usage.input_tokens == 12 and message.usage.output_tokens == 25
    sent = fake.requests_for("claude")[before:]
    assert len(sent) == 1
    assert sent[0].body == {
        "model": "claude-fake",
        "max_tokens": 2048,
        "system": system,
        "messages": history,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "top_k": 5,
    }
    assert sent[0].headers["anthropic-beta"] == "interleaved-thinking-2025-05-14"
    assert sent[0].headers["x-api-key"] == UPSTREAM_KEY


def test_pass_through_stream_is_the_upstreams_event_for_event(protocol_gw: Gateway) -> None:
    r = post(protocol_gw, {"model": "claude-fake", "max_tokens": 2048, "stream": True, "messages": ASK})
    assert r.status_code == 200 and r.headers["x-polychat-provider"] == "claude"
    assert "x-polychat-dropped" not in r.headers
    assert sse_events(r.text) == thinking_answer()


@pytest.mark.anyio
async def test_pass_through_stream_async_sdk(protocol_gw: Gateway) -> None:
    async with (
        anthropic.AsyncAnthropic(base_url=protocol_gw.url, api_key="k", max_retries=0) as c,
        c.messages.stream(model="claude-fake", max_tokens=2048, messages=ASK) as stream,
    ):
        thinking = [e.thinking async for e in stream if e.type == "thinking"]
        final = await stream.get_final_message()
    assert "".join(thinking) == final.content[0].thinking and final.content[0].signature == SIGNATURE
    assert final.usage.cache_read_input_tokens == 100


def test_anthropic_only_fields_are_refused_by_other_providers_by_name(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.create(model="local", max_tokens=5, messages=ASK, extra_body={"top_k": 5})
    assert "top_k" in info.value.body["error"]["message"]
    # opting in drops it instead, and the answer says what was left out
    ok = client.messages.with_raw_response.create(
        model="local",
        max_tokens=5,
        messages=ASK,
        extra_body={"top_k": 5},
        extra_headers={"x-polychat-drop-unsupported": "true"},
    )
    assert ok.headers["x-polychat-dropped"] == "top_k" and ok.parse().content[0].text


def test_hints_dropped_for_other_providers_are_reported(protocol_gw: Gateway) -> None:
    history = [
        {"role": "user", "content": [{"type": "text", "text": "Hi", "cache_control": {"type": "ephemeral"}}]},
        {
            "role": "assistant",
            "content": [{"type": "thinking", "thinking": "t", "signature": "s"}, {"type": "text", "text": "Hello."}],
        },
        {"role": "user", "content": "Capital of France?"},
    ]
    r = post(protocol_gw, {"model": "local", "max_tokens": 5, "messages": history})
    assert r.status_code == 200
    assert r.headers["x-polychat-dropped"] == "cache_control, thinking"
    r = post(protocol_gw, {"model": "local", "max_tokens": 5, "messages": history, "stream": True})
    assert r.headers["x-polychat-dropped"] == "cache_control, thinking"
    check_grammar(sse_events(r.text))


# -- failover ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_dead_first_provider_fails_over(protocol_gw: Gateway, stream: bool) -> None:
    r = post(protocol_gw, {"model": "dead-first", "max_tokens": 8, "stream": stream, "messages": ASK})
    assert r.status_code == 200 and r.headers["x-polychat-provider"] == "llama"
    if stream:
        check_grammar(sse_events(r.text))
    else:
        assert r.json()["content"][0]["text"]


def test_overloaded_anthropic_fails_over_to_another_anthropic(protocol_gw: Gateway, fake: FakeAnthropic) -> None:
    r = post(protocol_gw, {"model": "busy-then-claude", "max_tokens": 8, "stream": True, "messages": ASK})
    assert r.status_code == 200 and r.headers["x-polychat-provider"] == "claude"
    assert sse_events(r.text) == thinking_answer()
    assert fake.requests_for("busy")[-1].body["model"] == "claude-busy"


def test_mid_stream_cut_without_resume_ends_with_an_error_event(protocol_gw: Gateway) -> None:
    r = post(protocol_gw, {"model": "cut-stop", "max_tokens": 32, "stream": True, "messages": ASK})
    assert r.status_code == 200
    events = sse_events(r.text)
    assert events[:-1] == thinking_answer()[:FIRST_TEXT]  # what the upstream sent before the cut, then the error
    name, data = events[-1]
    assert name == "error" and data["error"]["type"] == "api_error"
    assert "cut short" in data["error"]["message"]
    assert "message_stop" not in [n for n, _ in events]
    with (
        anthropic.Anthropic(base_url=protocol_gw.url, api_key="k", max_retries=0) as c,
        pytest.raises(anthropic.APIStatusError),
        c.messages.stream(model="cut-stop", max_tokens=32, messages=ASK) as s,
    ):
        for _ in s:
            pass


def test_mid_stream_cut_with_resume_continues_on_the_next_provider(protocol_gw: Gateway) -> None:
    body = {"model": "cut-resume", "max_tokens": 32, "stream": True, "messages": ASK, "temperature": 0}
    r = post(protocol_gw, body)
    assert r.status_code == 200
    events = sse_events(r.text)
    check_grammar(events)
    assert events[:FIRST_TEXT] == thinking_answer()[:FIRST_TEXT]  # the Anthropic upstream's events, as sent
    # the answer goes on in the same text block (the continuation may add nothing once repeats are trimmed)
    rest = [(n, d.get("index")) for n, d in events[FIRST_TEXT:]]
    assert set(rest[:-3]) <= {("content_block_delta", 1)}
    assert rest[-3:] == [("content_block_stop", 1), ("message_delta", None), ("message_stop", None)]
    assert (
        "cutr failed mid-stream" in protocol_gw.log_text() and "resuming on the next provider" in protocol_gw.log_text()
    )


def test_openai_upstream_cut_with_resume_and_without(protocol_gw: Gateway) -> None:
    r = post(protocol_gw, {"model": "oai-cut-resume", "max_tokens": 32, "stream": True, "messages": ASK})
    events = sse_events(r.text)
    check_grammar(events)
    text = "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta")
    assert text.startswith("one two three")
    r = post(protocol_gw, {"model": "oai-cut-stop", "max_tokens": 32, "stream": True, "messages": ASK})
    events = sse_events(r.text)
    assert events[-1][0] == "error" and events[-1][1]["error"]["type"] == "api_error"


# -- count_tokens --------------------------------------------------------------------------------------------------


def test_count_tokens_is_anthropics_count_for_an_anthropic_route(
    client: anthropic.Anthropic, fake: FakeAnthropic
) -> None:
    system = [{"type": "text", "text": "Be terse.", "cache_control": {"type": "ephemeral"}}]
    counted = client.messages.count_tokens(model="claude-fake", messages=ASK, system=system)
    assert counted.input_tokens == 42  # the fake upstream's answer
    sent = fake.requests_for("claude")[-1]
    assert sent.path == "/s/claude/v1/messages/count_tokens"
    assert sent.body == {"model": "claude-fake", "messages": ASK, "system": system}
    assert sent.headers["x-api-key"] == UPSTREAM_KEY


def test_count_tokens_estimates_for_other_providers(protocol_gw: Gateway, client: anthropic.Anthropic) -> None:
    r = httpx.post(f"{protocol_gw.url}/v1/messages/count_tokens", json={"model": "local", "messages": ASK})
    assert r.status_code == 200 and r.headers["x-polychat-token-count"] == "estimate"
    short = r.json()["input_tokens"]
    longer = client.messages.count_tokens(model="local", messages=[{"role": "user", "content": QUESTION_LONG}])
    assert 0 < short < longer.input_tokens
    r = httpx.post(f"{protocol_gw.url}/v1/messages/count_tokens", json={"model": "local", "messages": []})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    assert "messages" in r.json()["error"]["message"]


QUESTION_LONG = "What is the capital of France? Please explain its history in detail. " * 10
