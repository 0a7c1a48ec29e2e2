"""RetryProvider and IterListProvider: providers made of providers, tried per :class:`FailoverPlan`.

The shells here sleep, call and record; every decision is the plan's (:mod:`.plan`), every deadline the
attempt's (:mod:`.attempt`). A stream holds back chunks until the first one with content, so a provider failing
before it says anything is replaced invisibly. Once content has reached the caller, a failure raises
:class:`~polychat.errors.StreamInterruptedError` with the partial text — or, with ``resume=True``, the answer
continues on the next provider, with repeated text trimmed and the chunks saying who produced them.
"""

from __future__ import annotations

import copy
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from .. import _constants as C
from .._failover import UNSET, CallPolicy, FailoverPolicy
from ..errors import APIError, BadRequestError, ConfigError, StreamInterruptedError
from ..providers.base import Capabilities, Provider, as_provider
from .attempt import AsyncAttempt, SyncAttempt, chunk_text, completion_empty, empty_answer, has_content
from .breaker import DEFAULT_BREAKER, CircuitBreaker
from .hedge import race_complete, race_open
from .plan import FailoverPlan, Step
from .resume import continuation_request, overlap, window_for

if TYPE_CHECKING:
    from .._context import CallContext
    from .._request import ChatRequest
    from ..types import ChatCompletion, ChatCompletionChunk, Model

log = logging.getLogger("polychat")
T = TypeVar("T")


class _Resumer:
    """After a resume: marks the new provider's chunks and drops text that repeats the partial answer."""

    def __init__(self, partial: str, resumed_from: str) -> None:
        self.partial = partial
        self.resumed_from = resumed_from
        self.window = window_for(partial)
        self.held: list[ChatCompletionChunk] = []
        self.text = ""
        self.decided = self.window == 0

    def feed(self, chunk: ChatCompletionChunk) -> list[ChatCompletionChunk]:
        chunk.resumed_from = self.resumed_from
        if self.decided:
            return [chunk]
        self.held.append(chunk)
        self.text += chunk_text(chunk)
        return self.flush() if len(self.text) >= self.window else []

    def flush(self) -> list[ChatCompletionChunk]:
        if self.decided:
            return []
        self.decided = True
        drop = overlap(self.partial, self.text)
        if drop:
            log.info("polychat: dropped %d repeated characters from the resumed answer", drop)
        for chunk in self.held:
            for choice in chunk.choices:
                if drop <= 0:
                    break
                if choice.index == 0 and choice.delta.content:
                    cut = min(drop, len(choice.delta.content))
                    choice.delta.content = choice.delta.content[cut:]
                    drop -= cut
        held, self.held = self.held, []
        return held


