"""The callers' side of Local: a job's items handed to the calling thread or event loop (never blocking a loop)
under the call's time limits, turned into OpenAI-shaped chunks, and a finished job turned into its outcome or a
polychat error.

Kept apart from the engine because this code runs in the caller's thread or on the caller's event loop, never in
the model's thread (except ``_AsyncFeed._emit``, which only hands items over).
"""

from __future__ import annotations

import asyncio
import queue
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from ...errors import APIError, APITimeoutError, PolychatError
from ...types import ChatCompletionChunk, ChoiceDelta, CompletionUsage, StreamChoice
from ._engine import _END, _STARTED, _TIMED_OUT, _Engine, _Job, _Loaded, _Outcome

if TYPE_CHECKING:
    from ..._context import CallContext


def token_timeout(ctx: CallContext | None) -> float | None:
    """How long Local may go without a token (the first or the next): the read part of a ``timeout`` given to the
    call or the client — what it means for an HTTP provider too. None when none was given: a queued or long
    prompt is not cut short by a default meant for networks. (``deadline`` and the failover timeouts reach Local
    through the attempt's watch instead.)"""
    if ctx is None:
        return None
    timeout = ctx.call_timeout or ctx.client_timeout
    return timeout.read if timeout is not None else None


def _no_token(limit: float, provider: str) -> APITimeoutError:
    return APITimeoutError(f"Timed out: no token from the local model within {limit:g} s (timeout)", provider=provider)


def _out_of_time(provider: str) -> APIError:
    # the failover engine turns this into an APITimeoutError saying which of its limits passed
    return APIError("The local model was stopped: the call ran out of time", provider=provider)


class _Feed(ABC):
    """What both feeds share: a job doing ``work`` for ``provider``, whose items :meth:`_emit` hands over, set up
    by :meth:`_prepare` and then submitted; and the call's limit on the wait for each token."""

    def __init__(
        self,
        engine: _Engine,
        work: Callable[[_Loaded, _Job], Any],
        ctx: CallContext | None,
        provider: str,
        *,
        forward: bool,
    ) -> None:
        self._engine = engine
        self._provider = provider
        self._limit = token_timeout(ctx)
        self.job = _Job(work, self._emit, forward=forward)
        self._prepare(ctx)
        engine.submit(self.job)

    @abstractmethod
    def _prepare(self, ctx: CallContext | None) -> None:
        """Ready the hand-over (before the job can emit anything)."""

    @abstractmethod
    def _emit(self, item: object) -> None:
        """In the model's thread: hand ``item`` to the caller's side."""


class _SyncFeed(_Feed):
    """A job's items in the calling thread. A token timeout, or the failover engine's watchdog (the ``ctx.watch``
    of an attempt with first-token / idle / deadline limits, calling back from its own thread), stops the job and
    ends the wait with a timeout error."""

    def _prepare(self, ctx: CallContext | None) -> None:
        self._items: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._timed_out = False
        watch = getattr(ctx, "watch", None)
        if watch is not None:
            watch.attach(self._cut)

    def _emit(self, item: object) -> None:
        self._items.put(item)

    def _cut(self) -> None:  # in the watchdog's thread
        self._engine.cancel(self.job)
        self._items.put(_TIMED_OUT)

    def get(self) -> object:
        try:
            item = self._items.get(timeout=self._limit)
        except queue.Empty:
            self._timed_out = True
            assert self._limit is not None
            raise _no_token(self._limit, self._provider) from None
        if item is _TIMED_OUT:
            self._timed_out = True
            raise _out_of_time(self._provider)
        return item

    def close(self, *, wait: bool) -> None:
        """Stop the job (a no-op once it is done); with ``wait``, return once the model is free of it — except
        after a timeout, when the caller fails over at once."""
        if self._engine.cancel(self.job) and wait and not self._timed_out:
            self.job.done.wait()


class _AsyncFeed(_Feed):
    """A job's items on an event loop: handed over by ``call_soon_threadsafe``, so the loop never blocks. A token
    timeout ends the wait like :class:`_SyncFeed`'s; the failover engine's limits cancel the awaiting task."""

    def _prepare(self, ctx: CallContext | None) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._ended = False

    def _emit(self, item: object) -> None:  # in the model's thread
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self.job.cancelled.set()

    async def get(self) -> object:
        if self._limit is None:
            item = await self._queue.get()
        else:
            try:
                item = await asyncio.wait_for(self._queue.get(), self._limit)
            except asyncio.TimeoutError:
                raise _no_token(self._limit, self._provider) from None
        if item is _END:
            self._ended = True
        return item

    async def close(self) -> None:
        """Stop the job; return once the model is free of it (awaiting, never blocking the loop)."""
        if not self._ended and self._engine.cancel(self.job):
            while await self._queue.get() is not _END:  # no time limit here: the job stops within a token
                pass
            self._ended = True


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
