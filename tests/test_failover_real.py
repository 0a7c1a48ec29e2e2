"""Failover onto real parts: a dead remote, then the real llama.cpp server; a dead remote, then the embedded model."""

from __future__ import annotations

import asyncio

import pytest

from polychat import AsyncClient, Client, errors
from polychat.providers import Local, OpenaiChat
from polychat.routing import CircuitBreaker, RetryProvider
from tests.support.servers import LlamaServer, free_port

MSGS = [{"role": "user", "content": "Name a colour."}]


def dead() -> OpenaiChat:
    return OpenaiChat(base_url=f"http://127.0.0.1:{free_port()}/v1", name="dead-remote")


def test_dead_remote_then_llama_server(llama_server: LlamaServer) -> None:
    provider = RetryProvider(
        [dead(), OpenaiChat(base_url=llama_server.base_url, name="llama.cpp")], breaker=CircuitBreaker()
    )
    stream = Client(provider=provider).chat.completions.create(model="m", messages=MSGS, stream=True, max_tokens=8)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text.strip() and stream.provider == "llama.cpp"


def test_dead_remote_then_embedded_model_sync_and_async() -> None:
    provider = RetryProvider([dead(), Local()], breaker=CircuitBreaker())
    r = Client(provider=provider).chat.completions.create(model="", messages=MSGS, max_tokens=8)
    assert r.content.strip() and r.provider == "Local"

    async def go() -> tuple[str, str | None]:
        async with AsyncClient(provider=provider) as client:
            stream = await client.chat.completions.create(model="", messages=MSGS, stream=True, max_tokens=8)
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            return text, stream.provider

    text, who = asyncio.run(go())
    assert text.strip() and who == "Local"


def test_embedded_model_as_last_resort_answers_any_model_name() -> None:
    provider = RetryProvider([dead(), Local(any_model=True)], breaker=CircuitBreaker())
    r = Client(provider=provider).chat.completions.create(model="gpt-4o-mini", messages=MSGS, max_tokens=4)
    assert r.provider == "Local" and r.model == "smollm2-135m"
    strict = RetryProvider([dead(), Local()], breaker=CircuitBreaker())
    with pytest.raises(errors.AllProvidersFailedError, match="NotFoundError 404"):
        Client(provider=strict).chat.completions.create(model="gpt-4o-mini", messages=MSGS, max_tokens=4)


def test_default_chain_reports_a_down_remote_instead_of_substituting(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in ("ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{free_port()}/v1")  # a configured remote that is down
    with pytest.raises(errors.APIConnectionError):
        Client().chat.completions.create(model="gpt-4o-mini", messages=MSGS, max_tokens=4)
    # the substitution, when asked for: [defaults] fallback
    from polychat.config import Config

    r = Client(config=Config({"defaults": {"fallback": "local"}})).chat.completions.create(
        model="gpt-4o-mini", messages=MSGS, max_tokens=4
    )
    assert r.provider == "Local" and r.model == "smollm2-135m"
