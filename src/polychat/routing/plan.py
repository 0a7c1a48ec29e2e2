"""The failover decisions, as pure code: which provider to try next, and after how long.

:class:`FailoverPlan` is consulted by the sync and the async shells alike (:mod:`polychat.routing.retry`); it never
sleeps or sends anything, so every rule of the contract is testable without a clock or a network:

* connection errors and timeouts: the next provider at once; the same one again (with backoff) only when no
  other is left;
* 429: the same provider after ``Retry-After`` only when that is within the cap and no other provider is left
  (or ``single_provider_retry``); otherwise the next provider at once (its breaker cools it down meanwhile);
* 408, 409, 5xx, 529 (and ``x-should-retry: true``): the same provider with exponential backoff and full jitter,
  up to ``max_retries`` times, then the next;
* anything else (400, 401, 403, 404, 422, a missing key, an empty answer): the next provider, never the same one.

Providers behind an open circuit breaker are moved to the end of the order; when only such providers are left
they are tried anyway, in order — a plan never gives up without trying. Past the overall ``deadline_at`` it stops.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from msgspec import Struct, field

from .. import _constants as C
from ..errors import (
    AllProvidersFailedError,
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    Attempt,
    RateLimitError,
)

if TYPE_CHECKING:
    from .._proxy import ProxyConfig
    from .._record import CallRecord
    from ..providers.base import Provider
    from ..types import ChatCompletion
    from .breaker import CircuitBreaker


def backoff_delay(retry_number: int, rng: random.Random | None = None) -> float:
    """Full jitter: uniform(0, min(cap, base * 2**n)) for the n-th retry (n from 0)."""
    ceiling = min(C.BACKOFF_CAP, C.BACKOFF_BASE * (2**retry_number))
    return (rng or random).uniform(0, ceiling)


def is_retryable(error: BaseException) -> bool:
    return isinstance(error, APIError) and error.retryable


class Step(Struct):
    provider: Provider
    delay: float
    index: int
    retry: int
    #: "attempt", "hedge" or "resume"; set when the step starts.
    kind: str = "attempt"
    #: time.monotonic() when it started and when its first content chunk arrived (set by the attempt).
    started_at: float = 0.0
    first_token_at: float | None = None


class FailoverPlan(Struct):
    providers: Sequence[Provider]
    max_retries: int
    single_provider_retry: bool = False
    model: str = ""
    rng: random.Random | None = None
    breaker: CircuitBreaker | None = None
    deadline_at: float | None = None
    retry_after_cap: float = C.RETRY_AFTER_CAP
    attempts: list[Attempt] = field(default_factory=list)
    #: The call's record (``response.attempts``, tracing); None for a chain called inside another chain.
    record: CallRecord | None = None
    #: The proxy route in force for each provider (for the record), given by the shell.
    proxy_of: Any = None
    _order: list[Provider] = field(default_factory=list)
    _deferred: set[int] = field(default_factory=set)
    _index: int = 0
    _retry: int = 0
    _next_delay: float = 0.0
    _started: bool = False
    _deadline_hit: bool = False

    def __post_init__(self) -> None:
        self._order = list(self.providers[:1] if self.single_provider_retry else self.providers)

    # -- choosing --------------------------------------------------------------------------------------------------

    def next_step(self) -> Step | None:
        """The next try, or None when the plan is spent. Calling it again without a result gives the same step."""
        if self._index >= len(self._order):
            return None
        if self._retry == 0:
            self._skip_open_breakers()
        delay = self._next_delay if self._started else 0.0
        if self.deadline_at is not None and time.monotonic() + delay >= self.deadline_at:
            self._deadline_hit = True
            return None
        self._started = True
        return Step(self._order[self._index], delay, self._index, self._retry)

    def _skip_open_breakers(self) -> None:
        if self.breaker is None:
            return
        i = self._index
        while i < len(self._order) and id(self._order[i]) not in self._deferred:
            if not self.breaker.is_open(self._order[i].breaker_key):
                break
            i += 1
        if i == self._index:
            return
        if i >= len(self._order) or id(self._order[i]) in self._deferred:
            return  # only open (or already deferred) providers left: try them in order
        # Move the open ones behind the rest; they get a last chance if everything else fails.
        skipped = self._order[self._index : i]
        self._deferred.update(id(p) for p in skipped)
        self._order[self._index :] = self._order[i:] + skipped

    def hedge_step(self, current: Step) -> Step | None:
        """The provider to race against ``current``: the next one in order whose circuit is not open (None if there
        is none: a hedge is extra load, never a reason to send to a provider known to be failing)."""
        for nxt in range(current.index + 1, len(self._order)):
            candidate = self._order[nxt]
            if self.breaker is None or not self.breaker.is_open(candidate.breaker_key):
                return Step(candidate, 0.0, nxt, 0)
        return None

    # -- results ---------------------------------------------------------------------------------------------------

    def failed(self, step: Step, error: BaseException, elapsed: float, *, may_retry: bool = True) -> None:
        retryable = is_retryable(error)
        self._ended(step, elapsed, "failed", error, retryable)
        if self.breaker is not None:
            self.breaker.failure(step.provider.breaker_key, error)
        if not may_retry or step.index != self._index:
            return
        others_left = self._index + 1 < len(self._order)
        delay: float | None = None
        if retryable and self._retry < self.max_retries:
            if isinstance(error, RateLimitError):
                ra = error.retry_after
                if not others_left:
                    if ra is None:
                        delay = backoff_delay(self._retry, self.rng)
                    elif ra <= self.retry_after_cap:
                        delay = ra
            elif isinstance(error, APIConnectionError):  # includes timeouts: switching beats waiting
                if not others_left:
                    delay = backoff_delay(self._retry, self.rng)
            else:
                delay = backoff_delay(self._retry, self.rng)
        if delay is not None:
            self._retry += 1
            self._next_delay = delay
        else:
            self.advance()

    def advance(self) -> None:
        """Done with the current provider: on to the next, at once."""
        self.advance_past(self._index)

    def advance_past(self, index: int) -> None:
        self._index = max(self._index, index + 1)
        self._retry = 0
        self._next_delay = 0.0

    def succeeded(self, step: Step, elapsed: float, result: ChatCompletion | None = None) -> None:
        self._ended(step, elapsed, "ok", result=result)
        if self.breaker is not None:
            self.breaker.success(step.provider.breaker_key)

    def lost(self, step: Step) -> None:
        """A hedge race's other side won: ``step`` was cancelled (not a failure: nothing counts against it)."""
        self._ended(step, time.monotonic() - step.started_at if step.started_at else 0.0, "lost")

    def _ended(
        self,
        step: Step,
        elapsed: float,
        outcome: str,
        error: BaseException | None = None,
        retryable: bool = False,
        result: ChatCompletion | None = None,
    ) -> None:
        model = self.model or step.provider.default_model or ""
        if self.record is not None:  # it times the attempt itself and tells the call's trace
            attempt = self.record.ended(step, model, error, outcome, retryable, result)
        else:
            status = error.status_code if isinstance(error, APIStatusError) else None
            attempt = Attempt(
                step.provider.name, model, error, status, retryable, elapsed, kind=step.kind, outcome=outcome
            )
        self.attempts.append(attempt)

    def started(self, step: Step, kind: str = "attempt") -> None:
        step.kind = kind
        if self.record is not None:
            proxy: ProxyConfig | None = self.proxy_of(step.provider) if self.proxy_of is not None else None
            self.record.started(step, self, proxy)
        if self.breaker is not None:
            self.breaker.acquire(step.provider.breaker_key)

    # -- giving up -------------------------------------------------------------------------------------------------

    def error(self) -> BaseException:
        """What to raise when the plan is spent.

        One provider tried (however often): its last error. Several, all refusing the request with the same
        client error: that error class, listing every attempt. Otherwise :class:`AllProvidersFailedError`.
        Every error raised carries ``.attempts``.
        """
        failures = [a for a in self.attempts if a.error is not None]
        last = failures[-1].error if failures else None
        if self._deadline_hit and (last is None or not isinstance(last, APITimeoutError)):
            err = APITimeoutError("Timed out: the overall deadline passed before any provider answered")
            err.attempts = list(self.attempts)
            if failures:
                summary = AllProvidersFailedError(self.attempts)
                err.message += ":\n" + summary.message.split(":\n", 1)[1]
            return err
        if last is None:
            return AllProvidersFailedError(self.attempts)
        if len({a.provider for a in failures}) == 1:
            if isinstance(last, APIError):
                last.attempts = list(self.attempts)
            return last
        summary = AllProvidersFailedError(self.attempts)
        if (
            isinstance(last, APIStatusError)
            and len({type(a.error) for a in failures}) == 1
            and not any(a.retryable for a in failures)
        ):
            same = type(last)(
                "Every provider rejected the request the same way:\n" + summary.message.split(":\n", 1)[1],
                status_code=last.status_code,
                provider=last.provider,
                body=last.body,
                headers=last.headers,
            )
            same.attempts = summary.attempts
            return same
        return summary
