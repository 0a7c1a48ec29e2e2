"""The failover decisions, as pure code: which provider to try next, and after how long.

:class:`FailoverPlan` is consulted by the sync and the async shells alike (:mod:`polychat.routing.retry`); it never
sleeps or sends anything, so every rule of the contract is testable without a clock or a network:

* connection errors and timeouts: next provider at once; the same provider again (with backoff) only when no
  other is left;
* 429: the same provider after ``Retry-After`` only when that is within the cap and no other provider is left (or
  ``single_provider_retry``); otherwise the next provider at once;
* 408, 409, 5xx, 529 (and ``x-should-retry: true``): the same provider with exponential backoff and full jitter,
  up to ``max_retries`` times, then the next;
* other errors (400, 401, 403, 404, 422, a missing key): the next provider, never the same one again.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .. import _constants as C
from ..errors import (
    AllProvidersFailedError,
    APIConnectionError,
    APIError,
    APIStatusError,
    Attempt,
    RateLimitError,
)

if TYPE_CHECKING:
    from ..providers.base import Provider


def backoff_delay(retry_number: int, rng: random.Random | None = None) -> float:
    """Full jitter: uniform(0, min(cap, base * 2**n)) for the n-th retry (n from 0)."""
    ceiling = min(C.BACKOFF_CAP, C.BACKOFF_BASE * (2**retry_number))
    return (rng or random).uniform(0, ceiling)


def is_retryable(error: BaseException) -> bool:
    return isinstance(error, APIError) and error.retryable


@dataclass
class Step:
    provider: Provider
    delay: float
    index: int
    retry: int


@dataclass
class FailoverPlan:
    providers: Sequence[Provider]
    max_retries: int
    single_provider_retry: bool = False
    model: str = ""
    rng: random.Random | None = None
    attempts: list[Attempt] = field(default_factory=list)
    _index: int = 0
    _retry: int = 0
    _next_delay: float = 0.0
    _started: bool = False

    def next_step(self) -> Step | None:
        """The next try, or None when the plan is spent."""
        limit = 1 if self.single_provider_retry else len(self.providers)
        if self._index >= limit:
            return None
        step = Step(self.providers[self._index], self._next_delay if self._started else 0.0, self._index, self._retry)
        self._started = True
        return step

    def failed(self, step: Step, error: BaseException, elapsed: float) -> None:
        status = error.status_code if isinstance(error, APIStatusError) else None
        retryable = is_retryable(error)
        self.attempts.append(
            Attempt(
                step.provider.name,
                self.model or step.provider.default_model or "",
                error,
                status,
                retryable,
                elapsed,
            )
        )
        others_left = not self.single_provider_retry and self._index + 1 < len(self.providers)
        can_retry_here = retryable and self._retry < self.max_retries
        delay: float | None = None
        if can_retry_here:
            if isinstance(error, RateLimitError):
                ra = error.retry_after
                if not others_left:
                    if ra is None:
                        delay = backoff_delay(self._retry, self.rng)
                    elif ra <= C.RETRY_AFTER_CAP:
                        delay = ra
            elif isinstance(error, APIConnectionError):
                if not others_left:
                    delay = backoff_delay(self._retry, self.rng)
            else:
                delay = backoff_delay(self._retry, self.rng)
        if delay is not None:
            self._retry += 1
            self._next_delay = delay
        else:
            self._index += 1
            self._retry = 0
            self._next_delay = 0.0

    def succeeded(self, step: Step, elapsed: float) -> None:
        self.attempts.append(Attempt(step.provider.name, self.model, None, None, False, elapsed))

    def error(self) -> BaseException:
        """What to raise when the plan is spent.

        One provider tried (however often): its last error. Several, all refusing the request with the same
        client error: that error class, listing every attempt. Otherwise :class:`AllProvidersFailedError`.
        Every error raised carries ``.attempts``.
        """
        failures = [a for a in self.attempts if a.error is not None]
        last = failures[-1].error if failures else None
        if last is None:
            return AllProvidersFailedError(self.attempts)
        if len({a.provider for a in failures}) == 1:
            last.attempts = list(self.attempts)  # type: ignore[attr-defined]
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
            same.attempts = summary.attempts  # type: ignore[attr-defined]
            return same
        return summary
