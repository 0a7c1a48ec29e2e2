"""Timeouts that really fire: first token, idle between chunks, and the overall deadline of a call.

One :class:`Watch` per attempt holds the deadlines. How it fires depends on the flavour:

* async — the attempt awaits each chunk under ``asyncio.timeout_at`` (cheap, exact, cancels the request);
* sync — a blocking read cannot be interrupted from the outside by a timer, so the HTTP shell does two things:
  before the response headers, the socket read timeout is set to what remains of the first-token budget; after
  them, the provider hands the watch a ``cancel`` callback (shutting the socket down) and one process-wide
  watchdog thread calls it when a deadline passes. Time the caller spends between chunks is never counted.

Every timeout surfaces as :class:`~polychat.errors.APITimeoutError` saying which limit fired.

It sits below both the failover engine (:mod:`polychat.routing`, which sets the limits) and the HTTP providers
(which bound their waits by them), so that providers never import the routing layer.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec

from .errors import APIError, APITimeoutError

T = TypeVar("T")


class Limits(msgspec.Struct, frozen=True):
    """Time limits of one attempt, in seconds (None: no limit). ``deadline_at`` is a ``time.monotonic()`` value."""

    first_token: float | None = None
    idle: float | None = None
    deadline_at: float | None = None


def _min(*values: float | None) -> float | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


class Watch:
    """The deadlines of one attempt, and the means to cut it short."""

    __slots__ = ("_cancels", "_scheduled_at", "deadline", "fired", "limits", "phase")

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.deadline: float | None = None
        self.fired: str | None = None
        self.phase = "first token"
        self._cancels: list[Callable[[], None]] = []
        self._scheduled_at: float | None = None

    # -- phases --------------------------------------------------------------------------------------------------

    def start(self) -> None:
        """The request is about to go out: the first-token clock starts."""
        now = time.monotonic()
        first = now + self.limits.first_token if self.limits.first_token is not None else None
        self._set(_min(first, self.limits.deadline_at))

    def pause(self) -> None:
        """The caller holds a chunk: its time is not ours to count."""
        self.deadline = None

    def resume(self) -> None:
        idle = self.limits.idle
        now = time.monotonic()
        self._set(_min(now + idle if idle is not None else None, self.limits.deadline_at))

    def stop(self) -> None:
        self.deadline = None
        self._cancels.clear()

    def remaining(self) -> float | None:
        """Seconds until the current deadline (for socket timeouts), or None."""
        if self.deadline is None:
            return None
        return max(0.001, self.deadline - time.monotonic())

    # -- firing --------------------------------------------------------------------------------------------------

    def attach(self, cancel: Callable[[], None]) -> None:
        """Register how to cut this attempt short (sync flavour); runs at once if the watch already fired."""
        self._cancels.append(cancel)
        if self.fired is not None:
            cancel()

    def fire(self, reason: str) -> None:
        if self.fired is None:
            self.fired = reason
        for cancel in list(self._cancels):
            # A half-closed socket may complain; the attempt is over either way.
            with contextlib.suppress(Exception):
                cancel()

    def _set(self, deadline: float | None) -> None:
        self.deadline = deadline
        if deadline is not None and (self._scheduled_at is None or deadline < self._scheduled_at):
            _watchdog.schedule(self, deadline)

    def _due(self, now: float) -> float | None:
        """Called by the watchdog when an entry of this watch comes due; returns when to look again."""
        self._scheduled_at = None
        d = self.deadline
        if d is None or self.fired is not None:
            return None
        if d <= now:
            self.fire(self.reason())
            return None
        return d

    # -- errors --------------------------------------------------------------------------------------------------

    def reason(self) -> str:
        lim = self.limits
        if lim.deadline_at is not None and time.monotonic() >= lim.deadline_at - 0.001:
            return "the overall deadline passed"
        if self.phase == "answer" and lim.first_token is not None:
            return f"no answer within {lim.first_token:g} s (response_timeout)"
        if self.phase == "first token" and lim.first_token is not None:
            return f"no first token within {lim.first_token:g} s (first_token_timeout)"
        if lim.idle is not None:
            return f"no chunk within {lim.idle:g} s (idle_timeout)"
        return "timed out"

    def expired(self) -> bool:
        """Whether the current deadline has passed (a socket timeout set to :meth:`remaining` fires then)."""
        return self.deadline is not None and time.monotonic() >= self.deadline - 0.001

    def translate(self, error: APIError, provider: str) -> APIError:
        """The error to report for a failed attempt: a timeout if this watch fired, else ``error`` itself."""
        if self.fired is None and (not isinstance(error, APITimeoutError) or not self.expired()):
            return error  # not ours: a timeout of the provider's own (its read timeout, Local's) keeps its words
        err = APITimeoutError(f"Timed out: {self.fired or self.reason()}", provider=provider)
        err.__cause__ = error
        return err


class _Watchdog:
    """One daemon thread for the whole process, firing sync watches whose deadline passed."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Watch]] = []
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def schedule(self, watch: Watch, at: float) -> None:
        with self._cond:
            watch._scheduled_at = at
            heapq.heappush(self._heap, (at, next(self._seq), watch))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="polychat-watchdog", daemon=True)
                self._thread.start()
            self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while True:
                if not self._heap:
                    self._cond.wait()
                    continue
                at, _, watch = self._heap[0]
                now = time.monotonic()
                if at > now:
                    self._cond.wait(at - now)
                    continue
                heapq.heappop(self._heap)
                if watch._scheduled_at != at:
                    continue  # stale: the watch was rescheduled earlier since
                again = watch._due(now)
                if again is not None:
                    watch._scheduled_at = again
                    heapq.heappush(self._heap, (again, next(self._seq), watch))


_watchdog = _Watchdog()


# -- async ----------------------------------------------------------------------------------------------------------

#: Backoff sleeps of the sync failover loop (the generated twin of :func:`asleep`).
sleep = time.sleep


async def asleep(seconds: float) -> None:
    """``asyncio.sleep``, with asyncio imported only when an async call waits."""
    import asyncio

    await asyncio.sleep(seconds)


if sys.version_info >= (3, 11):

    async def within(deadline: float | None, awaitable: Awaitable[T]) -> T:
        """Await ``awaitable`` until the ``time.monotonic()`` deadline; raise ``TimeoutError`` past it."""
        if deadline is None:
            return await awaitable
        import asyncio  # here, not at the top: ``import polychat`` stays cheap for sync users

        loop = asyncio.get_running_loop()
        async with asyncio.timeout_at(loop.time() + (deadline - time.monotonic())):
            return await awaitable

else:  # pragma: no cover - Python 3.10

    async def within(deadline: float | None, awaitable: Awaitable[T]) -> T:
        if deadline is None:
            return await awaitable
        import asyncio

        try:
            return await asyncio.wait_for(awaitable, max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError as e:
            raise TimeoutError from e


def shutdown_socket(network_stream: Any) -> Callable[[], None]:
    """A cancel callback that wakes a thread blocked reading ``network_stream`` (an httpcore stream)."""

    def cancel() -> None:
        import socket

        sock = network_stream.get_extra_info("socket") if network_stream is not None else None
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)

    return cancel
