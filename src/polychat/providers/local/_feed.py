"""The callers' side of Local: a job's items handed over to an event loop without blocking it, turned into
OpenAI-shaped chunks, and a finished job turned into its outcome or a polychat error.

Kept apart from the engine because this code runs in the caller's thread or on the caller's event loop, never in
the model's thread (except ``_AsyncFeed._emit``, which only hands items over).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any, cast

from ...errors import APIError, PolychatError
from ...types import ChatCompletionChunk, ChoiceDelta, CompletionUsage, StreamChoice
from ._engine import _END, _STARTED, _Engine, _Job, _Loaded, _Outcome


class _AsyncFeed:
    """A job's items on an event loop: handed over by ``call_soon_threadsafe``, so the loop never blocks."""

    def __init__(self, engine: _Engine, work: Callable[[_Loaded, _Job], Any], *, forward: bool) -> None:
        self._engine = engine
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._ended = False
        self.job = _Job(work, self._emit, forward=forward)
        engine.submit(self.job)

    def _emit(self, item: object) -> None:  # in the model's thread
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self.job.cancelled.set()

    async def get(self) -> object:
        item = await self._queue.get()
        if item is _END:
            self._ended = True
        return item

    async def close(self) -> None:
        """Stop the job; return once the model is free of it (awaiting, never blocking the loop)."""
        if not self._ended and self._engine.cancel(self.job):
            while not self._ended:
                await self.get()


class _Chunks:
    """Turns a job's items into OpenAI-shaped chunks with one id and ``created`` for the whole stream."""

    def __init__(self, provider: str, model: str, include_usage: bool) -> None:
        self.provider = provider
        self.model = model
        self.include_usage = include_usage
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())

    def _chunk(self, choices: list[StreamChoice], usage: CompletionUsage | None = None) -> ChatCompletionChunk:
        chunk = ChatCompletionChunk(id=self.id, created=self.created, model=self.model, choices=choices, usage=usage)
        chunk.provider = self.provider
        return chunk

    def feed(self, item: object) -> ChatCompletionChunk:
        delta = ChoiceDelta(role="assistant", content="") if item is _STARTED else ChoiceDelta(content=str(item))
        return self._chunk([StreamChoice(delta=delta)])

    def finish(self, outcome: _Outcome) -> list[ChatCompletionChunk]:
        out = [self._chunk([StreamChoice(delta=ChoiceDelta(), finish_reason=outcome.finish_reason)])]
        if self.include_usage:
            out.append(self._chunk([], _usage(outcome)))
        return out


def _usage(outcome: _Outcome) -> CompletionUsage:
    return CompletionUsage(
        prompt_tokens=outcome.prompt_tokens,
        completion_tokens=outcome.completion_tokens,
        total_tokens=outcome.prompt_tokens + outcome.completion_tokens,
    )


def _outcome(job: _Job, provider: str) -> _Outcome:
    """The job's result, or its error raised as a polychat error naming ``provider``."""
    error = job.error
    if error is None:
        outcome = cast(_Outcome, job.result)
        if outcome.finish_reason == "cancelled":  # stopped from elsewhere: at interpreter exit
            raise APIError(
                "The local model was stopped before it finished (the interpreter is exiting)", provider=provider
            )
        return outcome
    if isinstance(error, APIError):
        error.provider = error.provider or provider
        raise error
    if isinstance(error, PolychatError) or not isinstance(error, Exception):
        raise error
    raise APIError(f"llama.cpp failed: {type(error).__name__}: {error}", provider=provider) from error
