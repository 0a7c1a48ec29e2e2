"""Delayed hedging: race the current provider against the next one; the first with content wins.

The race is async (tasks can be cancelled at any point, connection and all): :func:`arace_open` and
:func:`arace_complete`. Their sync faces :func:`race_open` and :func:`race_complete` run it on the bridge loop
(:mod:`._bridge`, which loads asyncio only when a sync call hedges). The loser is cancelled and its connection
closed; every failure is recorded in the plan.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import APIError
from .attempt import AsyncAttempt, completion_empty, empty_answer, has_content
from .plan import FailoverPlan, Step

if TYPE_CHECKING:
    from .._context import CallContext
    from .._failover import CallPolicy
    from .._request import ChatRequest
    from ..types import ChatCompletion, ChatCompletionChunk
    from .retry import RetryProvider

log = logging.getLogger("polychat")
T = TypeVar("T")


async def _noop() -> None:
    return None


async def race(
    chain: RetryProvider,
    plan: FailoverPlan,
    step: Step,
    policy: CallPolicy,
    run: Callable[[Step], Awaitable[tuple[T, Callable[[], Awaitable[None]]]]],
    ok: Callable[[T], bool],
) -> tuple[Step, T, Callable[[], Awaitable[None]], float]:
    """Start ``step``; if it has not succeeded after ``hedge_after`` s, start the next provider as well.

    ``run(step)`` returns the attempt's result and how to release it; ``ok(result)`` says whether it counts.
    Returns the winner, its result, its release and when it started (``time.monotonic()``: each attempt's time is
    counted from its own start, hedge wait included). Raises the last error when every raced attempt failed (all
    recorded in ``plan``).
    """
    import asyncio

    assert policy.hedge_after is not None
    tasks: dict[asyncio.Task[Any], Step] = {asyncio.ensure_future(run(step)): step}
    started = {step.index: time.monotonic()}
    done, _ = await asyncio.wait(tasks, timeout=policy.hedge_after)
    hedge = plan.hedge_step(step) if not done else None
    if hedge is not None:
        log.info(
            "polychat: no first token from %s after %.2fs; hedging with %s",
            step.provider.name,
            policy.hedge_after,
            hedge.provider.name,
        )
        plan.started(hedge, "hedge")
        started[hedge.index] = time.monotonic()
        tasks[asyncio.ensure_future(run(hedge))] = hedge
    last_error: BaseException | None = None
    try:
        while tasks:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                s = tasks.pop(task)
                exc = task.exception()
                if exc is None:
                    result, release = task.result()
                    if ok(result):
                        if tasks:
                            log.info("polychat: %s answered first; cancelling the other", s.provider.name)
                        return s, result, release, started[s.index]
                    await release()
                    exc = empty_answer(s.provider)
                if not isinstance(exc, APIError):
                    raise exc
                last_error = exc
                elapsed = time.monotonic() - started[s.index]
                if hedge is None:
                    chain._fail(plan, s, exc, elapsed)
                else:
                    plan.failed(s, exc, elapsed, may_retry=False)
    finally:
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
            for loser in tasks.values():
                plan.lost(loser)
    if hedge is not None:
        plan.advance_past(hedge.index)
    assert last_error is not None
    raise last_error


async def arace_open(
    chain: RetryProvider, plan: FailoverPlan, step: Step, request: ChatRequest, ctx: CallContext, policy: CallPolicy
) -> tuple[Step, list[ChatCompletionChunk], AsyncIterator[ChatCompletionChunk], Callable[[], Awaitable[None]], float]:
    """The hedged open of a stream: the winner, its held chunks, the rest, its release and when it started."""

    async def run(s: Step) -> tuple[tuple[list[ChatCompletionChunk], AsyncAttempt], Callable[[], Awaitable[None]]]:
        attempt = AsyncAttempt(s, request, ctx, policy, stream=True)
        try:
            return (await attempt.open(), attempt), attempt.aclose
        except BaseException:
            await attempt.aclose()
            raise

    winner, (held, attempt), release, started = await race(
        chain, plan, step, policy, run, lambda r: policy.allow_empty or any(has_content(c) for c in r[0])
    )
    return winner, held, attempt.rest(), release, started


async def arace_complete(
    chain: RetryProvider, plan: FailoverPlan, step: Step, request: ChatRequest, ctx: CallContext, policy: CallPolicy
) -> ChatCompletion:
    async def run(s: Step) -> tuple[ChatCompletion, Callable[[], Awaitable[None]]]:
        return await AsyncAttempt(s, request, ctx, policy, stream=False).complete(), _noop

    winner, result, _, started = await race(
        chain, plan, step, policy, run, lambda r: policy.allow_empty or not completion_empty(r)
    )
    plan.succeeded(winner, time.monotonic() - started, result)
    return result


# -- the sync faces: the same race, run on the bridge loop --------------------------------------------------------


def race_open(
    chain: RetryProvider, plan: FailoverPlan, step: Step, request: ChatRequest, ctx: CallContext, policy: CallPolicy
) -> tuple[Step, list[ChatCompletionChunk], Iterator[ChatCompletionChunk], Callable[[], None], float]:
    """:func:`arace_open` for sync code: the rest of the winner's stream is read, and released, on the bridge loop."""
    from . import _bridge  # asyncio loads only when a sync call hedges

    winner, held, rest, release, started = _bridge.run(arace_open(chain, plan, step, request, ctx, policy))

    async def arelease() -> None:
        await release()

    return winner, held, _bridge.iterate(rest), lambda: _bridge.run(arelease()), started


def race_complete(
    chain: RetryProvider, plan: FailoverPlan, step: Step, request: ChatRequest, ctx: CallContext, policy: CallPolicy
) -> ChatCompletion:
    """:func:`arace_complete` for sync code."""
    from . import _bridge

    return _bridge.run(arace_complete(chain, plan, step, request, ctx, policy))
