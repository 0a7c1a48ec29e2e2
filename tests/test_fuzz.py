"""Property-based fuzzing (hypothesis) of ``create()`` and of the gateway's body parser.

Generated requests mix valid and broken shapes of messages, tool calls, tools, ``response_format``, headers and
models. The only outcomes allowed:

* the library: a polychat error (raised before anything is sent), or a request every transport can send — checked
  for all four wire protocols (the pure request builders), and end to end through ``Client`` against the fault
  server (sync) and ``AsyncClient`` (async), where a valid answer must come back;
* the gateway: a 200 answer or a 4xx with an OpenAI-shaped error body — never a 5xx, never a dropped connection.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from polychat import AsyncClient, Client, errors
from polychat._request import build_request
from polychat.providers import OpenaiChat
from polychat.providers.anthropic import Anthropic
from polychat.providers.gemini import Gemini
from polychat.providers.ollama import Ollama
from tests.support.faults import FaultServer, Ok
from tests.support.gateway import Gateway

# -- what requests are made of ----------------------------------------------------------------------------------

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=False, width=32), st.text(max_size=8)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=8,
)
names = st.one_of(
    st.sampled_from(["get_weather", "f", "", "a/b", "x y"]), st.text(max_size=6), st.integers(), st.none()
)
functions = st.one_of(
    st.fixed_dictionaries(
        {"name": names},
        optional={
            "arguments": st.one_of(st.just('{"city": "Paris"}'), st.just("{"), json_values),
            "description": json_values,
            "parameters": st.one_of(st.just({"type": "object"}), json_values),
        },
    ),
    json_values,
)
tool_calls = st.one_of(
    st.none(),
    st.text(max_size=10),
    st.lists(
        st.one_of(
            st.fixed_dictionaries(
                {"function": functions},
                optional={"id": st.one_of(st.just("call_1"), json_values), "type": st.just("function")},
            ),
            json_values,
        ),
        max_size=3,
    ),
)
parts = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": st.one_of(st.text(max_size=10), json_values)}),
    st.fixed_dictionaries(
        {
            "type": st.just("image_url"),
            "image_url": st.one_of(
                st.fixed_dictionaries(
                    {"url": st.sampled_from(["data:image/png;base64,iVBORw0KGgo=", "https://x/y.png", "data:,x", ""])}
                ),
                json_values,
            ),
        }
    ),
    json_values,
)
contents = st.one_of(st.text(max_size=20), st.none(), st.lists(parts, max_size=3), json_values)
messages = st.lists(
    st.fixed_dictionaries(
        {
            "role": st.one_of(
                st.sampled_from(["system", "user", "assistant", "tool", "developer"]), st.text(max_size=5)
            ),
            "content": contents,
        },
        optional={
            "tool_calls": tool_calls,
            "tool_call_id": st.one_of(st.just("call_1"), json_values),
            "name": json_values,
        },
    ),
    min_size=0,
    max_size=4,
)
tools = st.lists(
    st.one_of(
        st.fixed_dictionaries({"type": st.sampled_from(["function", "web_search"]), "function": functions}),
        json_values,
    ),
    max_size=3,
)
response_formats = st.one_of(
    st.fixed_dictionaries(
        {
            "type": st.sampled_from(["text", "json_object", "json_schema", "xml"]),
            "json_schema": st.one_of(
                st.fixed_dictionaries({"name": names, "schema": st.one_of(st.just({"type": "object"}), json_values)}),
                json_values,
            ),
        }
    ),
    json_values,
)
headers = st.dictionaries(
    st.one_of(st.sampled_from(["x-a", "x a", "x:a", ""]), st.text(max_size=6)),
    st.one_of(st.sampled_from(["v", "a\r\nb", "é"]), st.text(max_size=6)),
    max_size=2,
)
models = st.one_of(
    st.sampled_from(["m", "gemini-x", "../cachedContents#", "a?b=1", "tunedModels/t", "models/../x"]),
    st.text(max_size=12),
)
params = st.fixed_dictionaries(
    {},
    optional={
        "tools": st.one_of(tools, json_values),
        "tool_choice": st.one_of(st.sampled_from(["auto", "none", "required", "any"]), json_values),
        "response_format": response_formats,
        "temperature": json_values,
        "max_tokens": json_values,
        "stop": json_values,
        "n": st.sampled_from([1, 2]),
    },
)

PROVIDERS = [
    OpenaiChat(api_key="k", base_url="http://127.0.0.1:9/v1"),
    Anthropic(api_key="k", base_url="http://127.0.0.1:9"),
    Gemini(api_key="k", base_url="http://127.0.0.1:9/v1beta"),
    Ollama(base_url="http://127.0.0.1:9"),
]


def sendable(wire: Any) -> None:
    """The wire request is one httpx and aiohttp would send as it is (URL, header names and values)."""
    request = httpx.Request(wire.method, wire.url, headers=dict(wire.headers), content=wire.content, params=wire.params)
    assert request.url.host == "127.0.0.1"
    for name, value in wire.headers.items():
        assert "\r" not in value and "\n" not in value and " " not in name


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model=models, msgs=messages, stream=st.booleans(), kwargs=params, extra=headers)
def test_every_protocol_builds_a_sendable_request_or_raises_a_polychat_error(
    model: Any, msgs: Any, stream: bool, kwargs: dict[str, Any], extra: dict[str, str]
) -> None:
    try:
        req, _ = build_request(model, msgs, stream, {**kwargs, "extra_headers": extra})
    except errors.PolychatError:
        return
    for provider in PROVIDERS:
        try:
            wire = provider.chat_request(req, stream=stream)
        except errors.PolychatError:
            continue
        sendable(wire)


# -- end to end: create() -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fault() -> Iterator[FaultServer]:
    with FaultServer() as server:
        server.scenario("fz", Ok(text="fuzzed"))
        yield server


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(msgs=messages, stream=st.booleans(), kwargs=params, extra=headers)
def test_create_sync_and_async_answers_or_raises_a_polychat_error(
    fault: FaultServer, msgs: Any, stream: bool, kwargs: dict[str, Any], extra: dict[str, str]
) -> None:
    url = f"{fault.url}/s/fz"
    provider = OpenaiChat(api_key="k", base_url=url)
    call = {"model": "m", "messages": msgs, "stream": stream, "extra_headers": extra, **kwargs}
    try:
        r = Client(provider=provider, max_retries=0).chat.completions.create(**call)
        text = "".join(c.choices[0].delta.content or "" for c in r if c.choices) if stream else r.content
        assert "fuzzed" in text
    except errors.PolychatError:
        pass

    async def go() -> None:
        async with AsyncClient(provider=provider, max_retries=0) as client:
            try:
                r = await client.chat.completions.create(**call)
                if stream:
                    text = "".join([c.choices[0].delta.content or "" async for c in r if c.choices])
                else:
                    text = r.content
                assert "fuzzed" in text
            except errors.PolychatError:
                pass

    asyncio.run(go())


# -- the gateway's body parser -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gw(fault: FaultServer) -> Iterator[Gateway]:
    config = (
        '[defaults]\nprovider = "up"\nmax_retries = 0\n'
        f'[providers.up]\ntype = "openai"\nbase_url = "{fault.url}/s/fz"\nmodels = ["m"]\n'
    )
    with Gateway(config_text=config) as gateway:
        yield gateway


bodies = st.one_of(
    st.fixed_dictionaries(
        {"model": st.one_of(st.just("m"), models, json_values), "messages": st.one_of(messages, json_values)},
        optional={"stream": st.one_of(st.booleans(), json_values)},
    ),
    json_values,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies, kwargs=params, raw=st.booleans())
def test_the_gateway_answers_200_or_a_4xx_never_a_5xx(
    gw: Gateway, body: Any, kwargs: dict[str, Any], raw: bool
) -> None:
    if isinstance(body, dict):
        body = {**kwargs, **body}
    content = json.dumps(body).encode() if not raw else json.dumps(body)[:-1].encode()  # raw: a truncated body
    r = httpx.post(
        f"{gw.base_url}/chat/completions", content=content, headers={"content-type": "application/json"}, timeout=60
    )
    assert r.status_code == 200 or 400 <= r.status_code < 500, (r.status_code, r.text[:300], content[:300])
    if r.status_code != 200:
        error = r.json()["error"]
        assert isinstance(error["message"], str) and error["type"]