class _StreamRun:
    """The bookkeeping of one streamed call, shared by the sync and async shells.

    It remembers what reached the caller (``partial``), builds the continuation request after a resume, passes
    chunks through the overlap trimmer, and decides what a failure after an attempt opened means: an ordinary
    failover (nothing reached the caller), a resume, or :class:`StreamInterruptedError`.
    """

    def __init__(self, chain: RetryProvider, request: ChatRequest, ctx: CallContext) -> None:
        self.chain = chain
        self.request = request
        self.policy = chain.resolve(ctx)
        self.plan = chain.plan(request, self.policy, ctx)
        self.partial: list[str] = []
        self.resumer: _Resumer | None = None
        self.last_step: Step | None = None
        #: Providers that refused the partial answer as an assistant prefill during this call.
        self.no_prefill: set[str] = set()
        self.prefilled = False

    def request_for(self, step: Step) -> ChatRequest:
        if not self.partial or self.last_step is None:
            return self.request
        text = "".join(self.partial)
        self.resumer = _Resumer(text, self.last_step.provider.name)
        self.prefilled = step.provider.capabilities.prefill and step.provider.breaker_key not in self.no_prefill
        return continuation_request(self.request, text, prefill=self.prefilled)

    def open_failed(self, step: Step, error: APIError, elapsed: float) -> None:
        """The attempt failed before its first content. A provider that claims prefill but refuses it (a 400 on
        the continuation) is asked again at once with a continuation instruction instead: the plan is left as it
        is, so its next step is this one again."""
        if self.prefilled and isinstance(error, BadRequestError) and step.provider.breaker_key not in self.no_prefill:
            self.no_prefill.add(step.provider.breaker_key)
            self.plan.failed(step, error, elapsed, may_retry=False)  # recorded (an attempt that failed), no move
            log.warning(
                "polychat: %s refused the partial answer as a prefill (%s); asking it to continue instead",
                step.provider.name,
                error,
            )
            return
        self.chain._fail(self.plan, step, error, elapsed)

    @property
    def kind(self) -> str:
        """What the next attempt is: the first try of the answer, or a continuation of it."""
        return "attempt" if self.resumer is None else "resume"

    def hedging(self, step: Step) -> bool:
        return self.policy.hedge_after is not None and self.plan.hedge_step(step) is not None

    def check_opened(self, step: Step, held: list[ChatCompletionChunk]) -> None:
        if not self.policy.allow_empty and not any(has_content(c) for c in held):
            raise empty_answer(step.provider)

    def emit(self, chunk: ChatCompletionChunk) -> Iterator[ChatCompletionChunk]:
        for c in self.resumer.feed(chunk) if self.resumer is not None else (chunk,):
            self.partial.append(chunk_text(c))
            yield c

    def finish(self) -> Iterator[ChatCompletionChunk]:
        for c in self.resumer.flush() if self.resumer is not None else ():
            self.partial.append(chunk_text(c))
            yield c

    def failed(self, step: Step, error: APIError, elapsed: float) -> None:
        """A failure after the attempt opened: returns when the next step should be tried, raises otherwise."""
        if isinstance(error, StreamInterruptedError):
            raise error
        plan = self.plan
        if not self.partial:  # nothing reached the caller (an empty answer): an ordinary failure
            self.chain._fail(plan, step, error, elapsed)
            return
        plan.failed(step, error, elapsed, may_retry=False)
        plan.advance_past(step.index)
        if self.policy.resume and plan.next_step() is not None:
            log.warning("polychat: %s failed mid-stream (%s); resuming on the next provider", step.provider.name, error)
            self.last_step = step
            return
        raise self.chain._interrupted(step, error, "".join(self.partial)) from error

    def give_up(self) -> BaseException:
        if self.partial and self.last_step is not None:
            return self.chain._interrupted(self.last_step, self.plan.error(), "".join(self.partial))
        return self.plan.error()


