"""Code written the way the README shows, type-checked by ``.ci/run`` with ``mypy --strict``.

Never run: it exists so that a change which makes user code fail ``mypy --strict`` fails CI. Keep it close to
the README's examples.
"""

from __future__ import annotations

from polychat import APIError, AsyncClient, ChatCompletion, Client, Stream, StreamInterruptedError
from polychat.client import Client as SeedClient
from polychat.Provider import OpenaiChat, RetryProvider
from polychat.providers import Local
from polychat.types import ChatCompletionChunk


def seed_example() -> None:
    client = SeedClient(
        proxies={"http": "http://username:password@host:port", "https": "http://username:password@host:port"},
        provider=RetryProvider([OpenaiChat], single_provider_retry=True, max_retries=5),
    )
    messages = [{"role": "user", "content": "Hello"}]
    response = client.chat.completions.create(model="gpt-3.5-turbo", messages=messages, stream=True)
    assert isinstance(response, Stream)
    for message in response:
        print(message.choices[0].delta.content or "")


def quickstart() -> str:
    client = Client(provider=RetryProvider([OpenaiChat(name="openai"), Local(any_model=True)], max_retries=2))
    reply = client.chat.completions.create(model="", messages=[{"role": "user", "content": "Hi!"}])
    assert isinstance(reply, ChatCompletion)
    text: str = reply.choices[0].message.content or ""
    return f"{text} — {reply.provider}"


def first_chunk(chunk: ChatCompletionChunk) -> str:
    return chunk.choices[0].delta.content or "" if chunk.choices else ""


async def async_example() -> str:
    parts: list[str] = []
    async with AsyncClient() as aclient:
        try:
            stream = await aclient.chat.completions.create(
                model="", messages=[{"role": "user", "content": "Count to 5"}], stream=True
            )
            assert not isinstance(stream, ChatCompletion)
            async for chunk in stream:
                parts.append(first_chunk(chunk))
        except StreamInterruptedError as exc:
            parts.append(exc.partial)
        except APIError as exc:
            parts.append(str(exc.provider))
    return "".join(parts)
