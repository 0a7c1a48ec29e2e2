"""One chat call made the way a user makes it, sync (``Client``) or async (``AsyncClient`` in an event loop of its
own), with everything the caller can see collected: the runner the failover, policy, scenario and tracing tests
share, so the sync and async paths they compare are driven the same way.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Any

from polychat import AsyncClient, Client, errors
from polychat.types import ChatCompletionChunk

MSGS = [{"role": "user", "content": "Tell me something."}]
FLAVOURS = ["sync", "async"]


class NoJitter(random.Random):
    """Backoff sleeps of zero, so retries are fast; the delays themselves are tested in test_plan.py."""

    def uniform(self, a: float, b: float) -> float:
        return 0.0


@dataclass
class Seen:
    """What one call gave its caller (``error``: the :class:`~polychat.errors.PolychatError` it raised, if any)."""

    text: str = ""
    chunks: list[ChatCompletionChunk] = field(default_factory=list)
    #: The answer's provider (a stream's, once read).
    provider: str | None = None
    #: Each chunk's provider, in order (a whole answer: its one provider).
    providers: list[str | None] = field(default_factory=list)
    #: The providers chunks said the answer was resumed from.
    resumed_from: set[str] = field(default_factory=set)
    attempts: list[errors.Attempt] = field(default_factory=list)
    error: BaseException | None = None
    #: Close a stream after this many chunks.
    stop_after: int | None = None

    def take(self, chunk: ChatCompletionChunk) -> bool:
        """Note a chunk; True once the caller has read enough."""
        self.chunks.append(chunk)
        self.text += chunk.choices[0].delta.content or "" if chunk.choices else ""
        self.providers.append(chunk.provider)
        if chunk.resumed_from:
            self.resumed_from.add(chunk.resumed_from)
        return self.stop_after is not None and len(self.chunks) >= self.stop_after

    def read(self, stream: Any) -> None:
        """What a stream says once read (or closed early)."""
        self.provider, self.attempts = stream.provider, stream.attempts

    def whole(self, answer: Any) -> None:
        """What a whole (non-stream) answer says."""
        self.text, self.provider, self.attempts = answer.content, answer.provider, answer.attempts
        self.providers = [answer.provider]


def call_as_user(
    flavour: str,
    client: dict[str, Any],
    *,
    stream: bool,
    model: str = "m",
    messages: list[dict[str, Any]] = MSGS,
    stop_after: int | None = None,
    **create: Any,
) -> Seen:
    """``create(model, messages, stream, **create)`` on a client built from ``client``; ``stop_after=n`` closes a
    stream after n chunks."""
    seen = Seen(stop_after=stop_after)
    if flavour == "sync":
        with Client(**client) as c:
            try:
                r = c.chat.completions.create(model=model, messages=messages, stream=stream, **create)
                if not stream:
                    seen.whole(r)
                    return seen
                with r as s:  # type: ignore[union-attr]
                    for chunk in s:
                        if seen.take(chunk):
                            break
                seen.read(s)
            except errors.PolychatError as e:
                seen.error = e
        return seen

    async def go() -> None:
        async with AsyncClient(**client) as c:
            try:
                r = await c.chat.completions.create(model=model, messages=messages, stream=stream, **create)
                if not stream:
                    seen.whole(r)
                    return
                async with r as s:  # type: ignore[union-attr]
                    async for chunk in s:
                        if seen.take(chunk):
                            break
                seen.read(s)
            except errors.PolychatError as e:
                seen.error = e

    asyncio.run(go())
    return seen
