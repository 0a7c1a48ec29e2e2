"""RetryProvider's failover loop: take the plan's next step, wait its delay, attempt it, record how it went.

Every decision is the plan's (:mod:`polychat.routing.plan`), every deadline the attempt's
(:mod:`polychat.routing.attempt`), the bookkeeping of a stream :class:`~polychat.routing._stream.StreamRun`'s;
this is only the loop. A stream holds back chunks until the first one with content, so a provider failing before
it says anything is replaced invisibly.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from .._timeouts import asleep
from ..errors import APIError
from ..routing._stream import StreamRun
from ..routing.attempt import AsyncAttempt, completion_empty, empty_answer
from ..routing.hedge import arace_complete, arace_open

if TYPE_CHECKING:
    from .._context import CallContext
    from .._request import ChatRequest
    from ..routing.retry import RetryProvider
    from ..types import ChatCompletion, ChatCompletionChunk


async def complete(chain: RetryProvider, request: ChatRequest, ctx: CallContext) -> ChatCompletion:
    policy = chain.resolve(ctx)
    plan = chain.plan(request, policy, ctx)
    while (step := plan.next_step()) is not None:
        if step.delay:
            await asleep(step.delay)
        plan.started(step)
        if policy.hedge_after is not None and plan.hedge_step(step) is not None:
            try:
                return await arace_complete(chain, plan, step, request, ctx, policy)
            except APIError:
                continue
        attempt = AsyncAttempt(step, request, ctx, policy, stream=False)
        try:
            result = await attempt.complete()
            if not policy.allow_empty and completion_empty(result):
                raise empty_answer(step.provider)
        except APIError as e:
            chain._fail(plan, step, e, attempt.elapsed)
            continue
        plan.succeeded(step, attempt.elapsed, result)
        return result
    raise plan.error()


async def stream(chain: RetryProvider, request: ChatRequest, ctx: CallContext) -> AsyncIterator[ChatCompletionChunk]:
    run = StreamRun(chain, request, ctx)
    plan, policy = run.plan, run.policy
    while (step := plan.next_step()) is not None:
        if step.delay:
            await asleep(step.delay)
        req = run.request_for(step)
        plan.started(step, run.kind)
        # Open: up to the first content chunk. Failures here are invisible to the caller.
        if run.hedging(step):
            try:
                step, held, rest, release, t0 = await arace_open(chain, plan, step, req, ctx, policy)
            except APIError:
                continue
        else:
            attempt = AsyncAttempt(step, req, ctx, policy, stream=True)
            try:
                held = await attempt.open()
            except APIError as e:
                await attempt.aclose()
                run.open_failed(step, e, attempt.elapsed)
                continue
            rest, release, t0 = attempt.rest(), attempt.aclose, attempt.started
        # Times are counted from the attempt's start: success and failure alike include the first token.
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
            close_rest = getattr(rest, "aclose", None)
            if close_rest is not None:
                await close_rest()
            await release()
        plan.succeeded(step, time.monotonic() - t0)
        return
    raise run.give_up()
