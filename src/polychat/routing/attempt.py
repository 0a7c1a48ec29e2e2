"""One attempt at one provider: its deadlines, and the step from request to first content.

An attempt is ``open()``-ed — it runs until the first chunk with content (holding back role-only chunks, so a
provider that fails before saying anything can be replaced invisibly) — then its ``rest()`` is read. Timeouts are
enforced here: by the process watchdog for sync attempts, by ``asyncio`` deadlines for async ones.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

from .._timeouts import Watch, within
from ..errors import APIError, APITimeoutError, EmptyResponseError, UnsupportedParameterError

if TYPE_CHECKING:
    from .._context import CallContext
    from .._failover import CallPolicy
    from .._request import ChatRequest
    from ..providers.base import Provider
    from ..types import ChatCompletion, ChatCompletionChunk
    from .plan import Step


def refuse_untranslated(provider: Provider, request: ChatRequest) -> None:
    """A request that came in another protocol and carries what the normalised request cannot: only a provider
    speaking that protocol may answer it (others refuse, naming the field), unless the call allows dropping."""
    native = request.native
    if native is None or not native.lossy or request.drop_unsupported:
        return
    if provider.capabilities.native_protocol == native.protocol:
        return
    field = native.lossy[0]
    raise UnsupportedParameterError(
        f"Parameter {field} cannot be passed on to provider {provider.name}: only a provider speaking the "
        f"{native.protocol} protocol can honour it. Remove it, or ask the gateway to drop what a provider cannot "
        "honour (header x-polychat-drop-unsupported: true).",
        param=field,
        provider=provider.name,
    )


def has_content(chunk: ChatCompletionChunk) -> bool:
    native = chunk.native
    if native and native.get("type") == "content_block_delta":
        return True  # a provider's own event carrying a block's content (thinking included)
    for choice in chunk.choices:
        d = choice.delta
        if d.content or d.tool_calls or d.refusal:
            return True
    return False


def chunk_text(chunk: ChatCompletionChunk) -> str:
    return "".join(ch.delta.content or "" for ch in chunk.choices if ch.index == 0)


def empty_answer(provider: Provider) -> EmptyResponseError:
    return EmptyResponseError("The provider returned an empty answer", provider=provider.name, retryable=False)


def completion_empty(c: ChatCompletion) -> bool:
    return not any(ch.message.content or ch.message.tool_calls or ch.message.refusal for ch in c.choices)


class SyncAttempt:
    def __init__(self, step: Step, request: ChatRequest, ctx: CallContext, policy: CallPolicy, *, stream: bool) -> None:
        self.step = step
        self.provider = step.provider
        self.request = request
        self.watch = Watch(policy.limits(step.provider, stream=stream))
        self.ctx = ctx.for_attempt(self.watch)
        self.started = time.monotonic()
        self._chunks: Iterator[ChatCompletionChunk] | None = None

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def complete(self) -> ChatCompletion:
        self.watch.phase = "answer"
        self.watch.start()
        try:
            refuse_untranslated(self.provider, self.request)
            return self.provider.complete(self.request, self.ctx)
        except APIError as e:
            err = self.watch.translate(e, self.provider.name)
            if err is e:  # not `raise e from e`: an error must not be its own cause
                raise
            raise err from e
        finally:
            self.watch.stop()

    def open(self) -> list[ChatCompletionChunk]:
        """Read up to and including the first chunk with content; fewer if the stream ended without any."""
        self.watch.start()
        held: list[ChatCompletionChunk] = []
        try:
            refuse_untranslated(self.provider, self.request)
            self._chunks = self.provider.stream(self.request, self.ctx)
            for chunk in self._chunks:
                held.append(chunk)
                if has_content(chunk):
                    self.step.first_token_at = time.monotonic()
                    self.watch.phase = "idle"
                    self.watch.pause()  # the caller is about to hold these chunks
                    return held
        except APIError as e:
            err = self.watch.translate(e, self.provider.name)
            if err is e:  # not `raise e from e`: an error must not be its own cause
                raise
            raise err from e
        return held

    def rest(self) -> Iterator[ChatCompletionChunk]:
        chunks = self._chunks
        if chunks is None:
            return
        watch = self.watch
        while True:
            watch.resume()
            try:
                chunk = next(chunks)
            except StopIteration:
                return
            except APIError as e:
                err = watch.translate(e, self.provider.name)
                if err is e:
                    raise
                raise err from e
            watch.pause()
            yield chunk

    def close(self) -> None:
        self.watch.stop()
        if self._chunks is not None:
            close = getattr(self._chunks, "close", None)
            if close is not None:
                close()


class AsyncAttempt:
    def __init__(self, step: Step, request: ChatRequest, ctx: CallContext, policy: CallPolicy, *, stream: bool) -> None:
        self.step = step
        self.provider = step.provider
        self.request = request
        self.limits = policy.limits(step.provider, stream=stream)
        self.ctx = ctx.for_provider()
        self.started = time.monotonic()
        self._chunks: AsyncIterator[ChatCompletionChunk] | None = None
        self._phase = "first token"

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def _timeout(self, cause: BaseException | None = None) -> APITimeoutError:
        watch = Watch(self.limits)
        watch.phase = self._phase
        err = APITimeoutError(f"Timed out: {watch.reason()}", provider=self.provider.name)
        err.__cause__ = cause
        return err

    def _first_deadline(self) -> float | None:
        lim = self.limits
        first = self.started + lim.first_token if lim.first_token is not None else None
        return _min(first, lim.deadline_at)

    def _idle_deadline(self) -> float | None:
        lim = self.limits
        idle = time.monotonic() + lim.idle if lim.idle is not None else None
        return _min(idle, lim.deadline_at)

    async def complete(self) -> ChatCompletion:
        refuse_untranslated(self.provider, self.request)
        self._phase = "answer"
        try:
            return await within(self._first_deadline(), self.provider.acomplete(self.request, self.ctx))
        except TimeoutError as e:
            raise self._timeout(e) from e

    async def open(self) -> list[ChatCompletionChunk]:
        held: list[ChatCompletionChunk] = []
        deadline = self._first_deadline()
        refuse_untranslated(self.provider, self.request)
        chunks = self._chunks = self.provider.astream(self.request, self.ctx)
        while True:
            try:
                chunk = await within(deadline, chunks.__anext__())
            except StopAsyncIteration:
                return held
            except TimeoutError as e:
                raise self._timeout(e) from e
            held.append(chunk)
            if has_content(chunk):
                self.step.first_token_at = time.monotonic()
                self._phase = "idle"
                return held

    async def rest(self) -> AsyncIterator[ChatCompletionChunk]:
        chunks = self._chunks
        if chunks is None:
            return
        timed = self.limits.idle is not None or self.limits.deadline_at is not None
        while True:
            try:
                if timed:
                    chunk = await within(self._idle_deadline(), chunks.__anext__())
                else:
                    chunk = await chunks.__anext__()
            except StopAsyncIteration:
                return
            except TimeoutError as e:
                raise self._timeout(e) from e
            yield chunk

    async def aclose(self) -> None:
        if self._chunks is not None:
            aclose = getattr(self._chunks, "aclose", None)
            if aclose is not None:
                await aclose()


def _min(*values: float | None) -> float | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None
