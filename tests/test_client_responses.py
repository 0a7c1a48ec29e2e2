"""``client.responses.create(...)`` in the library (no gateway): sync, async and streamed, over the llama.cpp server
and the embedded model, with the openai package's shapes; stateless requests refused with InvalidRequestError."""

from __future__ import annotations

import json

import pytest

from polychat import AsyncClient, Client
from polychat.errors import InvalidRequestError
from polychat.providers import Local, OpenaiChat
from tests.support.servers import LlamaServer

QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def local_client() -> Client:
    return Client(provider=Local())


def test_create_over_the_embedded_model(local_client: Client) -> None:
    response = local_client.responses.create(
        model="", input=QUESTION, instructions="Answer briefly.", max_output_tokens=16, temperature=0
    )
    assert response.object == "response" and response.id.startswith("resp_") and response.provider == "Local"
    assert response.status in ("completed", "incomplete") and response.output_text.strip()
    assert response.output[0].type == "message" and response.output[0].content[0].text == response.output_text
    assert response.usage is not None and response.usage.input_tokens > 0
    assert response.instructions == "Answer briefly."


def test_stream_over_the_embedded_model(local_client: Client) -> None:
    whole = local_client.responses.create(model="", input=QUESTION, max_output_tokens=16, temperature=0)
    with local_client.responses.create(
        model="", input=QUESTION, max_output_tokens=16, temperature=0, stream=True
    ) as stream:
        events = list(stream)
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].type == "response.created" and events[-1].type in ("response.completed", "response.incomplete")
    text = "".join(e.delta or "" for e in events if e.type == "response.output_text.delta")
    assert text == whole.output_text
    assert events[-1].response is not None and events[-1].response.output_text == text


@pytest.mark.anyio
async def test_async_create_and_stream(llama_server: LlamaServer) -> None:
    provider = OpenaiChat(base_url=llama_server.base_url, api_key="", name="llama")
    async with AsyncClient(provider=provider) as client:
        whole = await client.responses.create(model="m", input=QUESTION, max_output_tokens=12, temperature=0)
        stream = await client.responses.create(
            model="m", input=QUESTION, max_output_tokens=12, temperature=0, stream=True
        )
        events = [e async for e in stream]
    assert whole.provider == "llama" and whole.output_text
    assert "".join(e.delta or "" for e in events if e.type == "response.output_text.delta") == whole.output_text


def test_function_call_round_trip(llama_server: LlamaServer) -> None:
    tool = {
        "type": "function",
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
    with Client(provider=OpenaiChat(base_url=llama_server.base_url, api_key="")) as client:
        first = client.responses.create(
            model="m", input="Weather in Paris?", tools=[tool], tool_choice={"type": "function", "name": "get_weather"}
        )
        call = first.output[-1]
        assert call.type == "function_call" and call.name == "get_weather" and call.call_id
        assert "city" in json.loads(call.arguments or "")
        follow = [
            {"role": "user", "content": "Weather in Paris?"},
            {"type": "function_call", "call_id": call.call_id, "name": "get_weather", "arguments": call.arguments},
            {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny."},
        ]
        assert client.responses.create(model="m", input=follow, tools=[tool], max_output_tokens=16).output_text


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [({"store": True}, "store"), ({"previous_response_id": "resp_1"}, "previous_response_id"), ({"bogus": 1}, "bogus")],
)
def test_stateless_and_unknown_arguments_are_refused(
    local_client: Client, kwargs: dict[str, object], param: str
) -> None:
    with pytest.raises(InvalidRequestError) as info:
        local_client.responses.create(model="", input="hi", **kwargs)
    assert info.value.param == param
