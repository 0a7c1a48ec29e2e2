"""The failover scenarios of the scorecard (bench/failover): what the first provider does, and what is correct.

Shared by the benchmark and by tests/test_failover_scenarios.py, so the scorecard and the test suite check the same
things. Every scenario has a healthy second provider that answers :data:`ANSWER` (or, asked to continue a partial
answer, the rest of it), so the only outcome a caller may receive as a complete answer is exactly :data:`ANSWER`.

Three scenarios fail before HTTP; :class:`Addresses` provides their first provider's URL: a loopback port nothing
listens on, a loopback port whose accept queue is full (connecting times out), and a ``.invalid`` host (see
``tests/support/nodns`` for why no lookup of it leaves the machine).
"""

from __future__ import annotations

import contextlib
import socket
from dataclasses import dataclass, field
from types import TracebackType

from tests.support.faults import (
    Behaviour,
    ErrorFrame,
    FaultServer,
    Malformed,
    Ok,
    ResetAfter,
    Stall,
    Status,
    Truncate,
)

#: The whole answer. A provider that fails mid-stream has sent its first :data:`CUT` words of it.
ANSWER = "one two three four five six seven eight nine ten eleven twelve"
CUT = 4
DNS_HOST = "failover-bench.invalid"
#: Calls in the flapping scenario, one after another.
FLAP_CALLS = 10
FLAP_PERIOD = 3

HTML = b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body><h1>Bad Gateway</h1></body></html>"


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    #: The first provider's behaviours, one per request (the last repeating); unused when ``address`` is set.
    first: tuple[Behaviour, ...] = ()
    #: "refused", "dns" or "blackhole": the first provider is an address rather than a fault-server route.
    address: str = ""
    stream_only: bool = False
    second: Behaviour = field(default_factory=lambda: Ok(text=ANSWER, continues=True))
    calls: int = 1

    @property
    def modes(self) -> tuple[bool, ...]:
        return (True,) if self.stream_only else (False, True)


def _flapping() -> tuple[Behaviour, ...]:
    up: list[Behaviour] = [Ok(text=ANSWER)] * FLAP_PERIOD
    down: list[Behaviour] = [Status(503, message="flapping: down")] * FLAP_PERIOD
    return tuple((up + down) * 60)


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("refused", "connection refused", address="refused"),
    Scenario("dns", "DNS failure (.invalid)", address="dns"),
    Scenario("connect-timeout", "connect timeout (blackholed port)", address="blackhole"),
    Scenario("429", "429 with Retry-After: 20", (Status(429, {"retry-after": "20"}, "rate limited"),)),
    Scenario("500-burst", "a burst of 500s", (Status(500),) * 4 + (Ok(text=ANSWER),)),
    Scenario("529", "529 overloaded", (Status(529, message="Overloaded"),)),
    Scenario("401", "401 on the first provider", (Status(401, message="invalid api key"),)),
    Scenario("silent", "accepted, never answers", (Stall(),)),
    Scenario("slow-first-token", "first token after 20 s", (Ok(text=ANSWER, delay_first=20.0),)),
    Scenario("stream-cut", "stream cut after content", (ResetAfter(CUT, ANSWER),), stream_only=True),
    Scenario("stream-stall", "stream stalled after content", (Stall(after_chunks=CUT, text=ANSWER),), stream_only=True),
    Scenario("malformed-sse", "malformed SSE / JSON", (Malformed(after_chunks=CUT, text=ANSWER),)),
    Scenario("html-200", "HTTP 200 with an HTML body", (Status(200, {"content-type": "text/html"}, raw=HTML),)),
    Scenario("no-done", "ends without [DONE] or finish_reason", (Truncate(CUT, ANSWER),), stream_only=True),
    Scenario("error-frame", "error frame after 200", (ErrorFrame(after_chunks=CUT, text=ANSWER),)),
    Scenario(
        "prefill-rejected",
        "resume onto a fallback rejecting prefill",
        (ResetAfter(CUT, ANSWER),),
        stream_only=True,
        second=Ok(text=ANSWER, continues=True, reject_prefill=True),
    ),
    Scenario("flapping", f"flapping ({FLAP_PERIOD} up / {FLAP_PERIOD} down)", _flapping(), calls=FLAP_CALLS),
)


class Addresses:
    """The addresses that fail before HTTP: refused, blackholed (connect timeout) and unresolvable."""

    def __init__(self) -> None:
        with socket.socket() as s:  # bound, read, closed: nothing listens there
            s.bind(("127.0.0.1", 0))
            self.refused = int(s.getsockname()[1])
        # backlog 0 and an accept queue already full: new SYNs are dropped, so a connect attempt times out
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(0)
        self.blackhole = int(self._listener.getsockname()[1])
        self._fillers = []
        for _ in range(4):
            c = socket.socket()
            c.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                c.connect(("127.0.0.1", self.blackhole))
            self._fillers.append(c)

    def close(self) -> None:
        for c in self._fillers:
            c.close()
        self._listener.close()

    def __enter__(self) -> Addresses:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def first_url(self, scenario: Scenario, faults: FaultServer, tag: str) -> str:
        """The first provider's base URL for ``scenario``; ``tag`` keeps each use's provider (and breaker) apart."""
        if scenario.address == "refused":
            return f"http://127.0.0.1:{self.refused}/s/{tag}/v1"
        if scenario.address == "blackhole":
            return f"http://127.0.0.1:{self.blackhole}/s/{tag}/v1"
        if scenario.address == "dns":
            return f"http://{DNS_HOST}:8080/s/{tag}/v1"
        return faults.scenario(tag, *scenario.first)


def by_key(key: str) -> Scenario:
    return next(s for s in SCENARIOS if s.key == key)
