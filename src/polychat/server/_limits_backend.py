"""What a limit backend is: the one-round-trip steps every backend implements, and what they answer.

A separate module because three parties share it without needing each other: the backends
(:mod:`._limits_memory`, :mod:`._limits_redis`), the :class:`~polychat.server._settlements.SettlementQueue` that
writes to them, and the :class:`~polychat.server._limits.Limiter` that decides with them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple, Protocol

if TYPE_CHECKING:
    from ..config._types import GatewayKeySpec

#: Sliding window of the per-minute limits, in milliseconds.
WINDOW_MS = 60_000
#: A reservation not settled within this long (its gateway died) is charged in full by the next request.
LEASE_MS = 3_600_000


@dataclass(frozen=True)
class Verdict:
    """A backend's answer to a reservation: ``ok``, else which limit refused (``requests``, ``tokens``,
    ``budget``, ``too_large``) and in how many milliseconds it may pass (-1: not by waiting)."""

    ok: bool
    limit: str = ""
    retry_ms: int = 0


ADMITTED = Verdict(True)


@dataclass(frozen=True)
class KeyUsage:
    """What a key has used (all time, across every process sharing the backend) and holds right now."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    #: Tokens charged against the budget: settled usage plus reservations charged in full.
    used: int = 0
    #: Tokens reserved by requests in flight.
    reserved: int = 0
    refused: Mapping[str, int] = field(default_factory=dict)


class Settlement(NamedTuple):
    """A reservation's end: the tokens to charge (0: a refund) and the usage to count, and the tokens the
    reservation held (a backend may find the reservation by them)."""

    rid: str
    tokens: int
    prompt: int
    completion: int
    reserved: int


class LimitBackend(Protocol):
    """Where counters live. Every method is one atomic step (one round trip); settling is idempotent per
    reservation id, so a batch whose reply was lost can be sent again."""

    async def reserve(self, spec: GatewayKeySpec, rid: str, tokens: int, settle: Sequence[Settlement] = ()) -> Verdict:
        """Apply ``settle`` (earlier requests of the same key), then reserve ``tokens`` for ``rid``."""
        ...

    async def settle(self, spec: GatewayKeySpec, settlements: Sequence[Settlement]) -> None: ...

    async def record(self, spec: GatewayKeySpec, item: Settlement, served: bool) -> None:
        """The end of a request whose reservation failed because the backend was unreachable: undo the reservation
        (``item.reserved`` tokens) if it was made after all (the reply may be what was lost), then count the usage
        of ``item`` if it was ``served`` (admitted with ``redis_failure = "open"``). Counted once per ``item.rid``."""
        ...

    async def usage(self, name: str) -> KeyUsage: ...

    async def aclose(self) -> None: ...


class BackendUnavailable(Exception):
    """The shared backend (Redis) could not be reached; the message says why (no secrets)."""
