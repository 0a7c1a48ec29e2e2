"""What one call did: every attempt (``response.attempts``, ``stream.attempts``) and, when tracing is on, its spans.

The client opens a :class:`CallRecord` per call and hands it down in the :class:`~polychat._context.CallContext`;
the failover plan reports each attempt's start and end to it; the client closes it when the answer is complete,
failed, or the caller stopped reading. Attempts still running then (a stream closed early) are recorded as
``closed``. Without tracing this is a list and two attribute checks per call.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from . import _tracing
from .errors import APIError, APIStatusError, Attempt

if TYPE_CHECKING:
    from ._request import ChatRequest
    from .routing.plan import FailoverPlan, Step
    from .types import ChatCompletion


class CallRecord:
    __slots__ = ("attempts", "done", "live", "trace")

    def __init__(self, request: ChatRequest) -> None:
        #: Every finished attempt, in the order they ended.
        self.attempts: list[Attempt] = []
        #: Attempts started and not yet ended.
        self.live: list[Step] = []
        self.done = False
        tracer = _tracing.tracer()
        self.trace: _tracing.CallTrace | None = (
            _tracing.CallTrace(tracer, request, request.stream) if tracer is not None else None
        )

    # -- from the failover plan -----------------------------------------------------------------------------------

    def started(self, step: Step, plan: FailoverPlan, proxy: Any) -> None:
        step.started_at = time.monotonic()
        self.live.append(step)
        if self.trace is not None:
            url = proxy.url_for("https") if proxy is not None and not proxy.direct else None
            self.trace.attempt_started(step, plan, url)

    def ended(
        self,
        step: Step,
        model: str,
        error: BaseException | None,
        outcome: str,
        retryable: bool = False,
        result: ChatCompletion | None = None,
    ) -> Attempt:
        now = time.monotonic()
        started = step.started_at or now
        first = step.first_token_at
        attempt = Attempt(
            step.provider.name,
            model,
            error,
            error.status_code if isinstance(error, APIStatusError) else None,
            retryable,
            now - started,
            kind=step.kind,
            outcome=outcome,
            ttft=first - started if first is not None else None,
        )
        for i, s in enumerate(self.live):
            if s is step:
                del self.live[i]
                break
        self.attempts.append(attempt)
        if self.trace is not None:
            self.trace.attempt_ended(step, attempt, result)
        return attempt

    # -- from the client ------------------------------------------------------------------------------------------

    def chunk(self, chunk: Any) -> None:
        """A chunk that reached the caller (a ChatCompletionChunk)."""
        if self.trace is not None:
            self.trace.chunk(chunk, self.live)

    def finish(self, result: ChatCompletion | None = None, error: BaseException | None = None) -> None:
        """The call is over: answered (``result`` for non-streams), failed (``error``), or stopped by the caller."""
        if self.done:
            return
        self.done = True
        if error is not None and not isinstance(error, Exception):
            error = None  # cancelled, interrupted, or a generator closed: the caller stopped, nothing failed
        if isinstance(error, APIError) and not error.attempts:
            error.attempts = self.attempts  # e.g. a stream interrupted after content: what led up to it
        for step in list(self.live):
            self.ended(step, "", None, "closed")
        if self.trace is not None:
            self.trace.end(self.attempts, result, error)
