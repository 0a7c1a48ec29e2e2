"""The queue of settlements between the gateway's answers and the limit backend.

Why a queue: settling after every answer would cost each request a second round trip to Redis. Instead
:meth:`SettlementQueue.add` keeps a settlement per key, the key's next reservation carries the batch to the backend
in its own round trip (:meth:`take`, then :meth:`sent`), and a batch that no reservation picks up within
:data:`SETTLE_DELAY` is written by one background task, a key's queue per round trip. Until it is written a
reservation stays whole, so a late settlement can only refuse too much, never admit too much. The queue lives
until the backend has taken it (while Redis is down it waits and retries), and :meth:`drain` writes it on shutdown.

The ends of admissions made while the backend was unreachable (``record``) wait here too, in order.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ._limits_backend import BackendUnavailable

if TYPE_CHECKING:
    from ..config._types import GatewayKeySpec
    from ._limits_backend import LimitBackend, Settlement

log = logging.getLogger("polychat.server")

#: Seconds a settlement waits for the key's next reservation to carry it (one round trip for both); when none
#: comes, the background flusher writes it.
SETTLE_DELAY = 0.02


class SettlementQueue:
    """Settlements waiting for a ride to ``backend``. ``lost``/``back`` report the backend's health to the
    :class:`~polychat.server._limits.Limiter`, which owns the ``redis_failure`` decision and its log lines."""

    def __init__(
        self,
        backend: LimitBackend,
        *,
        lost: Callable[[BaseException], None],
        back: Callable[[], None],
    ) -> None:
        self._backend = backend
        self._lost = lost
        self._back = back
        #: Settlements of admissions the backend made, per key name, waiting for a ride.
        self._settles: dict[str, tuple[GatewayKeySpec, list[Settlement]]] = {}
        #: Ends of admissions made while the backend was unreachable (``record``), in order.
        self._records: deque[tuple[GatewayKeySpec, Settlement, bool]] = deque()
        #: Settlements on their way to the backend (carried by a reservation, or in the flusher's batch).
        self._sending = 0
        self._flusher: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    @property
    def pending(self) -> int:
        """Settlements not yet applied to the backend (nonzero while it is unreachable)."""
        return self._sending + len(self._records) + sum(len(items) for _, items in self._settles.values())

    def add(self, spec: GatewayKeySpec, item: Settlement, *, offline: bool, served: bool) -> None:
        """Queue the end of one admission: a settlement (``offline``: a record of one the backend never saw)."""
        if offline:
            self._records.append((spec, item, served))
            self._kick()
            return
        self.requeue(spec, [item])
        if self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # pragma: no cover - endpoints always run in the loop
                return
            self._timer = loop.call_later(SETTLE_DELAY, self._kick)

    def take(self, spec: GatewayKeySpec) -> list[Settlement]:
        """The key's queued settlements, for its next reservation to carry; hand them back with :meth:`sent`."""
        queued = self._settles.pop(spec.name, None)
        items = queued[1] if queued is not None else []
        self._sending += len(items)
        return items

    def sent(self, spec: GatewayKeySpec, items: list[Settlement], *, applied: bool) -> None:
        """Settlements a reservation carried: ``applied``, or queued again (settling is idempotent, so a batch whose
        reply was lost may go twice)."""
        self._sending -= len(items)
        if not applied:
            self.requeue(spec, items)

    def requeue(self, spec: GatewayKeySpec, items: list[Settlement]) -> None:
        if not items:
            return
        queued = self._settles.get(spec.name)
        if queued is None:
            self._settles[spec.name] = (spec, items)
        else:
            queued[1].extend(items)

    def _kick(self) -> None:
        """Start the flusher now (unless it runs already: it takes whatever is queued before it ends)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._flusher is None or self._flusher.done():
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # pragma: no cover - endpoints always run in the loop
                return
            self._flusher = loop.create_task(self._flush())

    async def _flush(self) -> None:
        """Write what is queued; while the backend is down, keep it and retry (nothing is lost while this process
        lives)."""
        delay = 0.05
        while self._records or self._settles:
            try:
                await self._write_next()
            except BackendUnavailable as e:
                self._lost(e)
                await asyncio.sleep(delay)  # waiting for Redis to come back, not synchronising with anything
                delay = min(delay * 2, 1.0)
                continue
            self._back()
            delay = 0.05

    async def _write_next(self) -> None:
        """Write the oldest record, else one key's queued settlements (one round trip)."""
        if self._records:
            spec, item, served = self._records[0]
            try:
                await self._backend.record(spec, item, served)
            except BackendUnavailable:
                raise
            except Exception as e:  # a bug, not an outage: retrying would fail the same way and hold the queue
                _unwritten(spec, [item], e)
            self._records.popleft()
            return
        spec, items = self._settles.pop(next(iter(self._settles)))
        self._sending += len(items)
        try:
            await self._backend.settle(spec, items)
        except BackendUnavailable:
            self.requeue(spec, items)
            raise
        except Exception as e:
            _unwritten(spec, items, e)
        except BaseException:
            self.requeue(spec, items)
            raise
        finally:
            self._sending -= len(items)

    async def written(self, timeout: float) -> bool:
        """Write what is queued now; False if it is not all written within ``timeout`` seconds."""
        if self.pending:
            self._kick()
        if self._flusher is not None and not self._flusher.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._flusher), timeout)
            except asyncio.TimeoutError:
                return False
        return True

    async def drain(self, timeout: float) -> None:
        """Give queued settlements up to ``timeout`` seconds to reach the backend (on shutdown)."""
        if not await self.written(timeout):
            log.error(
                "polychat: %d usage settlement(s) could not be written to the shared store before shutdown",
                self.pending,
            )

    def stop(self) -> None:
        """Stop writing (after :meth:`drain`): what is still queued stays unwritten."""
        if self._timer is not None:
            self._timer.cancel()
        if self._flusher is not None:
            self._flusher.cancel()


def _unwritten(spec: GatewayKeySpec, items: Sequence[Settlement], error: BaseException) -> None:
    log.error(
        "polychat: could not settle %d request(s) of key %r (%d tokens): %r",
        len(items),
        spec.name,
        sum(item.tokens for item in items),
        error,
    )
