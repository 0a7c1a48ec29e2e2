"""Key limits (``polychat.server._limits``): the same cases against the in-process counters and against a real
``redis-server`` (the Lua scripts), then what the :class:`Limiter` does when Redis goes away and comes back.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from polychat.config._types import GatewayKeySpec
from polychat.server._limits import (
    DEFAULT_COMPLETION_RESERVE,
    Admission,
    BackendUnavailable,
    Limiter,
    Refusal,
    Settlement,
    prompt_bound,
)
from polychat.server._limits_memory import MemoryLimits
from polychat.server._limits_redis import RedisLimits
from polychat.types import CompletionUsage
from tests.support.redis import RedisServer

pytestmark = pytest.mark.anyio

MESSAGES = [{"role": "user", "content": "Hello there"}]


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture(params=["memory", "redis"])
def backend_factory(request: pytest.FixtureRequest) -> Any:
    """A factory of fresh backends; with Redis, each test starts from an empty database."""
    if request.param == "memory":
        return MemoryLimits
    server = request.getfixturevalue("redis_server")
    client = server.client()
    client.flushall()
    client.close()
    return lambda: RedisLimits.from_url(server.url)


def spec(**limits: Any) -> GatewayKeySpec:
    return GatewayKeySpec(name="team-a", key_env="TEAM_A_KEY", **limits)


async def test_requests_per_minute_admits_exactly_n_of_a_concurrent_burst(backend_factory: Any) -> None:
    backends = [backend_factory() for _ in range(3)]  # three processes' worth of clients on one store
    limiters = [Limiter({"team-a": spec(requests_per_minute=7)}, b) for b in backends]
    key = spec(requests_per_minute=7)
    results = await asyncio.gather(*(limiters[i % 3].admit(key, "fast", MESSAGES, {}) for i in range(20)))
    admitted = [r for r in results if isinstance(r, Admission)]
    refused = [r for r in results if isinstance(r, Refusal)]
    if isinstance(backends[0], MemoryLimits):
        # separate in-process counters: each "process" admits 7 on its own — what --workers N without Redis means
        assert len(admitted) == 7 + 7 + 6
        return
    assert len(admitted) == 7
    assert len(refused) == 13
    assert {r.status for r in refused} == {429}
    assert {r.code for r in refused} == {"rate_limit_exceeded"}
    assert all(r.retry_after is not None and 1 <= r.retry_after <= 60 for r in refused)
    usage = await backends[0].usage("team-a")
    assert usage.requests == 7
    assert usage.refused == {"requests": 13}
    for b in backends:
        await b.aclose()


async def test_tokens_per_minute_reserves_prompt_plus_max_tokens_and_settles_to_usage(backend_factory: Any) -> None:
    backend = backend_factory()
    key = spec(tokens_per_minute=1000)
    limiter = Limiter({"team-a": key}, backend)
    bound = prompt_bound(MESSAGES, {})
    first = await limiter.admit(key, "fast", MESSAGES, {"max_tokens": 400})
    assert isinstance(first, Admission) and first.reserved == bound + 400
    second = await limiter.admit(key, "fast", MESSAGES, {"max_tokens": 400})
    assert isinstance(second, Admission)
    # a third worst case does not fit while the first two hold their reservations
    third = await limiter.admit(key, "fast", MESSAGES, {"max_tokens": 400})
    assert isinstance(third, Refusal) and third.status == 429 and third.code == "rate_limit_exceeded"
    assert third.retry_after is not None and 1 <= third.retry_after <= 60
    # settling to the real (small) usage frees the rest of the reservation at once
    first.finish(CompletionUsage(prompt_tokens=5, completion_tokens=10, total_tokens=15))
    second.finish(CompletionUsage(prompt_tokens=5, completion_tokens=20, total_tokens=25))
    await limiter.drain(10)
    again = await limiter.admit(key, "fast", MESSAGES, {"max_tokens": 400})
    assert isinstance(again, Admission)
    usage = await backend.usage("team-a")
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (10, 30, 40)
    assert usage.reserved == bound + 400
    await backend.aclose()


async def test_a_token_limited_request_without_max_tokens_gets_its_reservation_as_max_tokens(
    backend_factory: Any,
) -> None:
    backend = backend_factory()
    small = spec(tokens_per_minute=300)
    kwargs: dict[str, Any] = {}
    admitted = await Limiter({"team-a": small}, backend).admit(small, "fast", MESSAGES, kwargs)
    assert isinstance(admitted, Admission)
    assert kwargs["max_tokens"] == 300 - prompt_bound(MESSAGES, {})
    big = GatewayKeySpec(name="big", key_env="BIG", budget_tokens=10**9)
    kwargs = {"n": 2}
    assert isinstance(await Limiter({"big": big}, backend).admit(big, "fast", MESSAGES, kwargs), Admission)
    assert kwargs["max_tokens"] == DEFAULT_COMPLETION_RESERVE
    await backend.aclose()


async def test_budget_is_never_overspent_and_says_so(backend_factory: Any) -> None:
    backend = backend_factory()
    key = spec(budget_tokens=500)
    limiter = Limiter({"team-a": key}, backend)
    held = await limiter.admit(key, "fast", MESSAGES, {"max_tokens": 300})
    assert isinstance(held, Admission)
    busy = await limiter.admit(key, "fast", MESSAGES, {"max_tokens": 300})
    # the budget is held by a request in flight: retrying soon may work
    assert isinstance(busy, Refusal) and busy.code == "budget_exceeded" and busy.retryable and busy.retry_after == 1
    held.finish(None)  # no usage came back: the whole reservation is charged
    await limiter.drain(10)
    usage = await backend.usage("team-a")
    assert usage.used == held.reserved and usage.reserved == 0
    spent = await limiter.admit(key, "fast", MESSAGES, {"max_tokens": 300})
    assert isinstance(spent, Refusal) and spent.code == "budget_exceeded"
    assert spent.status == 429 and not spent.retryable and spent.retry_after is not None
    too_large = await limiter.admit(key, "fast", MESSAGES, {"max_tokens": 10_000})
    assert isinstance(too_large, Refusal) and "too large" in too_large.message and not too_large.retryable
    await backend.aclose()


async def test_refund_and_settle_are_idempotent(backend_factory: Any) -> None:
    backend = backend_factory()
    key = spec(budget_tokens=1000)
    limiter = Limiter({"team-a": key}, backend)
    failed = await limiter.admit(key, "fast", MESSAGES, {"max_tokens": 100})
    assert isinstance(failed, Admission)
    failed.finish(served=False)
    failed.finish(CompletionUsage(prompt_tokens=1, completion_tokens=1, total_tokens=2))  # ignored: finished
    await limiter.drain(10)
    replayed = Settlement(failed.rid, 999, 0, 999, failed.reserved)
    await backend.settle(key, [replayed])  # a replayed settlement changes nothing
    usage = await backend.usage("team-a")
    assert (usage.used, usage.reserved, usage.total_tokens) == (0, 0, 0)
    await backend.aclose()


async def test_allowlist_refuses_other_models_with_403(backend_factory: Any) -> None:
    backend = backend_factory()
    key = spec(models=("fast",))
    limiter = Limiter({"team-a": key}, backend)
    refused = await limiter.admit(key, "smart", MESSAGES, {})
    assert isinstance(refused, Refusal) and refused.status == 403 and refused.code == "model_not_allowed"
    assert "'smart'" in refused.message and "fast" in refused.message
    assert await limiter.admit(key, "fast", MESSAGES, {}) is None  # no limits: nothing to account
    await backend.aclose()


# -- Redis going away -------------------------------------------------------------------------------------------


async def test_redis_down_closed_refuses_with_503_then_recovers_and_logs_both(
    caplog: pytest.LogCaptureFixture,
) -> None:
    key = spec(requests_per_minute=100)
    with RedisServer(persistent=True) as server:
        limiter = Limiter({"team-a": key}, RedisLimits.from_url(server.url), failure="closed")
        assert isinstance(await limiter.admit(key, "fast", MESSAGES, {}), Admission)
        server.kill()
        with caplog.at_level(logging.WARNING, logger="polychat.server"):
            refused = await limiter.admit(key, "fast", MESSAGES, {})
            assert isinstance(refused, Refusal)
            assert refused.status == 503 and refused.code == "limits_unavailable" and refused.retry_after == 1
            server.restart()
            assert isinstance(await limiter.admit(key, "fast", MESSAGES, {}), Admission)
        messages = [r.getMessage() for r in caplog.records]
        assert any("lost the connection to Redis" in m and "503" in m for m in messages)
        assert any("reachable again" in m for m in messages)
        usage = await limiter.backend.usage("team-a")
        assert usage.requests == 2  # the one before the crash survived it (append-only file)
        await limiter.aclose()


async def test_redis_down_open_lets_requests_through_and_records_their_usage_when_back() -> None:
    key = spec(budget_tokens=10**6)
    with RedisServer(persistent=True) as server:
        limiter = Limiter({"team-a": key}, RedisLimits.from_url(server.url), failure="open")
        in_flight = await limiter.admit(key, "fast", MESSAGES, {"max_tokens": 50})
        assert isinstance(in_flight, Admission) and not in_flight.offline
        server.kill()
        offline = await limiter.admit(key, "fast", MESSAGES, {"max_tokens": 50})
        assert isinstance(offline, Admission) and offline.offline
        # both end while Redis is down: their settlements wait in this process
        in_flight.finish(CompletionUsage(prompt_tokens=4, completion_tokens=6, total_tokens=10))
        offline.finish(CompletionUsage(prompt_tokens=4, completion_tokens=3, total_tokens=7))
        await asyncio.sleep(0)  # let the flusher try once (it cannot succeed: Redis is down)
        assert limiter.pending == 2
        server.restart()
        await limiter.drain(30)
        assert limiter.pending == 0
        usage = await limiter.backend.usage("team-a")
        assert (usage.requests, usage.total_tokens, usage.used, usage.reserved) == (2, 17, 17, 0)
        await limiter.aclose()


async def test_a_reservation_never_settled_is_charged_in_full_when_its_lease_ends(
    backend_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A gateway that dies mid-request never settles; with a lease of 0 ms the next request finds it expired.
    monkeypatch.setattr("polychat.server._limits_memory.LEASE_MS", 0)
    monkeypatch.setattr("polychat.server._limits_redis.LEASE_MS", 0)
    monkeypatch.setattr("polychat.server._limits_redis.SWEEP_MS", 0)
    backend = backend_factory()
    key = spec(budget_tokens=10_000)
    orphan = await Limiter({"team-a": key}, backend).admit(key, "fast", MESSAGES, {"max_tokens": 100})
    assert isinstance(orphan, Admission)
    assert isinstance(
        await Limiter({"team-a": key}, backend).admit(key, "fast", MESSAGES, {"max_tokens": 1}), Admission
    )
    usage = await backend.usage("team-a")
    assert usage.used == orphan.reserved  # charged: the upstream may well have served it
    # too late: the charge stands, nothing is counted twice
    await backend.settle(key, [Settlement(orphan.rid, 5, 2, 3, orphan.reserved)])
    assert (await backend.usage("team-a")).used == orphan.reserved
    await backend.aclose()


async def test_the_window_slides_and_an_entry_older_than_it_stops_counting(
    backend_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A window of 1.5 s instead of a minute. Redis sweeps old entries lazily; with sweeps a minute apart, this also
    # checks that an entry not yet swept counts neither against the requests limit nor against the tokens limit.
    for module in ("_limits_memory", "_limits_redis"):
        monkeypatch.setattr(f"polychat.server.{module}.WINDOW_MS", 1500)
    monkeypatch.setattr("polychat.server._limits_redis.SWEEP_MS", 60_000)
    backend = backend_factory()
    key = spec(requests_per_minute=2, tokens_per_minute=100)
    assert (await backend.reserve(key, "a", 60)).ok
    assert (await backend.reserve(key, "b", 30)).ok
    full = await backend.reserve(key, "c", 1)
    assert (full.ok, full.limit) == (False, "requests") and 0 < full.retry_ms <= 1500
    await asyncio.sleep(1.6)  # time passing is the subject here: the window is a time span
    assert (await backend.reserve(key, "d", 60)).ok  # 90 tokens left the window with a and b
    usage = await backend.usage("team-a")
    assert (usage.requests, usage.reserved, usage.refused) == (3, 150, {"requests": 1})
    await backend.aclose()


async def test_a_key_with_only_a_request_limit_still_counts_the_tokens_used(backend_factory: Any) -> None:
    backend = backend_factory()
    key = spec(requests_per_minute=10)
    limiter = Limiter({"team-a": key}, backend)
    admitted = await limiter.admit(key, "fast", MESSAGES, {})
    assert isinstance(admitted, Admission) and admitted.reserved == 0
    admitted.usage = CompletionUsage(prompt_tokens=3, completion_tokens=2, total_tokens=5)
    admitted.finish()
    await limiter.drain(10)
    assert limiter.pending == 0
    usage = await backend.usage("team-a")
    assert (usage.requests, usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (1, 3, 2, 5)
    assert usage.reserved == 0
    await backend.aclose()


async def test_a_reservation_whose_reply_was_lost_is_undone_once(backend_factory: Any) -> None:
    # Redis may apply a reservation and die before replying: the gateway then treats the request as admitted
    # offline ("open") or refused ("closed"), and later resolves it with record(), which undoes the reservation.
    backend = backend_factory()
    key = spec(requests_per_minute=10, tokens_per_minute=10_000, budget_tokens=10_000)
    assert (await backend.reserve(key, "served-offline", 300)).ok
    assert (await backend.reserve(key, "refused", 300)).ok
    await backend.record(key, Settlement("served-offline", 42, 40, 2, 300), True)
    await backend.record(key, Settlement("refused", 0, 0, 0, 300), False)
    await backend.record(key, Settlement("served-offline", 42, 40, 2, 300), True)  # a replay changes nothing
    usage = await backend.usage("team-a")
    assert (usage.requests, usage.reserved, usage.used, usage.total_tokens) == (1, 0, 42, 42)
    for i in range(9):  # the undone reservations no longer hold places in the minute
        assert (await backend.reserve(key, f"r{i}", 1)).ok
    await backend.aclose()


async def test_a_retried_reservation_is_counted_once(backend_factory: Any) -> None:
    # a client that retries a command whose reply timed out would run the script twice for one request
    backend = backend_factory()
    key = spec(requests_per_minute=1, budget_tokens=1000)
    assert (await backend.reserve(key, "same", 100)).ok
    assert (await backend.reserve(key, "same", 100)).ok  # the retry: still admitted, not refused by its own entry
    usage = await backend.usage("team-a")
    assert (usage.requests, usage.reserved) == (1, 100)
    await backend.aclose()


# -- settling off the request's path --------------------------------------------------------------------------


def _script_calls(server: RedisServer) -> int:
    client = server.client()
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return sum(int(v["calls"]) for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_eval"))


async def test_a_settlement_rides_on_the_keys_next_reservation(redis_server: RedisServer) -> None:
    redis_server.client().flushall()
    key = spec(tokens_per_minute=10_000, budget_tokens=10_000)
    limiter = Limiter({"team-a": key}, RedisLimits.from_url(redis_server.url))
    first = await limiter.admit(key, "fast", MESSAGES, {"max_tokens": 100})
    assert isinstance(first, Admission)
    first.finish(CompletionUsage(prompt_tokens=4, completion_tokens=6, total_tokens=10))
    assert limiter.pending == 1
    before = _script_calls(redis_server)
    second = await limiter.admit(key, "fast", MESSAGES, {"max_tokens": 100})
    assert isinstance(second, Admission)
    assert _script_calls(redis_server) - before == 1  # one round trip settled the first and reserved the second
    assert limiter.pending == 0
    usage = await limiter.backend.usage("team-a")
    assert (usage.total_tokens, usage.used, usage.reserved) == (10, 10, second.reserved)
    await limiter.aclose()


async def test_settlements_no_reservation_picks_up_are_written_in_one_batch(redis_server: RedisServer) -> None:
    redis_server.client().flushall()
    key = spec(budget_tokens=10**6)
    limiter = Limiter({"team-a": key}, RedisLimits.from_url(redis_server.url))
    admitted = [await limiter.admit(key, "fast", MESSAGES, {"max_tokens": 10}) for _ in range(5)]
    before = _script_calls(redis_server)
    for a in admitted:
        assert isinstance(a, Admission)
        a.finish(CompletionUsage(prompt_tokens=1, completion_tokens=2, total_tokens=3))
    for _ in range(2000):  # the background flusher writes them within SETTLE_DELAY; no reservation comes
        if limiter.pending == 0:
            break
        await asyncio.sleep(0.01)
    assert limiter.pending == 0
    assert _script_calls(redis_server) - before == 1
    usage = await limiter.backend.usage("team-a")
    assert (usage.total_tokens, usage.used, usage.reserved) == (15, 15, 0)
    await limiter.aclose()


async def test_closing_the_limiter_writes_queued_settlements(backend_factory: Any) -> None:
    backend = backend_factory()
    key = spec(requests_per_minute=100, budget_tokens=10**6)
    limiter = Limiter({"team-a": key}, backend)
    admitted = await limiter.admit(key, "fast", MESSAGES, {"max_tokens": 10})
    assert isinstance(admitted, Admission)
    admitted.finish(CompletionUsage(prompt_tokens=2, completion_tokens=3, total_tokens=5))
    assert limiter.pending == 1
    usage_backend = backend_factory() if not isinstance(backend, MemoryLimits) else backend
    await limiter.aclose()  # shutdown drains the queue
    assert limiter.pending == 0
    usage = await usage_backend.usage("team-a")
    assert (usage.total_tokens, usage.used, usage.reserved) == (5, 5, 0)
    if usage_backend is not backend:
        await usage_backend.aclose()


# -- the lean Redis connection (polychat.server._resp) -------------------------------------------------------------


async def test_the_connection_authenticates_selects_its_database_and_hides_the_password() -> None:
    password = "s3cret-redis-pw-42"
    key = spec(requests_per_minute=5)
    with RedisServer(password=password) as server:
        backend = RedisLimits.from_url(server.url.removesuffix("/0") + "/3")
        assert (await backend.reserve(key, "a", 0)).ok
        sync = server.client()
        sync.select(3)
        assert sync.hget("polychat:limits:{team-a}:st", "requests") == b"1"  # in database 3, not 0
        sync.close()
        await backend.aclose()
        wrong = RedisLimits.from_url(server.url.replace(password, "not-the-password"))
        with pytest.raises(BackendUnavailable) as caught:
            await wrong.reserve(key, "b", 0)
        assert "WRONGPASS" in str(caught.value) and "not-the-password" not in str(caught.value)
        await wrong.aclose()


async def test_a_stalled_redis_costs_the_timeout_then_the_connection_recovers() -> None:
    key = spec(requests_per_minute=5)
    with RedisServer() as server:
        backend = RedisLimits.from_url(server.url)
        assert (await backend.reserve(key, "a", 0)).ok
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGSTOP)  # Redis alive but not answering
        try:
            with pytest.raises(BackendUnavailable, match="did not answer"):
                await backend.reserve(key, "b", 0)
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        assert (await backend.reserve(key, "c", 0)).ok  # a new connection: the late reply cannot be mistaken
        usage = await backend.usage("team-a")
        assert usage.requests in (2, 3)  # "b" may have been applied after the stall; its reply went nowhere
        await backend.aclose()


async def test_reservations_made_while_the_connection_is_busy_go_as_one_call_and_stay_exact(
    redis_server: RedisServer,
) -> None:
    redis_server.client().flushall()
    key = spec(requests_per_minute=20, tokens_per_minute=100_000)
    backend = RedisLimits.from_url(redis_server.url)
    limiter = Limiter({"team-a": key}, backend)
    assert isinstance(await limiter.admit(key, "fast", MESSAGES, {"max_tokens": 10}), Admission)  # connects
    before = _script_calls(redis_server)
    results = await asyncio.gather(*(limiter.admit(key, "fast", MESSAGES, {"max_tokens": 10}) for _ in range(50)))
    # the first finds the connection idle and goes at once; the other 49 wait for it and go together
    assert _script_calls(redis_server) - before == 2
    assert sum(isinstance(r, Admission) for r in results) == 19
    refused = [r for r in results if isinstance(r, Refusal)]
    assert len(refused) == 31 and {r.code for r in refused} == {"rate_limit_exceeded"}
    usage = await backend.usage("team-a")
    assert (usage.requests, usage.refused) == (20, {"requests": 31})
    await limiter.aclose()


async def test_an_admission_cancelled_while_redis_decides_releases_its_reservation() -> None:
    key = spec(budget_tokens=10_000)
    with RedisServer() as server:
        limiter = Limiter({"team-a": key}, RedisLimits.from_url(server.url))
        first = await limiter.admit(key, "fast", MESSAGES, {"max_tokens": 1})
        assert isinstance(first, Admission)
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGSTOP)  # the next reservation is sent and not answered
        try:
            waiting = asyncio.ensure_future(limiter.admit(key, "fast", MESSAGES, {"max_tokens": 500}))
            await asyncio.sleep(0)  # one turn of the loop: the task sends its reservation and waits for the reply
            assert not waiting.done()
            waiting.cancel()  # the client went away
            with pytest.raises(asyncio.CancelledError):
                await waiting
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        await limiter.drain(10)
        usage = await limiter.backend.usage("team-a")
        assert usage.reserved == first.reserved  # only the first's, whether Redis applied the second or not
        await limiter.aclose()
