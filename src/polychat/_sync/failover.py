# Generated from src/polychat/_async/failover.py by scripts/unasync.py: do not edit.
# Edit the async source, then run `python scripts/unasync.py` (tests/test_unasync.py fails until then).
"""RetryProvider's failover loop: take the plan's next step, wait its delay, attempt it, record how it went.

Every decision is the plan's (:mod:`polychat.routing.plan`), every deadline the attempt's
(:mod:`polychat.routing.attempt`), the bookkeeping of a stream :class:`~polychat.routing._stream.StreamRun`'s;
this is only the loop. A stream holds back chunks until the first one with content, so a provider failing before
it says anything is replaced invisibly.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from .._timeouts import sleep
from ..errors import APIError
from ..routing._stream import StreamRun
from ..routing.attempt import SyncAttempt, completion_empty, empty_answer
from ..routing.hedge import race_complete, race_open

if TYPE_CHECKING:
    from .._context import CallContext
    from .._request import ChatRequest
    from ..routing.retry import RetryProvider
    from ..types import ChatCompletion, ChatCompletionChunk


def complete(chain: RetryProvider, request: ChatRequest, ctx: CallContext) -> ChatCompletion:
    policy = chain.resolve(ctx)
    plan = chain.plan(request, policy, ctx)
    while (step := plan.next_step()) is not None:
        if step.delay:
            sleep(step.delay)
        plan.started(step)
        if policy.hedge_after is not None and plan.hedge_step(step) is not None:
            try:
                return race_complete(chain, plan, step, request, ctx, policy)
            except APIError:
                continue
        attempt = SyncAttempt(step, request, ctx, policy, stream=False)
        try:
            result = attempt.complete()
            if not policy.allow_empty and completion_empty(result):
                raise empty_answer(step.provider)
        except APIError as e:
            chain._fail(plan, step, e, attempt.elapsed)
            continue
        plan.succeeded(step, attempt.elapsed, result)
        return result
    raise plan.error()


def stream(chain: RetryProvider, request: ChatRequest, ctx: CallContext) -> Iterator[ChatCompletionChunk]:
    run = StreamRun(chain, request, ctx)
    plan, policy = run.plan, run.policy
    while (step := plan.next_step()) is not None:
        if step.delay:
            sleep(step.delay)
        req = run.request_for(step)
        plan.started(step, run.kind)
        # Open: up to the first content chunk. Failures here are invisible to the caller.
        if run.hedging(step):
            try:
                step, held, rest, release, t0 = race_open(chain, plan, step, req, ctx, policy)
            except APIError:
                continue
        else:
            attempt = SyncAttempt(step, req, ctx, policy, stream=True)
            try:
                held = attempt.open()
            except APIError as e:
                attempt.close()
                run.open_failed(step, e, attempt.elapsed)
                continue
            rest, release, t0 = attempt.rest(), attempt.close, attempt.started
        # Times are counted from the attempt's start: success and failure alike include the first token.
        try:
            run.check_opened(step, held)
            for chunk in held:
                for c in run.emit(chunk):
                    yield c
            for chunk in rest:
                for c in run.emit(chunk):
                    yield c
            for c in run.finish():
                yield c
        except APIError as e:
            run.failed(step, e, time.monotonic() - t0)
            continue
        finally:
            close_rest = getattr(rest, "close", None)
            if close_rest is not None:
                close_rest()
            release()
        plan.succeeded(step, time.monotonic() - t0)
        return
    raise run.give_up()
