"""A client's mistake is a polychat error before anything is sent — the same on sync and async — and a 400 with an
OpenAI-shaped body through the gateway; never a foreign exception, a retryable connection error or a 500.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest

from polychat import AsyncClient, Client, errors
from polychat.providers import OpenaiChat
from polychat.providers.anthropic import Anthropic
from polychat.providers.gemini import Gemini
from polychat.providers.ollama import Ollama
from polychat.routing import CircuitBreaker, RetryProvider
from tests.support.faults import FaultServer, Ok
from tests.support.gateway import Gateway

USER = [{"role": "user", "content": "Hi"}]


def both(provider: Any, **kwargs: Any) -> list[BaseException]:
    """The exception ``create(**kwargs)`` raises through Client and AsyncClient, stream and not (four calls)."""
    raised: list[BaseException] = []
    for stream in (False, True):
        try:
            out = Client(provider=provider, max_retries=0).chat.completions.create(stream=stream, **kwargs)
            if stream:
                list(out)  # type: ignore[arg-type]
        except BaseException as e:
            raised.append(e)

        async def call(stream: bool = stream) -> None:
            async with AsyncClient(provider=provider, max_retries=0) as client:
                out = await client.chat.completions.create(stream=stream, **kwargs)
                if stream:
                    async for _ in out:  # type: ignore[union-attr]
                        pass

        try:
            anyio.run(call)
        except BaseException as e:
            raised.append(e)
    return raised


def providers(url: str) -> list[Any]:
    return [
        OpenaiChat(api_key="k", base_url=f"{url}/v1"),
        Anthropic(api_key="k", base_url=url),
        Gemini(api_key="k", base_url=url),
        Ollama(base_url=url),
    ]


BAD_TOOL_CALLS: list[tuple[Any, str]] = [
    ("get_weather()", "messages[1].tool_calls"),
    (["call_1"], "messages[1].tool_calls[0]"),
    ([{"id": "c", "type": "function", "function": "get_weather"}], "messages[1].tool_calls[0].function"),
    ([{"id": "c", "type": "function", "function": {"arguments": "{}"}}], "messages[1].tool_calls[0].function.name"),
    ([{"id": "c", "function": {"name": "f", "arguments": 5}}], "messages[1].tool_calls[0].function.arguments"),
    ([{"id": 7, "function": {"name": "f", "arguments": "{}"}}], "messages[1].tool_calls[0].id"),
]


@pytest.mark.parametrize(("calls", "param"), BAD_TOOL_CALLS)
def test_malformed_tool_calls_are_refused_by_every_provider(fault: FaultServer, calls: Any, param: str) -> None:
    url = fault.scenario("tc", Ok())
    messages = [*USER, {"role": "assistant", "content": None, "tool_calls": calls}]
    for provider in providers(url):
        for e in both(provider, model="m", messages=messages):
            assert isinstance(e, errors.InvalidRequestError), (provider, repr(e))
            assert e.param == param
    assert fault.requests("tc") == []


@pytest.mark.parametrize(
    ("response_format", "needle"),
    [
        ({"type": "json_schema", "json_schema": {"name": "x", "schema": "not a schema"}}, "json_schema.schema"),
        ({"type": "json_schema", "json_schema": {"name": 3, "schema": {}}}, "json_schema.name"),
        ({"type": "json_schema", "json_schema": []}, "'json_schema' object"),
    ],
)
def test_a_non_object_schema_is_refused(fault: FaultServer, response_format: Any, needle: str) -> None:
    url = fault.scenario("rf", Ok())
    for provider in providers(url):
        for e in both(provider, model="m", messages=USER, response_format=response_format):
            assert isinstance(e, errors.InvalidRequestError) and e.param == "response_format", repr(e)
            assert needle in str(e)
    assert fault.requests("rf") == []


@pytest.mark.parametrize(
    "tools",
    [
        "get_weather",
        [{"type": "function", "function": "get_weather"}],
        [{"type": "function", "function": {"name": "f", "parameters": "object"}}],
        [{"type": "function", "function": {"name": 5}}],
        [{"type": 5}],
    ],
)
def test_malformed_tools_are_refused(fault: FaultServer, tools: Any) -> None:
    url = fault.scenario("tools", Ok())
    for provider in providers(url):
        for e in both(provider, model="m", messages=USER, tools=tools):
            assert isinstance(e, errors.InvalidRequestError) and e.param == "tools", repr(e)
    assert fault.requests("tools") == []


@pytest.mark.parametrize(
    "headers",
    [
        {"x-a": "one\r\nx-injected: 1"},
        {"x-a": "one\ntwo"},
        {"x-a": "nul\x00"},
        {"x a": "space in the name"},
        {"x:a": "colon in the name"},
        {"": "empty name"},
        {"x-a": "é non-ASCII"},
    ],
)
def test_bad_extra_headers_are_refused_alike_and_never_count_against_the_breaker(
    fault: FaultServer, headers: dict[str, str]
) -> None:
    url = fault.scenario("hdr", Ok())
    breaker = CircuitBreaker(threshold=1)
    chain = RetryProvider([OpenaiChat(api_key="k", base_url=f"{url}/v1")], breaker=breaker, max_retries=0)
    raised = both(chain, model="m", messages=USER, extra_headers=headers)
    assert len(raised) == 4
    for e in raised:
        assert type(e) is errors.InvalidRequestError and e.param == "extra_headers", repr(e)
    assert fault.requests("hdr") == []
    assert not breaker.is_open(chain.providers[0].breaker_key)
    with pytest.raises(errors.ConfigError, match="not a valid HTTP header name"):
        OpenaiChat(api_key="k", base_url=url, headers={"x a": "b"})


def test_base_url_credentials(fault: FaultServer) -> None:
    url = fault.scenario("cred", Ok(text="hi"))
    with_creds = url.replace("http://", "http://us%40er:p%25ss\\w0rd-é@")
    for make in (Client, AsyncClient):
        with pytest.raises(errors.ConfigError, match="pass one") as info:
            make(provider=OpenaiChat(api_key="k", base_url=f"{with_creds}/v1"))
        assert "p%25ss" not in str(info.value) and "us%40er:***@" in str(info.value)
    provider = OpenaiChat(api_key="", base_url=f"{with_creds}/v1")
    assert both(provider, model="m", messages=USER) == []
    sent = [r.headers.get("authorization") for r in fault.requests("cred")]
    expected = "Basic " + base64.b64encode("us@er:p%ss\\w0rd-é".encode()).decode()
    assert sent == [expected] * 4, "sync and async both send the URL's credentials, as HTTP Basic"
    shown = [repr(provider), str(provider.describe()), provider.breaker_key, provider.base_url]
    for text in shown:
        assert "p%25ss" not in text and "w0rd" not in text, text


# -- through the gateway -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gw(fault: FaultServer) -> Iterator[Gateway]:
    config = (
        f'[providers.up]\ntype = "openai"\nbase_url = "{fault.url}/s/gw/v1"\nmodels = ["m"]\n'
        f'[providers.ant]\ntype = "anthropic"\nbase_url = "{fault.url}/s/gw"\napi_key_env = "ANT_KEY"\n'
        f'[providers.gem]\ntype = "gemini"\nbase_url = "{fault.url}/s/gw"\napi_key_env = "ANT_KEY"\n'
        f'[providers.oll]\ntype = "ollama"\nbase_url = "{fault.url}/s/gw"\n'
    )
    with Gateway(config_text=config, env={"ANT_KEY": "k" * 20}) as gateway:
        yield gateway


def post(gw: Gateway, body: bytes | dict[str, Any]) -> httpx.Response:
    if isinstance(body, dict):
        return httpx.post(f"{gw.base_url}/chat/completions", json=body, timeout=60)
    headers = {"content-type": "application/json"}
    return httpx.post(f"{gw.base_url}/chat/completions", content=body, headers=headers, timeout=60)


def test_the_gateway_answers_deep_json_with_400_and_keeps_serving(gw: Gateway) -> None:
    for depth in (1000, 100_000):
        r = post(gw, b'{"model": "m", "messages": ' + b"[" * depth + b"]" * depth + b"}")
        assert r.status_code == 400, r.text
        assert r.json()["error"]["type"] == "invalid_request_error"
    assert httpx.get(f"{gw.url}/health", timeout=30).status_code == 200


@pytest.mark.parametrize("model", ["ant:claude", "gem:gemini", "oll:llama3", "m"])
@pytest.mark.parametrize(("calls", "param"), BAD_TOOL_CALLS[:3])
def test_the_gateway_answers_malformed_tool_calls_with_400(
    gw: Gateway, fault: FaultServer, model: str, calls: Any, param: str
) -> None:
    fault.scenario("gw", Ok())
    messages = [*USER, {"role": "assistant", "content": None, "tool_calls": calls}]
    for stream in (False, True):
        r = post(gw, {"model": model, "messages": messages, "stream": stream})
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == param
    assert fault.requests("gw") == []


def test_the_gateway_answers_a_non_object_schema_with_400(gw: Gateway, fault: FaultServer) -> None:
    fault.scenario("gw", Ok())
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": ["not", "an", "object"]}}
    r = post(gw, {"model": "ant:claude", "messages": USER, "response_format": fmt})
    assert r.status_code == 400 and r.json()["error"]["param"] == "response_format", r.text
    assert fault.requests("gw") == []
