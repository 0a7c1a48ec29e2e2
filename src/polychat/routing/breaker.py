"""Circuit breakers, one per provider endpoint, shared by every client in the process.

closed → open after ``threshold`` consecutive failures (or at once on an authentication failure, for a long
cooldown) → half-open when the cooldown has passed: one probe request is let through → closed on success, open
again with a doubled cooldown (up to ``max_cooldown``) on failure. A 429 with Retry-After opens the breaker for
exactly that long, so other clients in the process don't hammer a provider that asked for quiet.

State lives behind :class:`BreakerStore`, a deliberately small interface, so a store shared between processes
(say, gateway replicas) can replace the in-memory one.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

from msgspec import Struct
from msgspec.structs import replace

from ..errors import APIConnectionError, APIError, AuthenticationError, PermissionDeniedError, RateLimitError

log = logging.getLogger("polychat")

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"


class BreakerState(Struct, frozen=True):
    state: str = CLOSED
    failures: int = 0
    open_until: float = 0.0
    cooldown: float = 0.0
    probe_started: float = 0.0


class BreakerStore(Protocol):
    """Where breaker states live. ``update`` must apply ``fn`` atomically and return the new state."""

    def get(self, key: str) -> BreakerState: ...

    def update(self, key: str, fn: _Update) -> BreakerState: ...


class _Update(Protocol):
    def __call__(self, state: BreakerState, /) -> BreakerState: ...


class InMemoryBreakerStore:
    def __init__(self) -> None:
        self._states: dict[str, BreakerState] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> BreakerState:
        return self._states.get(key) or BreakerState()

    def update(self, key: str, fn: _Update) -> BreakerState:
        with self._lock:
            new = fn(self._states.get(key) or BreakerState())
            self._states[key] = new
            return new

    def items(self) -> list[tuple[str, BreakerState]]:
        """A snapshot of every known endpoint's state (for metrics and ``polychat providers``)."""
        with self._lock:
            return list(self._states.items())

    def clear(self) -> None:
        with self._lock:
            self._states.clear()


class CircuitBreaker:
    def __init__(
        self,
        store: BreakerStore | None = None,
        *,
        threshold: int = 3,
        cooldown: float = 15.0,
        max_cooldown: float = 300.0,
        auth_cooldown: float = 3600.0,
        probe_timeout: float = 60.0,
    ) -> None:
        self.store: BreakerStore = store or InMemoryBreakerStore()
        self.threshold = threshold
        self.cooldown = cooldown
        self.max_cooldown = max_cooldown
        self.auth_cooldown = auth_cooldown
        self.probe_timeout = probe_timeout

    def is_open(self, key: str, now: float | None = None) -> bool:
        """True when requests to ``key`` should be skipped for now (cheap: one dict lookup when closed)."""
        st = self.store.get(key)
        if st.state == CLOSED:
            return False
        now = time.monotonic() if now is None else now
        if st.state == OPEN:
            return now < st.open_until
        # half-open: one probe at a time (a probe that never reported back is forgotten after probe_timeout)
        return now - st.probe_started < self.probe_timeout

    def acquire(self, key: str) -> None:
        """A request to ``key`` is starting; an open breaker whose cooldown passed lets this one probe."""
        now = time.monotonic()

        def fn(st: BreakerState) -> BreakerState:
            if st.state == OPEN and now >= st.open_until:
                log.info("polychat: circuit for %s half-open; probing", key)
                return replace(st, state=HALF_OPEN, probe_started=now)
            return st

        if self.store.get(key).state != CLOSED:
            self.store.update(key, fn)

    def success(self, key: str) -> None:
        st = self.store.get(key)
        if st.state == CLOSED and st.failures == 0:
            return
        if st.state != CLOSED:
            log.info("polychat: circuit for %s closed", key)
        self.store.update(key, lambda _: BreakerState())

    def failure(self, key: str, error: BaseException) -> None:
        """Count a failure that says something about the provider (not a bad request)."""
        if not counts_against_provider(error):
            return
        now = time.monotonic()
        forced: float | None = None
        if isinstance(error, (AuthenticationError, PermissionDeniedError)):
            forced = self.auth_cooldown
        elif isinstance(error, RateLimitError) and error.retry_after:
            forced = error.retry_after

        def fn(st: BreakerState) -> BreakerState:
            failures = st.failures + 1
            if forced is not None:
                return BreakerState(OPEN, failures, now + forced, max(st.cooldown, forced))
            if st.state == HALF_OPEN:
                cooldown = min(self.max_cooldown, max(self.cooldown, st.cooldown * 2))
                return BreakerState(OPEN, failures, now + cooldown, cooldown)
            if failures >= self.threshold:
                return BreakerState(OPEN, failures, now + self.cooldown, self.cooldown)
            return replace(st, failures=failures)

        new = self.store.update(key, fn)
        if new.state == OPEN:
            log.warning("polychat: circuit for %s open for %.1fs (%s)", key, new.open_until - now, type(error).__name__)

    def state(self, key: str) -> str:
        st = self.store.get(key)
        if st.state == OPEN and time.monotonic() >= st.open_until:
            return HALF_OPEN
        return st.state


def counts_against_provider(error: BaseException) -> bool:
    """Outages, overloads, timeouts and bad credentials count; a request the provider rightly refused does not."""
    if isinstance(error, (AuthenticationError, PermissionDeniedError, RateLimitError, APIConnectionError)):
        return True
    return isinstance(error, APIError) and error.retryable


#: The breaker every client in this process shares unless given another.
DEFAULT_BREAKER = CircuitBreaker()
