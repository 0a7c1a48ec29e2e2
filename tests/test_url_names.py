"""A client chooses a model, never an upstream path: names that go into a URL (Gemini models, Azure deployments).

Each hostile name is sent through the library (sync and async) and through the gateway to a recording upstream;
the only acceptable outcomes are a refusal before anything is sent (UnsupportedParameterError / HTTP 400 with an
OpenAI-shaped body) or a request whose path is exactly the intended endpoint with the name percent-quoted.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from polychat import AsyncClient, Client, errors
from polychat.providers.gemini import Gemini
from polychat.providers.registry import AzureOpenAI
from tests.support.gateway import Gateway
from tests.support.wire import Reply, WireServer

USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hi"}]
KEY = "AIza-url-names-0123456789"

#: Names that would leave the intended path (or the URL's path altogether) if put in unquoted.
HOSTILE = [
    "../cachedContents#",
    "a?injected=1&key=z",
    "..",
    ".",
    "x/../../files",
    "a%2F..%2Fb",
    "a\\..\\b",
    "bad\r\nx-evil: 1",
    "tab\there",
    "nul\x00",
    "del\x7f",
    " ",
]


@pytest.fixture(scope="module")
def upstream() -> Iterator[WireServer]:
    with WireServer() as server:
        server.scenario("gem", Reply.fixture("gemini", "text.response.json"))
        server.scenario("az", Reply.fixture("openai", "text.response.json"))
        yield server


def gemini(server: WireServer) -> Gemini:
    return Gemini(api_key=KEY, base_url=f"{server.url}/s/gem/v1beta")


def azure(server: WireServer, **kw: str) -> AzureOpenAI:
    return AzureOpenAI(api_key=KEY, base_url=f"{server.url}/s/az/openai", **kw)


@pytest.mark.parametrize("name", HOSTILE)
@pytest.mark.parametrize("kind", ["gemini", "azure"])
def test_hostile_names_are_refused_before_sending_sync_and_async(upstream: WireServer, kind: str, name: str) -> None:
    provider = gemini(upstream) if kind == "gemini" else azure(upstream)
    before = len(upstream.requests())
    for stream in (False, True):
        with pytest.raises(errors.UnsupportedParameterError) as info:
            Client(provider=provider, max_retries=0).chat.completions.create(model=name, messages=USER, stream=stream)
        assert info.value.param == "model" and info.value.status_code == 400

        async def call(stream: bool = stream) -> None:
            async with AsyncClient(provider=provider, max_retries=0) as client:
                await client.chat.completions.create(model=name, messages=USER, stream=stream)

        import anyio

        with pytest.raises(errors.UnsupportedParameterError):
            anyio.run(call)
    assert len(upstream.requests()) == before, "nothing may reach the upstream"


def test_an_azure_deployment_is_checked_like_a_model(upstream: WireServer) -> None:
    with pytest.raises(errors.UnsupportedParameterError) as info:
        Client(provider=azure(upstream, deployment="../models")).chat.completions.create(model="m", messages=USER)
    assert info.value.param == "deployment"


def test_odd_but_harmless_names_are_quoted_into_one_segment(upstream: WireServer) -> None:
    client = Client(provider=gemini(upstream), max_retries=0)
    client.chat.completions.create(model="gemini x:é", messages=USER)
    client.chat.completions.create(model="tunedModels/my-tuned", messages=USER)
    paths = [r.path for r in upstream.requests("gem")[-2:]]
    assert paths == [
        "/v1beta/models/gemini%20x%3A%C3%A9:generateContent",
        "/v1beta/tunedModels/my-tuned:generateContent",
    ]
    Client(provider=azure(upstream), max_retries=0).chat.completions.create(model="gpt 4o", messages=USER)
    assert upstream.requests("az")[-1].path == "/openai/deployments/gpt%204o/chat/completions"


def test_a_chain_fails_over_to_a_provider_that_takes_the_name_in_the_body(upstream: WireServer) -> None:
    from polychat.providers import OpenaiChat
    from polychat.routing import CircuitBreaker, RetryProvider

    chain = RetryProvider(
        [gemini(upstream), OpenaiChat(api_key="k", base_url=f"{upstream.url}/s/az/v1")], breaker=CircuitBreaker()
    )
    before = len(upstream.requests("gem"))
    r = Client(provider=chain).chat.completions.create(model="meta-llama/Llama-3", messages=USER)
    assert r.provider == "OpenaiChat"
    assert len(upstream.requests("gem")) == before
    assert upstream.requests("az")[-1].json()["model"] == "meta-llama/Llama-3"


# -- through the gateway --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gw(upstream: WireServer) -> Iterator[Gateway]:
    config = (
        f'[providers.gem]\ntype = "gemini"\nbase_url = "{upstream.url}/s/gem/v1beta"\napi_key_env = "GEM_KEY"\n'
        f'[providers.az]\ntype = "azure"\nbase_url = "{upstream.url}/s/az/openai"\napi_key_env = "GEM_KEY"\n'
    )
    with Gateway(config_text=config, env={"GEM_KEY": KEY}) as gateway:
        yield gateway


@pytest.mark.parametrize("name", HOSTILE)
@pytest.mark.parametrize("prefix", ["gem", "az"])
def test_the_gateway_answers_400_and_sends_nothing(upstream: WireServer, gw: Gateway, prefix: str, name: str) -> None:
    before = len(upstream.requests())
    for stream in (False, True):
        r = httpx.post(
            f"{gw.base_url}/chat/completions",
            json={"model": f"{prefix}:{name}", "messages": USER, "stream": stream},
            timeout=60,
        )
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["param"] == "model" and error["type"] == "invalid_request_error"
    assert len(upstream.requests()) == before, [(q.method, q.path, q.query) for q in upstream.requests()[before:]]


def test_the_gateway_still_reaches_the_named_model(upstream: WireServer, gw: Gateway) -> None:
    with openai.OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0) as client:
        client.chat.completions.create(model="gem:gemini-2.5-flash", messages=USER)
        client.chat.completions.create(model="az:gpt-4o", messages=USER)
    gem, az = upstream.requests("gem")[-1], upstream.requests("az")[-1]
    assert gem.path == "/v1beta/models/gemini-2.5-flash:generateContent" and gem.query == {}
    assert az.path == "/openai/deployments/gpt-4o/chat/completions" and set(az.query) == {"api-version"}
