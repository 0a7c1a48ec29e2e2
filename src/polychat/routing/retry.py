"""RetryProvider and IterListProvider: providers made of providers, trying them per :class:`FailoverPlan`.

The shells here only sleep, call and record; every decision is the plan's. Streams hold back chunks until the
first one with content, so a provider that fails before saying anything is replaced invisibly; once content has
reached the caller, a failure raises :class:`~polychat.errors.StreamInterruptedError` with the partial text —
never a silent splice or repeat.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import random
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from .. import _constants as C
from ..errors import APIError, StreamInterruptedError
from ..providers.base import Capabilities, Provider, as_provider
from .policy import FailoverPlan, Step

if TYPE_CHECKING:
    from .._context import CallContext
    from .._request import ChatRequest
    from ..types import ChatCompletion, ChatCompletionChunk, Model

log = logging.getLogger("polychat")


class EmptyResponseError(APIError):
    """The provider answered 200 with no content and no tool calls (pass ``allow_empty=True`` to accept it)."""


def _has_content(chunk: ChatCompletionChunk) -> bool:
    for choice in chunk.choices:
        d = choice.delta
        if d.content or d.tool_calls or d.refusal:
            return True
    return False


def _completion_empty(c: ChatCompletion) -> bool:
    return not any(ch.message.content or ch.message.tool_calls or ch.message.refusal for ch in c.choices)


def _chunk_text(chunk: ChatCompletionChunk) -> str:
    return "".join(ch.delta.content or "" for ch in chunk.choices if ch.index == 0)


class RetryProvider(Provider):
    """Try ``providers`` in order (shuffled per request with ``shuffle=True``), each up to ``max_retries`` more
    times for retryable errors; with ``single_provider_retry=True`` only the first, up to ``max_retries`` retries.

    Providers may be classes (instantiated from the environment) or instances; one class may appear twice with
    different settings. ``allow_empty=True`` accepts empty answers instead of failing over.
    """

    def __init__(
        self,
        providers: Iterable[Any],
        shuffle: bool = False,
        single_provider_retry: bool = False,
        max_retries: int = C.RETRY_PROVIDER_MAX_RETRIES,
        *,
        allow_empty: bool = False,
        name: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._specs = list(providers)
        self.providers = [as_provider(p) for p in self._specs]
        if not self.providers:
            from ..errors import ConfigError

            raise ConfigError(f"{type(self).__name__} needs at least one provider")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            from ..errors import ConfigError

            raise ConfigError(f"max_retries must be a whole number >= 0, got {max_retries!r}")
        super().__init__(name=name or "+".join(p.name for p in self.providers))
        self.shuffle = shuffle
        self.single_provider_retry = single_provider_retry
        self.max_retries = max_retries
        self.allow_empty = allow_empty
        self._rng = rng or random.Random()

    def bind(self, *, api_key: Any = None, base_url: str | None = None) -> Provider:
        if not (api_key or base_url):
            return self
        bound = copy.copy(self)
        bound.providers = [as_provider(p, api_key=api_key, base_url=base_url) for p in self._specs]
        return bound

    @property
    def capabilities(self) -> Capabilities:  # type: ignore[override]
        return self.providers[0].capabilities

    @property
    def default_model(self) -> str | None:  # type: ignore[override]
        return self.providers[0].default_model

    def members(self) -> list[Provider]:
        return [m for p in self.providers for m in p.members()]

    def plan(self, request: ChatRequest) -> FailoverPlan:
        order = list(self.providers)
        if self.shuffle:
            self._rng.shuffle(order)
        return FailoverPlan(order, self.max_retries, self.single_provider_retry, request.model, self._rng)

    def _allow_empty(self, ctx: CallContext) -> bool:
        value = ctx.options.get("allow_empty")
        return self.allow_empty if value is None else bool(value)

    def _note(self, step: Step, error: BaseException, plan: FailoverPlan) -> None:
        nxt = plan.next_step()
        if nxt is None:
            what = "giving up"
        elif nxt.provider is step.provider:
            what = f"retrying in {nxt.delay:.2f}s"
        else:
            what = f"switching to {nxt.provider.name}"
        log.warning("polychat: %s failed (%s: %s); %s", step.provider.name, type(error).__name__, error, what)

    # -- sync ----------------------------------------------------------------------------------------------------

    def complete(self, request: ChatRequest, ctx: CallContext) -> ChatCompletion:
        plan = self.plan(request)
        while (step := plan.next_step()) is not None:
            if step.delay:
                time.sleep(step.delay)
            t0 = time.monotonic()
            try:
                result = step.provider.complete(request, ctx)
                if not self._allow_empty(ctx) and _completion_empty(result):
                    raise EmptyResponseError("The provider returned an empty answer", provider=step.provider.name)
            except APIError as e:
                plan.failed(step, e, time.monotonic() - t0)
                self._note(step, e, plan)
                continue
            plan.succeeded(step, time.monotonic() - t0)
            return result
        raise plan.error()

    def stream(self, request: ChatRequest, ctx: CallContext) -> Iterator[ChatCompletionChunk]:
        plan = self.plan(request)
        allow_empty = self._allow_empty(ctx)
        while (step := plan.next_step()) is not None:
            if step.delay:
                time.sleep(step.delay)
            t0 = time.monotonic()
            held: list[ChatCompletionChunk] = []
            partial: list[str] | None = None
            chunks = step.provider.stream(request, ctx)
            try:
                for chunk in chunks:
                    if partial is None:
                        held.append(chunk)
                        if not _has_content(chunk):
                            continue
                        partial = []
                        for h in held:
                            partial.append(_chunk_text(h))
                            yield h
                        held = []
                        continue
                    partial.append(_chunk_text(chunk))
                    yield chunk
                if partial is None:
                    if not allow_empty:
                        raise EmptyResponseError("The provider returned an empty answer", provider=step.provider.name)
                    yield from held
            except APIError as e:
                if isinstance(e, StreamInterruptedError):
                    raise
                if partial is not None:
                    raise StreamInterruptedError(
                        f"The stream from {step.provider.name} failed after content was sent: {e}",
                        partial="".join(partial),
                        provider=step.provider.name,
                        cause=e,
                    ) from e
                plan.failed(step, e, time.monotonic() - t0)
                self._note(step, e, plan)
                continue
            finally:
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()
            plan.succeeded(step, time.monotonic() - t0)
            return
        raise plan.error()

    # -- async (the same steps, awaited) --------------------------------------------------------------------------

    async def acomplete(self, request: ChatRequest, ctx: CallContext) -> ChatCompletion:
        plan = self.plan(request)
        while (step := plan.next_step()) is not None:
            if step.delay:
                await asyncio.sleep(step.delay)
            t0 = time.monotonic()
            try:
                result = await step.provider.acomplete(request, ctx)
                if not self._allow_empty(ctx) and _completion_empty(result):
                    raise EmptyResponseError("The provider returned an empty answer", provider=step.provider.name)
            except APIError as e:
                plan.failed(step, e, time.monotonic() - t0)
                self._note(step, e, plan)
                continue
            plan.succeeded(step, time.monotonic() - t0)
            return result
        raise plan.error()

    async def astream(self, request: ChatRequest, ctx: CallContext) -> AsyncIterator[ChatCompletionChunk]:
        plan = self.plan(request)
        allow_empty = self._allow_empty(ctx)
        while (step := plan.next_step()) is not None:
            if step.delay:
                await asyncio.sleep(step.delay)
            t0 = time.monotonic()
            held: list[ChatCompletionChunk] = []
            partial: list[str] | None = None
            chunks = step.provider.astream(request, ctx)
            try:
                async for chunk in chunks:
                    if partial is None:
                        held.append(chunk)
                        if not _has_content(chunk):
                            continue
                        partial = []
                        for h in held:
                            partial.append(_chunk_text(h))
                            yield h
                        held = []
                        continue
                    partial.append(_chunk_text(chunk))
                    yield chunk
                if partial is None:
                    if not allow_empty:
                        raise EmptyResponseError("The provider returned an empty answer", provider=step.provider.name)
                    for h in held:
                        yield h
            except APIError as e:
                if isinstance(e, StreamInterruptedError):
                    raise
                if partial is not None:
                    raise StreamInterruptedError(
                        f"The stream from {step.provider.name} failed after content was sent: {e}",
                        partial="".join(partial),
                        provider=step.provider.name,
                        cause=e,
                    ) from e
                plan.failed(step, e, time.monotonic() - t0)
                self._note(step, e, plan)
                continue
            finally:
                aclose = getattr(chunks, "aclose", None)
                if aclose is not None:
                    await aclose()
            plan.succeeded(step, time.monotonic() - t0)
            return
        raise plan.error()

    async def alist_models(self, ctx: CallContext) -> list[Model]:
        return await self.providers[0].alist_models(ctx)

    def list_models(self, ctx: CallContext) -> list[Model]:
        return self.providers[0].list_models(ctx)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.providers!r}, shuffle={self.shuffle}, "
            f"single_provider_retry={self.single_provider_retry}, max_retries={self.max_retries})"
        )


class IterListProvider(RetryProvider):
    """Try each provider once, in order (shuffled per request with ``shuffle=True``); no retries."""

    def __init__(self, providers: Iterable[Any], shuffle: bool = False, **kwargs: Any) -> None:
        super().__init__(providers, shuffle=shuffle, single_provider_retry=False, max_retries=0, **kwargs)
