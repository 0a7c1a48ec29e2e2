"""Gemini adapter: the mapping rules one by one (the shared scenarios are in test_providers_conformance.py)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from polychat import AsyncClient, Client, errors
from polychat._request import build_request
from polychat.providers._convert import UnsupportedParameterError
from polychat.providers.gemini import SKIP_SIGNATURE, Gemini, GeminiStreamParser
from tests.support.wire import Reply, WireServer

KEY = "AIza-test-0123456789"
USER = [{"role": "user", "content": "Hi"}]


def wire_of(stream: bool = False, messages: Any = USER, model: str = "gemini-x", **params: Any) -> Any:
    req, _ = build_request(model, messages, stream, params)
    return Gemini(api_key=KEY).chat_request(req, stream=stream)


def body(**kw: Any) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(wire_of(**kw).content)
    return decoded


def test_key_in_header_never_in_url_and_paths() -> None:
    w = wire_of()
    assert w.url == "https://generativelanguage.googleapis.com/v1beta/models/gemini-x:generateContent"
    assert w.headers["x-goog-api-key"] == KEY and KEY not in w.url and not w.params
    s = wire_of(stream=True, model="models/gemini-y")
    assert s.url.endswith("/models/gemini-y:streamGenerateContent") and s.params == {"alt": "sse"}
    assert wire_of(model="tunedModels/abc").url.endswith("/tunedModels/abc:generateContent")


def test_key_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.setenv("GOOGLE_API_KEY", "google-key")
    assert Gemini().api_key == "google-key"
    monkeypatch.setenv("GEMINI_API_KEY", "gemini-key")
    assert Gemini().api_key == "gemini-key"
    assert "gemini-key" not in repr(Gemini())


def test_generation_config() -> None:
    b = body(
        temperature=0.3,
        top_p=0.5,
        max_tokens=9,
        stop=["a", "b"],
        seed=4,
        presence_penalty=0.1,
        frequency_penalty=0.2,
        n=2,
    )
    assert b["generationConfig"] == {
        "temperature": 0.3,
        "topP": 0.5,
        "maxOutputTokens": 9,
        "stopSequences": ["a", "b"],
        "seed": 4,
        "presencePenalty": 0.1,
        "frequencyPenalty": 0.2,
        "candidateCount": 2,
    }
    b = body(response_format={"type": "json_object"})
    assert b["generationConfig"] == {"responseMimeType": "application/json"}
    for param, value in (("logit_bias", {"1": 1}), ("parallel_tool_calls", False), ("logprobs", True)):
        with pytest.raises(UnsupportedParameterError) as e:
            body(**{param: value})
        assert e.value.param == param


@pytest.mark.parametrize(
    ("choice", "config"),
    [
        ("auto", {"mode": "AUTO"}),
        ("none", {"mode": "NONE"}),
        ("required", {"mode": "ANY"}),
        ({"type": "function", "function": {"name": "f"}}, {"mode": "ANY", "allowedFunctionNames": ["f"]}),
    ],
)
def test_tool_choice(choice: Any, config: dict[str, Any]) -> None:
    tools = [{"type": "function", "function": {"name": "f"}}]
    b = body(tools=tools, tool_choice=choice)
    assert b["toolConfig"] == {"functionCallingConfig": config}
    assert b["tools"] == [{"functionDeclarations": [{"name": "f"}]}]


def test_tool_results_need_the_calls_name_and_replay_signatures() -> None:
    with pytest.raises(errors.InvalidRequestError) as e:
        body(messages=[{"role": "tool", "tool_call_id": "nope", "content": "x"}])
    assert e.value.param == "messages[0].tool_call_id"
    msgs = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1.SIG==", "type": "function", "function": {"name": "f", "arguments": "{}"}},
            {"id": "toolu_2", "type": "function", "function": {"name": "g", "arguments": '{"a": 1}'}},
        ]},
        {"role": "tool", "tool_call_id": "call_1.SIG==", "content": "plain text"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": '{"ok": true}'},
    ]  # fmt: skip
    b = body(messages=msgs)
    model, results = b["contents"][1], b["contents"][2]
    assert [p["thoughtSignature"] for p in model["parts"]] == ["SIG==", SKIP_SIGNATURE]
    assert results == {
        "role": "user",
        "parts": [
            {"functionResponse": {"name": "f", "response": {"result": "plain text"}}},
            {"functionResponse": {"name": "g", "response": {"ok": True}}},
        ],
    }


def test_image_urls() -> None:
    def img(url: str) -> list[dict[str, Any]]:
        return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]

    assert body(messages=img("gs://bucket/cat.png"))["contents"][0]["parts"] == [
        {"fileData": {"mimeType": "image/png", "fileUri": "gs://bucket/cat.png"}}
    ]
    with pytest.raises(UnsupportedParameterError) as e:
        body(messages=img("https://example.com/cat.png"))
    assert "data: URLs" in str(e.value)


def frame(d: Any) -> bytes:
    return b"data: " + json.dumps(d).encode() + b"\r\n\r\n"


def test_stream_parser_several_candidates_and_calls() -> None:
    p = GeminiStreamParser("G", "m", candidates=2, include_usage=False)
    parts0 = [{"text": "A"}, {"functionCall": {"name": "f", "args": {"x": 1}}}]
    parts1 = [{"text": "B", "thought": False}, {"text": "thinking", "thought": True}]
    cand = [
        {"index": 0, "content": {"parts": parts0}},
        {"index": 1, "content": {"parts": parts1}, "finishReason": "MAX_TOKENS"},
    ]
    out = p.feed(frame({"candidates": cand}))
    out += p.feed(
        frame(
            {
                "candidates": [{"index": 0, "finishReason": "STOP"}],
                "usageMetadata": {"promptTokenCount": 2, "candidatesTokenCount": 3, "thoughtsTokenCount": 4},
            }
        )
    )
    assert list(p.finish()) == []
    by_index: dict[int, str] = {}
    finishes: dict[int, str] = {}
    for c in out:
        ch = c.choices[0]
        by_index[ch.index] = by_index.get(ch.index, "") + (ch.delta.content or "")
        if ch.finish_reason:
            finishes[ch.index] = ch.finish_reason
    assert by_index == {0: "A", 1: "B"} and finishes == {0: "tool_calls", 1: "length"}
    call = next(c for c in out if c.choices[0].delta.tool_calls).choices[0].delta.tool_calls[0]  # type: ignore[index]
    assert call.id and call.function and call.function.name == "f" and call.function.arguments == '{"x":1}'
    assert out[-1].usage is not None and out[-1].usage.completion_tokens == 7
    assert out[-1].usage.completion_tokens_details and out[-1].usage.completion_tokens_details.reasoning_tokens == 4


def test_blocked_prompt_is_content_filter() -> None:
    p = GeminiStreamParser("G", "m", candidates=1, include_usage=False)
    out = p.feed(frame({"promptFeedback": {"blockReason": "SAFETY"}}))
    assert out[-1].choices[0].finish_reason == "content_filter" and list(p.finish()) == []
    req, _ = build_request("m", USER, False, {})
    done = Gemini(api_key=KEY).parse_completion(json.dumps({"promptFeedback": {"blockReason": "SAFETY"}}).encode(), req)
    assert done.choices[0].finish_reason == "content_filter" and done.content == ""


def test_error_bodies() -> None:
    g = Gemini(api_key=KEY)
    listed = json.dumps(
        [
            {
                "error": {
                    "code": 429,
                    "message": "quota",
                    "status": "RESOURCE_EXHAUSTED",
                    "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "2.5s"}],
                }
            }
        ]
    ).encode()
    err = g.error_for(429, httpx.Headers(), listed)
    assert isinstance(err, errors.RateLimitError) and err.retry_after == 2.5 and err.message == "quota"
    err = g.error_for(429, httpx.Headers({"retry-after": "3"}), listed)
    assert isinstance(err, errors.RateLimitError) and err.retry_after == 3.0


def test_models_list_async() -> None:
    import asyncio

    data = {"models": [
        {"name": "models/gemini-2.5-flash", "supportedGenerationMethods": ["generateContent", "countTokens"]},
        {"name": "models/text-embedding-004", "supportedGenerationMethods": ["embedContent"]},
    ]}  # fmt: skip
    with WireServer() as server:
        base = server.scenario("m", Reply(body=json.dumps(data).encode(), headers={"content-type": "application/json"}))

        async def go() -> list[str]:
            async with AsyncClient(provider=Gemini(api_key=KEY, base_url=base)) as client:
                return [m.id for m in await client.models.list()]

        assert asyncio.run(go()) == ["gemini-2.5-flash"]
        (rec,) = server.requests("m")
        assert rec.path == "/models" and rec.headers["x-goog-api-key"] == KEY and "key" not in rec.query


def test_missing_key(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in ("GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(k, raising=False)
    with Client(provider=Gemini, max_retries=0) as client, pytest.raises(errors.APIError) as e:
        client.chat.completions.create(model="", messages=USER)
    assert "GEMINI_API_KEY" in str(e.value)
