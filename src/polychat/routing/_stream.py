"""The bookkeeping of one streamed failover call, shared by the async shell and its generated sync twin.

:class:`StreamRun` remembers what reached the caller, builds the continuation request after a resume, trims text a
resumed provider repeats (:class:`Resumer`) and decides what a failure after an attempt opened means. It does no
I/O, so :mod:`polychat._async.failover` and :mod:`polychat._sync.failover` are only the loop around it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from ..errors import APIError, BadRequestError, StreamInterruptedError
from .attempt import chunk_text, empty_answer, has_content
from .resume import continuation_request, overlap, window_for

if TYPE_CHECKING:
    from .._context import CallContext
    from .._request import ChatRequest
    from ..types import ChatCompletionChunk
    from .plan import Step
    from .retry import RetryProvider

log = logging.getLogger("polychat")


class Resumer:
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


class StreamRun:
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
        self.resumer: Resumer | None = None
        self.last_step: Step | None = None
        #: Providers that refused the partial answer as an assistant prefill during this call.
        self.no_prefill: set[str] = set()
        self.prefilled = False

    def request_for(self, step: Step) -> ChatRequest:
        if not self.partial or self.last_step is None:
            return self.request
        text = "".join(self.partial)
        self.resumer = Resumer(text, self.last_step.provider.name)
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