class RetryProvider(Provider):
    """Try ``providers`` in order (shuffled per request with ``shuffle=True``), each up to ``max_retries`` more
    times for retryable errors; with ``single_provider_retry=True`` only the first, up to ``max_retries`` retries.

    Providers may be classes (instantiated from the environment) or instances; one class may appear twice with
    different settings. Failover switches (each also settable per client and per call; the call's beat the
    chain's, which beat the client's; None leaves the switch to the client; see :class:`polychat.FailoverPolicy`):

    * ``first_token_timeout`` / ``idle_timeout``: seconds to the first content chunk / between chunks (streams);
    * ``deadline``: seconds for the whole call, retries and failovers included;
    * ``hedge_after``: seconds without a first token after which the next provider is started too;
    * ``resume``: continue an interrupted stream on the next provider instead of raising (default False);
    * ``allow_empty``: accept empty answers instead of failing over (default False).

    ``breaker``: a :class:`CircuitBreaker` (default: the process-wide one), or False for none.
    """

    def __init__(
        self,
        providers: Iterable[Any],
        shuffle: bool = False,
        single_provider_retry: bool = False,
        max_retries: int = C.RETRY_PROVIDER_MAX_RETRIES,
        *,
        first_token_timeout: float | None = None,
        idle_timeout: float | None = None,
        response_timeout: float | None = None,
        deadline: float | None = None,
        hedge_after: float | None = None,
        resume: bool | None = None,
        allow_empty: bool | None = None,
        breaker: CircuitBreaker | bool | None = None,
        retry_after_cap: float = C.RETRY_AFTER_CAP,
        name: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._specs = list(providers)
        if not self._specs:
            raise ConfigError(f"{type(self).__name__} needs at least one provider")
        self.providers = [as_provider(p) for p in self._specs]
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ConfigError(f"max_retries must be a whole number >= 0, got {max_retries!r}")
        self.failover = FailoverPolicy.checked(
            {
                "first_token_timeout": first_token_timeout,
                "idle_timeout": idle_timeout,
                "response_timeout": response_timeout,
                "deadline": deadline,
                "hedge_after": hedge_after,
                "resume": resume,
                "allow_empty": allow_empty,
            }
        )
        super().__init__(name=name or "+".join(p.name for p in self.providers))
        self.shuffle = shuffle
        self.single_provider_retry = single_provider_retry
        self.max_retries = max_retries
        self.breaker: CircuitBreaker | None = (
            DEFAULT_BREAKER if breaker is None or breaker is True else (breaker or None)
        )
        self.retry_after_cap = retry_after_cap
        self._rng = rng or random.Random()
        self._policies: dict[FailoverPolicy, CallPolicy] = {}

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

    # -- per call ------------------------------------------------------------------------------------------------

    def resolve(self, ctx: CallContext) -> CallPolicy:
        """This call's failover settings: the call's, else this chain's, else the client's."""
        if ctx.failover is UNSET and ctx.client_failover.deadline is None and self.failover.deadline is None:
            # The common call: no per-call switches and nothing time-based, so the policy is the same every time.
            cached = self._policies.get(ctx.client_failover)
            if cached is None:
                cached = self._policies[ctx.client_failover] = CallPolicy.resolve(
                    UNSET, self.failover, ctx.client_failover
                )
            return cached
        return CallPolicy.resolve(ctx.failover, self.failover, ctx.client_failover)

    def plan(self, request: ChatRequest, policy: CallPolicy, ctx: CallContext | None = None) -> FailoverPlan:
        order = list(self.providers)
        if self.shuffle:
            self._rng.shuffle(order)
        return FailoverPlan(
            order,
            self.max_retries,
            self.single_provider_retry,
            request.model,
            self._rng,
            breaker=self.breaker,
            deadline_at=policy.deadline_at,
            retry_after_cap=self.retry_after_cap,
            record=ctx.record if ctx is not None else None,
            proxy_of=ctx.proxy_for if ctx is not None and ctx.record is not None else None,
        )

    def _note(self, step: Step, error: BaseException, plan: FailoverPlan) -> None:
        nxt = plan.next_step()
        if nxt is None:
            what = "giving up"
        elif nxt.provider is step.provider:
            what = f"retrying in {nxt.delay:.2f}s"
        else:
            what = f"switching to {nxt.provider.name}"
        log.warning("polychat: %s failed (%s: %s); %s", step.provider.name, type(error).__name__, error, what)

    def _fail(self, plan: FailoverPlan, step: Step, error: BaseException, elapsed: float) -> None:
        plan.failed(step, error, elapsed)
        self._note(step, error, plan)

    @staticmethod
    def _interrupted(step: Step, error: BaseException, partial: str) -> StreamInterruptedError:
        err = StreamInterruptedError(
            f"The stream from {step.provider.name} failed after content was sent: {error}",
            partial=partial,
            provider=step.provider.name,
            cause=error,
        )
        err.__cause__ = error
        return err

    # -- sync ----------------------------------------------------------------------------------------------------

    def complete(self, request: ChatRequest, ctx: CallContext) -> ChatCompletion:
        policy = self.resolve(ctx)
        plan = self.plan(request, policy, ctx)
        while (step := plan.next_step()) is not None:
            if step.delay:
                time.sleep(step.delay)
            plan.started(step)
            if policy.hedge_after is not None and plan.hedge_step(step) is not None:
                from . import _bridge  # asyncio loads only when a sync call hedges

                try:
                    return _bridge.run(race_complete(self, plan, step, request, ctx, policy))
                except APIError:
                    continue
            attempt = SyncAttempt(step, request, ctx, policy, stream=False)
            try:
                result = attempt.complete()
                if not policy.allow_empty and completion_empty(result):
                    raise empty_answer(step.provider)
            except APIError as e:
                self._fail(plan, step, e, attempt.elapsed)
                continue
            plan.succeeded(step, attempt.elapsed, result)
            return result
        raise plan.error()

    def stream(self, request: ChatRequest, ctx: CallContext) -> Iterator[ChatCompletionChunk]:
        run = _StreamRun(self, request, ctx)
        plan, policy = run.plan, run.policy
        while (step := plan.next_step()) is not None:
            if step.delay:
                time.sleep(step.delay)
            req = run.request_for(step)
            plan.started(step, run.kind)
            # Open: up to the first content chunk. Failures here are invisible to the caller.
            rest: Iterator[ChatCompletionChunk]
            close: Callable[[], None]
            if run.hedging(step):
                from . import _bridge  # asyncio loads only when a sync call hedges

                try:
                    step, held, arest, aclose, t0 = _bridge.run(race_open(self, plan, step, req, ctx, policy))
                except APIError:
                    continue
                rest, close = _bridge.iterate(arest), lambda aclose=aclose: _bridge.run(aclose())  # type: ignore[misc]
            else:
                attempt = SyncAttempt(step, req, ctx, policy, stream=True)
                try:
                    held = attempt.open()
                except APIError as e:
                    attempt.close()
                    run.open_failed(step, e, attempt.elapsed)
                    continue
                rest, close, t0 = attempt.rest(), attempt.close, attempt.started
            # Times are counted from the attempt's start: success and failure alike include the first token.
            try:
                run.check_opened(step, held)
                for chunk in _chain(held, rest):
                    yield from run.emit(chunk)
                yield from run.finish()
            except APIError as e:
                run.failed(step, e, time.monotonic() - t0)
                continue
            finally:
                getattr(rest, "close", _pass)()
                close()
            plan.succeeded(step, time.monotonic() - t0)
            return
        raise run.give_up()

    # -- async (the same steps, awaited) --------------------------------------------------------------------------

    async def acomplete(self, request: ChatRequest, ctx: CallContext) -> ChatCompletion:
        policy = self.resolve(ctx)
        plan = self.plan(request, policy, ctx)
        while (step := plan.next_step()) is not None:
            if step.delay:
                import asyncio

                await asyncio.sleep(step.delay)
            plan.started(step)
            if policy.hedge_after is not None and plan.hedge_step(step) is not None:
                try:
                    return await race_complete(self, plan, step, request, ctx, policy)
                except APIError:
                    continue
            attempt = AsyncAttempt(step, request, ctx, policy, stream=False)
            try:
                result = await attempt.complete()
                if not policy.allow_empty and completion_empty(result):
                    raise empty_answer(step.provider)
            except APIError as e:
                self._fail(plan, step, e, attempt.elapsed)
                continue
            plan.succeeded(step, attempt.elapsed, result)
            return result
        raise plan.error()

    async def astream(self, request: ChatRequest, ctx: CallContext) -> AsyncIterator[ChatCompletionChunk]:
        run = _StreamRun(self, request, ctx)
        plan, policy = run.plan, run.policy
        while (step := plan.next_step()) is not None:
            if step.delay:
                import asyncio

                await asyncio.sleep(step.delay)
            req = run.request_for(step)
            plan.started(step, run.kind)
            if run.hedging(step):
                try:
                    step, held, rest, aclose, t0 = await race_open(self, plan, step, req, ctx, policy)
                except APIError:
                    continue
            else:
                attempt = AsyncAttempt(step, req, ctx, policy, stream=True)
                try:
                    held = await attempt.open()
                except APIError as e:
                    await attempt.close()
                    run.open_failed(step, e, attempt.elapsed)
                    continue
                rest, aclose, t0 = attempt.rest(), attempt.close, attempt.started
            try:
                run.check_opened(step, held)
                for chunk in held:
                    for c in run.emit(chunk):
                        yield c
                async for chunk in rest:
                    for c in run.emit(chunk):
                        yield c
                for c in run.finish():
                    yield c
            except APIError as e:
                run.failed(step, e, time.monotonic() - t0)
                continue
            finally:
                aclose_rest = getattr(rest, "aclose", None)
                if aclose_rest is not None:
                    await aclose_rest()
                await aclose()
            plan.succeeded(step, time.monotonic() - t0)
            return
        raise run.give_up()

    # -- models --------------------------------------------------------------------------------------------------

    async def alist_models(self, ctx: CallContext) -> list[Model]:
        return await self.providers[0].alist_models(ctx)

    def list_models(self, ctx: CallContext) -> list[Model]:
        return self.providers[0].list_models(ctx)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.providers!r}, shuffle={self.shuffle}, "
            f"single_provider_retry={self.single_provider_retry}, max_retries={self.max_retries})"
        )


def _pass() -> None:
    return None


def _chain(held: list[T], rest: Iterator[T]) -> Iterator[T]:
    yield from held
    yield from rest


def default_chain(*, api_key: Any = None, base_url: str | None = None) -> Provider:
    """What ``Client()`` uses when no provider is given: the members of
    :func:`polychat.providers.defaults.default_members`, tried in that order."""
    from ..providers.defaults import default_members

    members = default_members(api_key=api_key, base_url=base_url)
    if len(members) == 1:
        return members[0]
    return RetryProvider(members, max_retries=1, name="default")


class IterListProvider(RetryProvider):
    """Try each provider once, in order (shuffled per request with ``shuffle=True``); no retries."""

    def __init__(self, providers: Iterable[Any], shuffle: bool = False, **kwargs: Any) -> None:
        super().__init__(providers, shuffle=shuffle, single_provider_retry=False, max_retries=0, **kwargs)
