"""Circuit breakers shared through Redis: a breaker one process opens is open in every process using that Redis
(gateway workers and replicas, or several application processes).

Use it in a program with :func:`share_breakers` (every client in the process then shares through Redis), or give
``RetryProvider(breaker=CircuitBreaker(RedisBreakerStore(url)))``; ``polychat serve --redis-url`` does the former.

States live in one Redis hash (``polychat:breakers``), endpoint key → the state as JSON. :class:`BreakerState`
holds monotonic times, which mean nothing in another machine's process; the store writes wall-clock times and
converts back on reading. ``update`` is atomic through WATCH/MULTI (optimistic: retried when another process
wrote in between).

When Redis cannot be reached the breakers keep working on a copy in this process — a breaker is advice, and an
outage of the shared store must not stop requests — with one log line when Redis is lost and one when it is back;
Redis is retried at most once per :data:`RETRY_INTERVAL`.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import msgspec

from .._redact import redact_url
from .breaker import DEFAULT_BREAKER, BreakerState, InMemoryBreakerStore, _Update

log = logging.getLogger("polychat")

#: Seconds between attempts to reach Redis again after it failed.
RETRY_INTERVAL = 1.0
HASH = "polychat:breakers"

_encode = msgspec.json.encode
_decode = msgspec.json.Decoder(BreakerState).decode


class RedisBreakerStore:
    """A :class:`~polychat.routing.breaker.BreakerStore` in Redis (``url``: ``redis://[:password@]host:port/db``)."""

    def __init__(self, url: str, *, client: Any = None, key: str = HASH) -> None:
        from .._redis import sync_client

        self._shown = redact_url(url)
        self._client = client if client is not None else sync_client(url)
        self._key = key
        self._local = InMemoryBreakerStore()
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._next_try = 0.0
        from redis.exceptions import ConnectionError, TimeoutError, WatchError

        self._errors = (ConnectionError, TimeoutError, OSError)
        self._watch_error = WatchError

    def __repr__(self) -> str:
        return f"RedisBreakerStore({self._shown!r})"

    # -- the BreakerStore interface --------------------------------------------------------------------------

    def get(self, key: str) -> BreakerState:
        if not self._usable():
            return self._local.get(key)
        try:
            raw = self._client.hget(self._key, key)
        except self._errors as e:
            self._lost(e)
            return self._local.get(key)
        self._back()
        return _to_local(_decode(raw)) if raw else BreakerState()

    def update(self, key: str, fn: _Update) -> BreakerState:
        if not self._usable():
            return self._local.update(key, fn)
        try:
            new = self._update(key, fn)
        except self._errors as e:
            self._lost(e)
            return self._local.update(key, fn)
        self._back()
        self._local.update(key, lambda _: new)  # the copy used while Redis is away
        return new

    def items(self) -> list[tuple[str, BreakerState]]:
        """Every endpoint's state, as Redis has it (this process's copy while Redis is away)."""
        if not self._usable():
            return self._local.items()
        try:
            raw = self._client.hgetall(self._key)
        except self._errors as e:
            self._lost(e)
            return self._local.items()
        self._back()
        return [(k.decode() if isinstance(k, bytes) else k, _to_local(_decode(v))) for k, v in raw.items()]

    def clear(self) -> None:
        self._local.clear()
        try:
            self._client.delete(self._key)
        except self._errors as e:
            self._lost(e)

    # -- internals ----------------------------------------------------------------------------------------------

    def _update(self, key: str, fn: _Update) -> BreakerState:
        with self._client.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(self._key)
                    raw = pipe.hget(self._key, key)
                    new = fn(_to_local(_decode(raw)) if raw else BreakerState())
                    pipe.multi()
                    pipe.hset(self._key, key, _encode(_to_wall(new)))
                    pipe.execute()
                    return new
                except self._watch_error:
                    continue  # another process changed a breaker meanwhile: apply fn to the new state

    def _usable(self) -> bool:
        return self._down_since is None or time.monotonic() >= self._next_try

    def _lost(self, error: BaseException) -> None:
        with self._lock:
            self._next_try = time.monotonic() + RETRY_INTERVAL
            if self._down_since is None:
                self._down_since = time.monotonic()
                log.error(
                    "polychat: lost the connection to Redis at %s (%s: %s); circuit breakers are per process "
                    "until it is back",
                    self._shown,
                    type(error).__name__,
                    str(error)[:200],
                )

    def _back(self) -> None:
        if self._down_since is None:
            return
        with self._lock:
            if self._down_since is None:
                return
            log.warning(
                "polychat: Redis at %s is reachable again after %.1fs; circuit breakers are shared again",
                self._shown,
                time.monotonic() - self._down_since,
            )
            self._down_since = None


def _offset() -> float:
    return time.time() - time.monotonic()


def _to_wall(st: BreakerState) -> BreakerState:
    off = _offset()
    return msgspec.structs.replace(
        st,
        open_until=st.open_until + off if st.open_until else 0.0,
        probe_started=st.probe_started + off if st.probe_started else 0.0,
    )


def _to_local(st: BreakerState) -> BreakerState:
    off = _offset()
    return msgspec.structs.replace(
        st,
        open_until=st.open_until - off if st.open_until else 0.0,
        probe_started=st.probe_started - off if st.probe_started else 0.0,
    )


def share_breakers(url: str) -> RedisBreakerStore:
    """Make every client in this process share its circuit breakers through Redis at ``url``; returns the store."""
    store = RedisBreakerStore(url)
    DEFAULT_BREAKER.store = store
    return store
