"""Failover onto real parts: a dead remote, then the real llama.cpp server; a dead remote, then the embedded model."""

from __future__ import annotations

import asyncio

from polychat import AsyncClient, Client
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
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)  # type: ignore[union-attr]
    assert text.strip() and stream.provider == "llama.cpp"  # type: ignore[union-attr]


def test_dead_remote_then_embedded_model_sync_and_async() -> None:
    provider = RetryProvider([dead(), Local()], breaker=CircuitBreaker())
    r = Client(provider=provider).chat.completions.create(model="", messages=MSGS, max_tokens=8)
    assert r.content.strip() and r.provider == "Local"  # type: ignore[union-attr]

    async def go() -> tuple[str, str | None]:
        async with AsyncClient(provider=provider) as client:
            stream = await client.chat.completions.create(model="", messages=MSGS, stream=True, max_tokens=8)
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])  # type: ignore[union-attr]
            return text, stream.provider  # type: ignore[union-attr]

    text, who = asyncio.run(go())
    assert text.strip() and who == "Local"
