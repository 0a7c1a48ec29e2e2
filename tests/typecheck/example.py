"""Code written the way the README shows, type-checked by ``.ci/run`` with ``mypy --strict``.

Never run: it exists so that a change which makes user code fail ``mypy --strict`` fails CI. Keep it close to
the README's examples; it must need no ``cast``, ``isinstance`` or ``type: ignore``.
"""

from __future__ import annotations

from polychat import (
    AllProvidersFailedError,
    APIError,
    AsyncClient,
    AsyncStream,
    ChatCompletion,
    ChatCompletionChunk,
    Client,
    Stream,
    StreamInterruptedError,
)
from polychat.client import Client as SeedClient
from polychat.Provider import OpenaiChat, RetryProvider
from polychat.providers import Local
from polychat.routing import InMemoryBreakerStore, RedisBreakerStore


def seed_example() -> None:
    client = SeedClient(
        proxies={"http": "http://username:password@host:port", "https": "http://username:password@host:port"},
        provider=RetryProvider([OpenaiChat], single_provider_retry=True, max_retries=5),
    )
    messages = [{"role": "user", "content": "Hello"}]
    response = client.chat.completions.create(model="gpt-3.5-turbo", messages=messages, stream=True)
    for message in response:
        print(message.choices[0].delta.content or "")


def quickstart() -> str:
    client = Client()
    reply = client.chat.completions.create(model="", messages=[{"role": "user", "content": "Hi!"}])
    text: str = reply.choices[0].message.content or ""
    with client.chat.completions.create(
        model="", messages=[{"role": "user", "content": "List the days of the week."}], stream=True
    ) as stream:
        for chunk in stream:
            text += chunk.choices[0].delta.content or ""
            resumed: str | None = chunk.resumed_from
            print(resumed, stream.provider)
    return f"{text} — {reply.provider}"


def failover(stream: bool) -> ChatCompletion | Stream[ChatCompletionChunk]:
    client = Client(
        provider=RetryProvider(
            [OpenaiChat(name="openai"), OpenaiChat(base_url="http://127.0.0.1:8080/v1", name="llama"), Local()],
            max_retries=2,
            first_token_timeout=10,
            idle_timeout=30,
            hedge_after=3,
        ),
        timeout=60,
        resume=True,
    )
    try:
        messages = [{"role": "user", "content": "hi"}]
        return client.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=stream, temperature=0.2)
    except AllProvidersFailedError as exc:
        for attempt in exc.attempts:
            print(attempt.provider, attempt.error_class, attempt.status_code, attempt.elapsed)
        raise
    except APIError as exc:
        print(len(exc.attempts), exc.provider)
        raise


async def async_example() -> str:
    parts: list[str] = []
    async with AsyncClient(api_key={"openai": "sk-..."}) as aclient:
        reply = await aclient.chat.completions.create(model="", messages=[{"role": "user", "content": "Hi"}])
        parts.append(reply.choices[0].message.content or "")
        try:
            stream: AsyncStream[ChatCompletionChunk] = await aclient.chat.completions.create(
                model="", messages=[{"role": "user", "content": "List the days of the week."}], stream=True
            )
            async for chunk in stream:
                parts.append(chunk.choices[0].delta.content or "")
        except StreamInterruptedError as exc:
            parts.append(exc.partial)
        models = await aclient.models.list()
        parts.extend(m.id for m in models.data)
    return "".join(parts)


def every_attempt() -> list[str]:
    """README "Tracing": the attempts of an answer and of a finished stream."""
    client = Client()
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi!"}])
    lines = [a.describe() for a in reply.attempts]
    with client.chat.completions.create(model="", messages=[{"role": "user", "content": "Hi!"}], stream=True) as s:
        for _ in s:
            pass
    for a in s.attempts:
        ttft: float | None = a.ttft
        lines.append(f"{a.provider} {a.kind} {a.outcome} {a.error_class} {a.elapsed:.3f} {ttft}")
    return lines


def shared_breakers() -> str | None:
    # Several processes on one Redis: a provider one of them finds down is skipped by all.
    with Client(breaker_store="redis://127.0.0.1:6379/0") as client:
        reply = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    store = InMemoryBreakerStore()
    local = Client(breaker_store=store)
    local.close()
    return reply.provider


async def shared_breakers_async() -> str | None:
    async with AsyncClient(breaker_store=RedisBreakerStore("redis://127.0.0.1:6379/0")) as client:
        reply = await client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    return reply.provider
