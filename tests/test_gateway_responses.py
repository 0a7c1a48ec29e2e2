"""``POST /v1/responses`` end to end: the official ``openai`` client's ``responses.create`` / ``responses.stream``
against ``polychat serve``, in front of the real llama.cpp server, the embedded model, the fake Anthropic upstream
and the fault server.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.support.fake_anthropic import FakeAnthropic
from tests.support.gateway import Gateway

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The current weather of a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
QUESTION = "What is the capital of France?"


@pytest.fixture
def client(protocol_gw: Gateway) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=protocol_gw.base_url, api_key="client-key", max_retries=0, timeout=120) as c:
        yield c


def sse_events(body: str) -> list[dict[str, Any]]:
    out = []
    for block in body.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        data = json.loads(lines["data"])
        assert data["type"] == lines["event"], block
        out.append(data)
    return out


def check_sequence(events: list[dict[str, Any]]) -> str:
    """The documented order of a text answer's events; returns the text the deltas add up to."""
    kinds = [e["type"] for e in events]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ], kinds
    assert kinds[-4:-1] == ["response.output_text.done", "response.content_part.done", "response.output_item.done"]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    assert set(kinds[4:-4]) == {"response.output_text.delta"}
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert events[-4]["text"] == text
    final = events[-1]["response"]
    assert final["output"][0]["content"][0]["text"] == text and final["id"] == events[0]["response"]["id"]
    return text


@pytest.mark.parametrize("model", ["llama-smol", "local"])
def test_create_with_instructions(client: openai.OpenAI, model: str) -> None:
    response = client.responses.create(
        model=model, input=QUESTION, instructions="Answer in one short sentence.", max_output_tokens=24, temperature=0
    )
    assert response.object == "response" and response.id.startswith("resp_")
    assert response.status in ("completed", "incomplete") and response.store is False
    assert response.output_text.strip()
    assert response.output[0].type == "message" and response.output[0].role == "assistant"
    assert response.usage is not None and response.usage.input_tokens > 0
    assert 0 < response.usage.output_tokens <= 24
    assert response.instructions == "Answer in one short sentence." and response.max_output_tokens == 24
    if response.status == "incomplete":
        assert response.incomplete_details is not None and response.incomplete_details.reason == "max_output_tokens"


def test_input_items_multi_turn(client: openai.OpenAI) -> None:
    items = [
        {"role": "user", "content": [{"type": "input_text", "text": "My name is Ada."}]},
        {"role": "assistant", "content": [{"type": "output_text", "text": "Nice to meet you, Ada."}]},
        {"role": "user", "content": "What is my name?"},
    ]
    response = client.responses.create(model="local", input=items, max_output_tokens=16, temperature=0)
    assert response.output_text.strip()


@pytest.mark.parametrize("model", ["llama-smol", "local"])
def test_stream_events_sync(protocol_gw: Gateway, client: openai.OpenAI, model: str) -> None:
    body = {"model": model, "input": QUESTION, "max_output_tokens": 16, "stream": True, "temperature": 0}
    r = httpx.post(f"{protocol_gw.base_url}/responses", json=body, timeout=120)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    text = check_sequence(sse_events(r.text))
    # the openai package's stream helper sees the same answer
    with client.responses.stream(model=model, input=QUESTION, max_output_tokens=16, temperature=0) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
    assert "".join(deltas) == text


def test_stream_helper_final_response(client: openai.OpenAI) -> None:
    with client.responses.stream(model="local", input="Say OK.", max_output_tokens=200, temperature=0) as stream:
        for _ in stream:
            pass
        final = stream.get_final_response()
    assert final.status == "completed" and final.output_text.strip()


@pytest.mark.anyio
@pytest.mark.parametrize("model", ["llama-smol", "local"])
async def test_create_and_stream_async(protocol_gw: Gateway, model: str) -> None:
    async with openai.AsyncOpenAI(base_url=protocol_gw.base_url, api_key="k", max_retries=0, timeout=120) as c:
        whole = await c.responses.create(model=model, input=QUESTION, max_output_tokens=16, temperature=0)
        stream = await c.responses.create(model=model, input=QUESTION, max_output_tokens=16, temperature=0, stream=True)
        events = [e async for e in stream]
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text and text == whole.output_text
    assert events[-1].type in ("response.completed", "response.incomplete")


