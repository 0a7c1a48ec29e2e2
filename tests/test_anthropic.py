"""Anthropic adapter: request building and stream parsing as pure functions, plus what only Anthropic does.

The shared scenarios (text, stream, tools, JSON, images, errors, interruptions) are in
``test_providers_conformance.py``; these tests cover the mapping rules one by one.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from polychat import Client, errors
from polychat._request import build_request
from polychat.errors import MissingAPIKeyError
from polychat.providers._convert import UnsupportedParameterError
from polychat.providers.anthropic import DEFAULT_MAX_TOKENS, JSON_TOOL, Anthropic, AnthropicStreamParser
from tests.support.wire import Reply, WireServer

KEY = "sk-ant-test-0123456789"
USER = [{"role": "user", "content": "Hi"}]


def body(stream: bool = False, messages: Any = USER, **params: Any) -> dict[str, Any]:
    req, _ = build_request("claude-x", messages, stream, params)
    wire = Anthropic(api_key=KEY).chat_request(req, stream=stream)
    assert wire.content is not None
    decoded: dict[str, Any] = json.loads(wire.content)
    return decoded


def test_headers_url_and_default_max_tokens() -> None:
    req, _ = build_request("claude-x", USER, False, {})
    wire = Anthropic(api_key=KEY).chat_request(req, stream=False)
    assert wire.url == "https://api.anthropic.com/v1/messages"
    assert wire.headers["x-api-key"] == KEY and wire.headers["anthropic-version"] == "2023-06-01"
    assert body()["max_tokens"] == DEFAULT_MAX_TOKENS == 4096
    assert body(max_tokens=50)["max_tokens"] == 50
    assert body(max_completion_tokens=70)["max_tokens"] == 70
    req2, _ = build_request("claude-x", USER, False, {})
    assert (
        json.loads(Anthropic(api_key=KEY, max_tokens=123).chat_request(req2, stream=False).content or b"")["max_tokens"]
        == 123
    )


def test_system_and_developer_are_lifted_and_turns_merged() -> None:
    msgs = [
        {"role": "system", "content": "One."},
        {"role": "user", "content": "a"},
        {"role": "developer", "content": [{"type": "text", "text": "Two."}]},
        {"role": "user", "content": "b"},
    ]
    b = body(messages=msgs)
    assert b["system"] == "One.\n\nTwo."
    assert b["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}
    ]


def test_parameters_mapped_or_refused() -> None:
    b = body(stop="END", temperature=0.2, top_p=0.9, user="u-1")
    assert b["stop_sequences"] == ["END"] and b["temperature"] == 0.2 and b["top_p"] == 0.9
    assert b["metadata"] == {"user_id": "u-1"}
    for param, value in (
        ("temperature", 1.5),
        ("seed", 1),
        ("presence_penalty", 0.5),
        ("logit_bias", {"1": 1}),
        ("n", 2),
    ):
        with pytest.raises(UnsupportedParameterError) as e:
            body(**{param: value})
        assert e.value.param == param and "Anthropic" in str(e.value)
        assert isinstance(e.value, errors.InvalidRequestError) and isinstance(e.value, errors.BadRequestError)


def test_drop_unsupported_drops_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    req, _ = build_request("claude-x", USER, False, {"seed": 3, "temperature": 0.5, "drop_unsupported": True})
    assert req.drop_unsupported
    with caplog.at_level(logging.INFO, logger="polychat"):
        b = json.loads(Anthropic(api_key=KEY).chat_request(req, stream=False).content or b"")
    assert "seed" not in b and b["temperature"] == 0.5
    assert "dropped parameter seed" in caplog.text


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("required", None, {"type": "any"}),
        ("none", None, {"type": "none"}),
        ({"type": "function", "function": {"name": "f"}}, None, {"type": "tool", "name": "f"}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
    ],
)
def test_tool_choice(choice: Any, parallel: bool | None, expected: dict[str, Any]) -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    params: dict[str, Any] = {"tools": tools}
    if choice is not None:
        params["tool_choice"] = choice
    if parallel is not None:
        params["parallel_tool_calls"] = parallel
    b = body(**params)
    assert b["tool_choice"] == expected
    assert b["tools"] == [{"name": "f", "input_schema": {"type": "object"}}]


def test_tool_ids_outside_anthropics_alphabet_get_stable_stand_ins() -> None:
    odd = "call_abc.sig+/=="
    msgs = [
        {"role": "user", "content": "q"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": odd, "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": odd, "content": "r"},
    ]
    b = body(messages=msgs)
    use_id = b["messages"][1]["content"][0]["id"]
    assert use_id == b["messages"][2]["content"][0]["tool_use_id"]
    assert use_id != odd and use_id.replace("_", "").isalnum()


def test_prefill_trailing_whitespace_removed() -> None:
    b = body(messages=[{"role": "user", "content": "Count"}, {"role": "assistant", "content": "One, two, "}])
    assert b["messages"][-1] == {"role": "assistant", "content": "One, two,"}
    assert Anthropic.capabilities.prefill


def test_json_mode_uses_forced_tool_or_instruction_with_tools() -> None:
    b = body(response_format={"type": "json_object"})
    assert b["tools"][0]["name"] == JSON_TOOL and b["tool_choice"] == {"type": "tool", "name": JSON_TOOL}
    tools = [{"type": "function", "function": {"name": "f"}}]
    b = body(response_format={"type": "json_object"}, tools=tools)
    assert [t["name"] for t in b["tools"]] == ["f"] and "single valid JSON value" in b["system"]


def test_unsupported_content_and_roles_are_refused() -> None:
    with pytest.raises(UnsupportedParameterError) as e:
        body(messages=[{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}])
    assert e.value.param == "messages[0].content[0]"
    with pytest.raises(errors.InvalidRequestError):
        body(
            messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png,xyz"}}]}]
        )
    remote = body(
        messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]
    )
    assert remote["messages"][0]["content"][0] == {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}


def sse(*events: tuple[str, Any]) -> bytes:
    return b"".join(f"event: {e}\ndata: {json.dumps(d)}\n\n".encode() for e, d in events)


def test_stream_parser_error_after_content_in_one_read_comes_next_time() -> None:
    p = AnthropicStreamParser("A", "m", json_tool=False, include_usage=False)
    data = sse(
        (
            "message_start",
            {"type": "message_start", "message": {"id": "msg_1", "model": "m", "usage": {"input_tokens": 3}}},
        ),
        (
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
        ),
        ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    )
    out = p.feed(data)
    assert [c.choices[0].delta.content for c in out] == ["", "Hi"]
    with pytest.raises(errors.InternalServerError) as e:
        p.feed(b"")
    assert e.value.status_code == 529 and e.value.retryable


def test_stream_parser_unknown_events_and_stop_reasons() -> None:
    p = AnthropicStreamParser("A", "m", json_tool=False, include_usage=False)
    out = p.feed(
        sse(
            (
                "message_start",
                {
                    "type": "message_start",
                    "message": {"id": "msg_1", "usage": {"input_tokens": 3, "cache_read_input_tokens": 2}},
                },
            ),
            ("some_future_event", {"type": "some_future_event"}),
            (
                "content_block_delta",
                {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hm"}},
            ),
            (
                "message_delta",
                {"type": "message_delta", "delta": {"stop_reason": "max_tokens"}, "usage": {"output_tokens": 4}},
            ),
        )
    )
    assert list(p.finish()) == []
    last = out[-1]
    assert last.choices[0].finish_reason == "length"
    assert last.usage is not None and (last.usage.prompt_tokens, last.usage.completion_tokens) == (5, 4)
    assert last.usage.prompt_tokens_details is not None and last.usage.prompt_tokens_details.cached_tokens == 2


def test_malformed_stream_data_is_a_connection_error() -> None:
    p = AnthropicStreamParser("A", "m", json_tool=False, include_usage=False)
    with pytest.raises(errors.APIConnectionError):
        p.feed(b"event: content_block_delta\ndata: {not json\n\n")


def test_missing_key_is_refused_before_sending_and_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with WireServer() as server, Client(provider=Anthropic(), max_retries=0) as client:
        with pytest.raises(MissingAPIKeyError):
            client.chat.completions.create(model="claude-x", messages=USER)
        assert server.requests() == []
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    p = Anthropic()
    assert p.api_key == KEY and KEY not in repr(p)


def test_client_api_key_dict_reaches_the_class(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with WireServer() as server:
        base = server.scenario("t", Reply.fixture("anthropic", "text.response.json"))
        monkeypatch.setenv("ANTHROPIC_BASE_URL", base)
        with Client(provider=Anthropic, api_key={"anthropic": KEY, "openai": "sk-other"}, max_retries=0) as client:
            r = client.chat.completions.create(model="claude-x", messages=USER)
        assert r.content and r.provider == "Anthropic"
        assert server.requests("t")[0].headers["x-api-key"] == KEY


def test_models_list() -> None:
    with WireServer() as server:
        data = {
            "data": [
                {
                    "type": "model",
                    "id": "claude-sonnet-4-5",
                    "display_name": "Claude",
                    "created_at": "2025-09-29T00:00:00Z",
                }
            ],
            "has_more": False,
        }
        base = server.scenario("m", Reply(body=json.dumps(data).encode(), headers={"content-type": "application/json"}))
        with Client(provider=Anthropic(api_key=KEY, base_url=base)) as client:
            models = client.models.list()
        (rec,) = server.requests("m")
        assert rec.method == "GET" and rec.path == "/v1/models" and rec.headers["x-api-key"] == KEY
    assert [m.id for m in models] == ["claude-sonnet-4-5"] and models.data[0].created > 0
