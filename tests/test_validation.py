"""Bad input is refused before anything is sent, with an error naming the field."""

from __future__ import annotations

from typing import Any

import pytest

import polychat
from polychat import Client
from polychat.errors import ConfigError, InvalidRequestError
from polychat.providers import OpenaiChat

# Port 9 on loopback: nothing listens; if validation let a request through, we'd see a connection error instead.
DEAD = "http://127.0.0.1:9/v1"
OK_MSGS = [{"role": "user", "content": "hi"}]


@pytest.fixture
def client() -> Client:
    return Client(provider=OpenaiChat(base_url=DEAD), max_retries=0)


@pytest.mark.parametrize(
    ("kwargs", "param", "words"),
    [
        ({"messages": "hello"}, "messages", "list of message dicts"),
        ({"messages": []}, "messages", "must not be empty"),
        ({"messages": ["hi"]}, "messages[0]", "must be a dict"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role", "must be one of"),
        ({"messages": [{"role": "user"}]}, "messages[0].content", "is missing"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content", "string or a list"),
        ({"messages": [{"role": "user", "content": [{"text": "x"}]}]}, "messages[0].content[0]", "'type'"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id", "required"),
        ({"model": 3}, "model", "must be a string"),
        ({"stream": "yes"}, "stream", "true or false"),
        ({"temperature": "hot"}, "temperature", "must be a number"),
        ({"temperature": 3}, "temperature", "between 0 and 2"),
        ({"top_p": 1.5}, "top_p", "between 0 and 1"),
        ({"max_tokens": 0}, "max_tokens", "at least 1"),
        ({"max_tokens": 2.5}, "max_tokens", "integer"),
        ({"n": True}, "n", "integer"),
        ({"stop": 5}, "stop", "string or a list of strings"),
        ({"tools": {"type": "function"}}, "tools", "must be a list"),
        ({"response_format": {"type": "yaml"}}, "response_format", "json_object"),
        ({"stream_options": {"include_usage": True}}, "stream_options", "only allowed with stream=True"),
        ({"top_logprobs": 2}, "top_logprobs", "requires logprobs=True"),
        ({"max_tokens": 5, "max_completion_tokens": 5}, "max_tokens", "both set"),
        ({"extra_body": ["x"]}, "extra_body", "must be a dict"),
        ({"extra_body": {"model": "x"}}, "extra_body", "must not set"),
        ({"temprature": 0.5}, "temprature", "Unknown argument"),
    ],
)
def test_bad_input_is_named_and_nothing_is_sent(client: Client, kwargs: dict[str, Any], param: str, words: str) -> None:
    call = {"model": "m", "messages": OK_MSGS, **kwargs}
    with pytest.raises(InvalidRequestError) as exc:
        client.chat.completions.create(**call)
    assert exc.value.param == param
    assert param in str(exc.value)
    assert words in str(exc.value)
    assert isinstance(exc.value, ValueError)


def test_unknown_argument_suggests_extra_body(client: Client) -> None:
    with pytest.raises(InvalidRequestError, match="extra_body"):
        client.chat.completions.create(model="m", messages=OK_MSGS, top_k=3)


def test_empty_model_without_default_is_refused_before_sending(client: Client) -> None:
    with pytest.raises(InvalidRequestError, match="model") as exc:
        client.chat.completions.create(model="", messages=OK_MSGS)
    assert exc.value.param == "model"


@pytest.mark.anyio
async def test_async_validation_is_the_same() -> None:
    aclient = polychat.AsyncClient(provider=OpenaiChat(base_url=DEAD), max_retries=0)
    with pytest.raises(InvalidRequestError) as exc:
        await aclient.chat.completions.create(model="m", messages=[{"role": "user", "content": None}])
    assert exc.value.param == "messages[0].content"
    with pytest.raises(InvalidRequestError, match="Unknown argument"):
        await aclient.chat.completions.create(model="m", messages=OK_MSGS, bogus=1, stream=True)
    await aclient.close()


def test_valid_shapes_are_accepted_and_reach_the_network(client: Client) -> None:
    # Everything here is valid, so the call gets as far as connecting (to a dead port).
    msgs = [
        {"role": "system", "content": "be brief"},
        {"role": "developer", "content": "really"},
        {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": "x"}}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
    ]
    with pytest.raises(polychat.APIConnectionError):
        client.chat.completions.create(
            model="m",
            messages=msgs,
            temperature=0,
            top_p=1,
            max_tokens=5,
            stop=["\n"],
            seed=1,
            n=1,
            tools=[{"type": "function", "function": {"name": "f"}}],
            tool_choice="auto",
            response_format={"type": "json_object"},
            user="u",
            extra_body={"top_k": 2},
        )


def test_none_means_not_set(client: Client) -> None:
    from polychat._request import build_request

    req, _ = build_request("m", OK_MSGS, False, {"temperature": None, "max_tokens": 3})
    assert req.params == {"max_tokens": 3}


@pytest.mark.parametrize(
    ("proxies", "words"),
    [
        ({"http": "http://u:p@host:port"}, "not valid"),
        ({"htp": "http://h:1"}, "unknown key"),
        ("ftp://h:21", "not supported"),
        ("127.0.0.1:3128", "no scheme"),
        (3128, "expected a proxy URL"),
    ],
)
def test_bad_proxies_fail_at_client_creation(proxies: Any, words: str) -> None:
    with pytest.raises(ConfigError, match=words) as exc:
        Client(proxies=proxies)
    assert ":p@" not in str(exc.value)


def test_bad_client_settings() -> None:
    with pytest.raises(ConfigError, match="max_retries"):
        Client(max_retries=-1)
    with pytest.raises(ConfigError, match="timeout"):
        Client(timeout=0)
    with pytest.raises(ConfigError, match="provider"):
        Client(provider="OpenaiChat")
    with pytest.raises(ConfigError, match="proxy"):
        OpenaiChat(proxy="nope")