def test_function_call_then_output_turn(client: openai.OpenAI) -> None:
    first = client.responses.create(
        model="llama-smol",
        input="What is the weather in Paris?",
        tools=[WEATHER],
        tool_choice={"type": "function", "name": "get_weather"},
        temperature=0,
    )
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    assert isinstance(json.loads(calls[0].arguments)["city"], str) and calls[0].call_id
    follow = [
        {"role": "user", "content": "What is the weather in Paris?"},
        {"type": "function_call", "call_id": calls[0].call_id, "name": "get_weather", "arguments": calls[0].arguments},
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": "Sunny, 24 degrees."},
    ]
    second = client.responses.create(model="llama-smol", input=follow, tools=[WEATHER], max_output_tokens=24)
    assert second.output_text.strip()
    # streamed: the call's arguments arrive as deltas, then whole
    with client.responses.stream(
        model="llama-smol",
        input="What is the weather in Paris?",
        tools=[WEATHER],
        tool_choice={"type": "function", "name": "get_weather"},
        temperature=0,
    ) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_response()
    assert "response.function_call_arguments.delta" in kinds and "response.function_call_arguments.done" in kinds
    streamed = [item for item in final.output if item.type == "function_call"]
    assert streamed[0].arguments == calls[0].arguments


def test_json_schema_text_format(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
        "required": ["city", "country"],
        "additionalProperties": False,
    }
    response = client.responses.create(
        model="local",
        input="Name a city and its country as JSON.",
        text={"format": {"type": "json_schema", "name": "place", "schema": schema, "strict": True}},
        max_output_tokens=60,
        temperature=0,
    )
    data = json.loads(response.output_text)
    assert set(data) == {"city", "country"}
    assert response.text.format.type == "json_schema"


def test_anthropic_provider_answers_responses_with_cache_counts(client: openai.OpenAI, fake: FakeAnthropic) -> None:
    before = len(fake.requests_for("claude"))
    response = client.responses.create(model="claude-fake", input=QUESTION, max_output_tokens=300)
    assert response.output_text == "Paris is the capital."
    assert response.usage is not None
    assert response.usage.input_tokens == 12 + 100 + 7 and response.usage.input_tokens_details.cached_tokens == 100
    sent = fake.requests_for("claude")[before:]
    assert sent[0].body["messages"] == [{"role": "user", "content": QUESTION}] and sent[0].body["max_tokens"] == 300


# -- errors ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "param", "needle"),
    [
        ({"store": True}, "store", "keeps no state"),
        ({"previous_response_id": "resp_123"}, "previous_response_id", "keeps no state"),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type", "web_search"),
        ({"input": [{"type": "reasoning", "summary": []}]}, "input[0].type", "reasoning"),
        ({"background": True}, "background", "background"),
        ({"text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format.schema", "schema"),
    ],
)
def test_what_cannot_be_honoured_is_a_400_naming_it(
    client: openai.OpenAI, extra: dict[str, Any], param: str, needle: str
) -> None:
    body = {"model": "local", "input": QUESTION, **extra}
    with pytest.raises(openai.BadRequestError) as info:
        client.post("/responses", cast_to=httpx.Response, body=body)
    error = info.value.body
    assert isinstance(error, dict) and error["param"] == param and needle in error["message"]


def test_missing_input_and_bad_json(protocol_gw: Gateway) -> None:
    r = httpx.post(f"{protocol_gw.base_url}/responses", json={"model": "local"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "input"
    r = httpx.post(f"{protocol_gw.base_url}/responses", content=b"{", headers={"content-type": "application/json"})
    assert r.status_code == 400 and '"input"' in r.json()["error"]["message"]


# -- failover ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_dead_first_provider_fails_over(protocol_gw: Gateway, stream: bool) -> None:
    body = {"model": "dead-first", "input": QUESTION, "max_output_tokens": 8, "stream": stream}
    r = httpx.post(f"{protocol_gw.base_url}/responses", json=body, timeout=120)
    assert r.status_code == 200 and r.headers["x-polychat-provider"] == "llama"
    if stream:
        check_sequence(sse_events(r.text))
    else:
        assert r.json()["output"][0]["content"][0]["text"]


def test_mid_stream_cut_with_resume_and_without(protocol_gw: Gateway) -> None:
    body = {"model": "oai-cut-resume", "input": QUESTION, "max_output_tokens": 16, "stream": True}
    r = httpx.post(f"{protocol_gw.base_url}/responses", json=body, timeout=120)
    text = check_sequence(sse_events(r.text))
    assert text.startswith("one two three")
    r = httpx.post(f"{protocol_gw.base_url}/responses", json={**body, "model": "oai-cut-stop"}, timeout=120)
    events = sse_events(r.text)
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-2:] == ["error", "response.failed"]
    assert "response.completed" not in kinds
    failed = events[-1]["response"]
    assert failed["status"] == "failed" and "cut short" in failed["error"]["message"]
    assert failed["output"][0]["content"][0]["text"] == "one two three"
