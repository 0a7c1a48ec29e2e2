"""Watching and holding Local's model thread at a known point, so tests about cancellation and concurrency follow
events instead of racing the model (how fast it reads or generates depends on the machine).

Built on the engine's ``observer`` hook (``polychat/providers/local/_engine.py``), which is told each event of each
job in the thread where it happens and which the model's thread waits for.
"""

from __future__ import annotations

import asyncio
import threading

from polychat.providers.local._engine import _Engine, _Event, _Job

#: How long a held job waits for its release before giving up. Not a timing margin: a passing test releases it at
#: once; this only turns a broken test's hang into a failure.
HANG_GUARD = 120.0


class Hold:
    """Watches an engine's jobs and holds the model's thread just after the ``nth`` ``at`` event (of any job) until
    the test calls :meth:`release` or that job is cancelled — then the job goes on and sees the stop at once.

    A "text" event comes right after its text was handed over, so a caller may get that chunk just before the
    hold begins: wait for :attr:`reached` (or :meth:`seen`) before counting on it. ``events`` lists every (job,
    event) seen. ``tokens_at`` is the engine's ``tokens_generated`` when the hold began.
    Inside a running event loop, :meth:`seen` awaits an event without blocking the loop.
    """

    def __init__(self, engine: _Engine, at: _Event, *, nth: int = 1) -> None:
        self.engine, self.at, self.nth = engine, at, nth
        self.events: list[tuple[_Job, _Event]] = []
        self.held: _Job | None = None
        self.tokens_at: int | None = None
        self.reached = threading.Event()
        self._released = threading.Event()
        self._stuck = False
        self._lock = threading.Lock()
        self._changed: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    def __enter__(self) -> Hold:
        assert self.engine.observer is None, "another Hold is watching this engine"
        self.engine.observer = self._observe
        return self

    def __exit__(self, *exc: object) -> None:
        self.engine.observer = None
        self._released.set()
        if exc[0] is None:
            assert not self._stuck, f"the model's thread was held at {self.at!r} for {HANG_GUARD} s: never released"

    def release(self) -> None:
        self._released.set()

    def of(self, job: _Job) -> list[_Event]:
        """The events seen for ``job``, in order."""
        with self._lock:
            return [event for j, event in self.events if j is job]

    async def seen(self, event: _Event, count: int = 1) -> _Job:
        """Wait (on the loop) until ``event`` was seen ``count`` times; the job it was seen for last."""
        changed = asyncio.Event()
        waiter = (asyncio.get_running_loop(), changed)
        with self._lock:
            self._changed.append(waiter)
        try:
            while True:
                changed.clear()
                with self._lock:
                    jobs = [j for j, e in self.events if e == event]
                if len(jobs) >= count:
                    return jobs[count - 1]
                await changed.wait()
        finally:
            with self._lock:
                self._changed.remove(waiter)

    def _observe(self, job: _Job, event: _Event) -> None:
        with self._lock:
            self.events.append((job, event))
            hold = event == self.at and self.held is None and sum(e == event for _, e in self.events) == self.nth
            if hold:
                self.held, self.tokens_at = job, self.engine.tokens_generated
            if event == "cancelled" and job is self.held:
                self._released.set()
            waiters = list(self._changed)
        for loop, changed in waiters:
            loop.call_soon_threadsafe(changed.set)
        if hold:
            self.reached.set()
            if not job.cancelled.is_set() and not self._released.wait(HANG_GUARD):
                self._stuck = True
