"""Circuit breakers shared through Redis: a breaker one process opens is open in every process using that Redis
(gateway workers and replicas, or several application processes).

Use it in a program with :func:`share_breakers` (every client in the process then shares through Redis), or give
``RetryProvider(breaker=CircuitBreaker(RedisBreakerStore(url)))``; ``polychat serve --redis-url`` does the former.

Why a mirror: a breaker is read on every request (is it open? did this success close it?), and a Redis round trip
per read costs more than the rest of the gateway's work. So each store keeps a copy of every state in the process,
kept current by Redis pub/sub: reads touch only the copy; a change (rare: failures, openings, closings) is written
to the hash ``polychat:breakers`` (endpoint key → state as JSON) atomically with WATCH/MULTI — applying the update
to what Redis holds, not to the copy — and published in the same transaction, so every other process's copy
follows within a message's delivery. A new store (or one whose subscription was lost) subscribes first and then
reads the whole hash, so no change falls between the two.

:class:`BreakerState` holds monotonic times, which mean nothing in another machine's process: Redis and the
messages carry wall-clock times, converted on the way in and out.

When Redis cannot be reached the copy simply becomes this process's own breakers — a breaker is advice, and an
outage of the shared store must not stop requests — with one log line when Redis is lost and one when it is back
(Redis's states then replace the local ones).
"""

from __future__ import annotations

import asyncio
import contextlib
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
CHANNEL = "polychat:breakers:changes"

_encode = msgspec.json.encode
_decode = msgspec.json.Decoder(BreakerState).decode
_decode_change = msgspec.json.Decoder(tuple[str, BreakerState]).decode


class RedisBreakerStore(InMemoryBreakerStore):
    """A :class:`~polychat.routing.breaker.BreakerStore` in Redis (``url``: ``redis://[:password@]host:port/db``).

    The in-memory store it extends is the mirror: reads and snapshots come from it, and it is this process's own
    breaker while Redis is away."""

    def __init__(self, url: str, *, client: Any = None, key: str = HASH, channel: str = CHANNEL) -> None:
        from redis.exceptions import ConnectionError, TimeoutError, WatchError

        from .._redis import sync_client

        self._shown = redact_url(url)
        self._owns_client = client is None
        self._client = client if client is not None else sync_client(url)
        self._key = key
        self._channel = channel
        self._errors = (ConnectionError, TimeoutError, OSError)
        self._watch_error = WatchError
        super().__init__()
        self._down_since: float | None = None
        self._next_try = 0.0
        self._closed = threading.Event()
        self._synced = threading.Event()
        self._listener = threading.Thread(target=self._listen, name="polychat-breakers-redis", daemon=True)
        self._listener.start()
        # The first sync, so a new process starts with the states the others left (bounded: Redis may be down).
        self._synced.wait(4 * _timeout())

    def __repr__(self) -> str:
        return f"RedisBreakerStore({self._shown!r})"

    # -- the BreakerStore interface --------------------------------------------------------------------------

    def update(self, key: str, fn: _Update) -> BreakerState:
        if self._down_since is None or time.monotonic() >= self._next_try:
            try:
                new = self._update(key, fn)
            except self._errors as e:
                self._lost(e)
            else:
                with self._lock:
                    self._states[key] = new
                return new
        return super().update(key, fn)  # Redis is away: this process's own breaker

    def clear(self) -> None:
        super().clear()
        try:
            self._client.delete(self._key)
        except self._errors as e:
            self._lost(e)

    def close(self) -> None:
        """Stop following Redis: the listener thread has ended when this returns (it notices within a second),
        and the connections this store opened are closed. The states stay readable, as this process's own."""
        self._closed.set()
        if self._listener is not threading.current_thread():
            self._listener.join(10 * _timeout())
        if self._owns_client:
            with contextlib.suppress(*self._errors):
                self._client.close()

    async def aclose(self) -> None:
        """:meth:`close` from async code: the wait for the listener thread happens off the event loop."""
        await asyncio.to_thread(self.close)

    def __enter__(self) -> RedisBreakerStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------------------------------------

    def _update(self, key: str, fn: _Update) -> BreakerState:
        with self._client.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(self._key)
                    raw = pipe.hget(self._key, key)
                    new = fn(_to_local(_decode(raw)) if raw else BreakerState())
                    wall = _to_wall(new)
                    pipe.multi()
                    pipe.hset(self._key, key, _encode(wall))
                    pipe.publish(self._channel, _encode((key, wall)))
                    pipe.execute()
                    return new
                except self._watch_error:
                    continue  # another process changed a breaker meanwhile: apply fn to the new state

    def _listen(self) -> None:
        while not self._closed.is_set():
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(self._channel)
                snapshot = self._client.hgetall(self._key)
                with self._lock:
                    self._states = {_text(k): _to_local(_decode(v)) for k, v in snapshot.items()}
                self._back()
                self._synced.set()
                while not self._closed.is_set():
                    message = pubsub.get_message(timeout=_timeout())
                    if message is None:
                        pubsub.ping()  # an idle subscription must still notice a dead Redis
                        continue
                    if message.get("type") != "message":
                        continue
                    key, state = _decode_change(message["data"])
                    with self._lock:
                        self._states[key] = _to_local(state)
            except self._errors as e:
                self._lost(e)
                self._synced.set()
                self._closed.wait(RETRY_INTERVAL)  # waiting for Redis to come back
            finally:
                with contextlib.suppress(*self._errors):
                    pubsub.close()

    def _lost(self, error: BaseException) -> None:
        with self._lock:
            self._next_try = time.monotonic() + RETRY_INTERVAL
            if self._down_since is not None:
                return
            self._down_since = time.monotonic()
        log.error(
            "polychat: lost the connection to Redis at %s (%s: %s); circuit breakers are per process until it is back",
            self._shown,
            type(error).__name__,
            str(error)[:200],
        )

    def _back(self) -> None:
        with self._lock:
            if self._down_since is None:
                return
            down = time.monotonic() - self._down_since
            self._down_since = None
        log.warning(
            "polychat: Redis at %s is reachable again after %.1fs; circuit breakers are shared again",
            self._shown,
            down,
        )


def _timeout() -> float:
    from .._redis import REDIS_TIMEOUT

    return REDIS_TIMEOUT


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


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
