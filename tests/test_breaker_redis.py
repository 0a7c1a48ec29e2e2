"""Circuit breakers shared through a real ``redis-server`` (:mod:`polychat.routing.breaker_redis`): several stores
(as several processes would have) see one state; library clients, sync and async, share it; an outage falls back
to per-process breakers with a log line when Redis is lost and when it is back.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest

from polychat import AsyncClient, Client
from polychat.errors import InternalServerError
from polychat.providers import OpenaiChat
from polychat.routing import CircuitBreaker, RedisBreakerStore, RetryProvider
from polychat.routing.breaker import OPEN, BreakerState
from tests.support.faults import FaultServer, Ok, Status
from tests.support.redis import RedisServer
from tests.support.servers import wait_until

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer(password="redis-pass-0123456789") as server:
        yield server


def test_two_stores_share_one_state_and_updates_are_atomic(redis_server: RedisServer) -> None:
    a, b = RedisBreakerStore(redis_server.url), RedisBreakerStore(redis_server.url)
    assert "redis-pass" not in repr(a)

    def bump(store: RedisBreakerStore) -> None:
        for _ in range(50):
            store.update("ep", lambda st: BreakerState(st.state, st.failures + 1))

    threads = [threading.Thread(target=bump, args=(s,)) for s in (a, b, a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert a._update("ep", lambda st: st).failures == 200  # no lost update between "processes"
    wait_until(lambda: a.get("ep").failures == b.get("ep").failures == 200, 10, what="both copies to follow")

    breaker_a, breaker_b = CircuitBreaker(a), CircuitBreaker(b)
    breaker_a.failure("ep2", InternalServerError("boom", status_code=500))
    breaker_a.failure("ep2", InternalServerError("boom", status_code=500))
    assert not breaker_b.is_open("ep2")
    breaker_a.failure("ep2", InternalServerError("boom", status_code=500))
    assert breaker_a.is_open("ep2")
    # b's copy follows through pub/sub (a message's delivery away)
    wait_until(lambda: breaker_b.is_open("ep2"), 10, what="b to see the open breaker")
    assert breaker_b.state("ep2") == OPEN and dict(b.items())["ep2"].state == OPEN
    breaker_b.success("ep2")
    wait_until(lambda: not breaker_a.is_open("ep2"), 10, what="a to see the breaker closed")
    late = RedisBreakerStore(redis_server.url)  # a process started later reads what the others left
    assert late.get("ep").failures == 200
    for store in (a, b, late):
        store.close()


def chain(fault: FaultServer, store: RedisBreakerStore) -> RetryProvider:
    flaky = OpenaiChat(base_url=fault.scenario("flaky", Status(500)), api_key="", name="flaky")
    good = OpenaiChat(base_url=fault.scenario("good", Ok("fine")), api_key="", name="good")
    return RetryProvider([flaky, good], max_retries=0, breaker=CircuitBreaker(store))


@pytest.mark.anyio
async def test_a_breaker_opened_by_a_sync_client_is_honoured_by_an_async_one(
    redis_server: RedisServer, faults: FaultServer
) -> None:
    first = RedisBreakerStore(redis_server.url)
    sync_client = Client(provider=chain(faults, first))
    for _ in range(3):
        assert sync_client.chat.completions.create(model="m", messages=HI).provider == "good"
    assert len(faults.requests("flaky")) == 3
    assert any(st.state == OPEN for _, st in first.items())
    async with AsyncClient(provider=chain(faults, RedisBreakerStore(redis_server.url))) as async_client:
        answer = await async_client.chat.completions.create(model="m", messages=HI)
    assert answer.provider == "good"
    assert len(faults.requests("flaky")) == 3  # skipped: its breaker is open, as the other client left it


def test_redis_outage_falls_back_to_this_process_and_says_so(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    store = RedisBreakerStore(redis_server.url)
    breaker = CircuitBreaker(store)
    with caplog.at_level(logging.WARNING, logger="polychat"):
        redis_server.kill()
        for _ in range(3):
            breaker.failure("ep", InternalServerError("boom", status_code=500))
        assert breaker.is_open("ep")  # still a working breaker, in this process
        lost = [r.getMessage() for r in caplog.records if "lost the connection to Redis" in r.getMessage()]
        assert len(lost) == 1  # one line, not one per call
        redis_server.restart()
        # Redis (empty after the restart) is the truth again once the store has reconnected
        wait_until(lambda: not breaker.is_open("ep"), 30, what="the store to resync with Redis")
    messages = [r.getMessage() for r in caplog.records]
    assert any("reachable again" in m for m in messages)
    assert not any("redis-pass" in m for m in messages)


LISTENER = "polychat-breakers-redis"


def listeners() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == LISTENER and t.is_alive()}


def test_two_clients_given_a_redis_url_share_a_breaker_and_close_their_listeners(
    redis_server: RedisServer, faults: FaultServer
) -> None:
    import asyncio

    flaky_url = faults.scenario("bs-flaky", Status(500))
    good_url = faults.scenario("bs-good", Ok("fine"))

    def providers() -> RetryProvider:  # the chain leaves the breaker to the client (no breaker=)
        flaky = OpenaiChat(base_url=flaky_url, api_key="", name="flaky")
        good = OpenaiChat(base_url=good_url, api_key="", name="good")
        return RetryProvider([flaky, good], max_retries=0)

    before = listeners()
    first = Client(provider=providers(), breaker_store=redis_server.url)
    second = AsyncClient(provider=providers(), breaker_store=redis_server.url)
    started = listeners() - before
    assert len(started) == 2  # one per client: each made its store from the URL
    assert "redis-pass" not in repr(first.breaker.store if first.breaker else None)
    for _ in range(3):
        assert first.chat.completions.create(model="m", messages=HI).provider == "good"
    assert len(faults.requests("bs-flaky")) == 3  # the third failure opened the breaker, in Redis
    assert second.breaker is not None
    wait_until(
        lambda: any(st.state == OPEN for _, st in second.breaker.store.items()),  # type: ignore[union-attr]
        10,
        what="the second client's copy to follow",
    )

    async def ask() -> str | None:
        answer = await second.chat.completions.create(model="m", messages=HI)
        await second.close()
        return answer.provider

    assert asyncio.run(ask()) == "good"
    assert len(faults.requests("bs-flaky")) == 3  # skipped: the first client's open breaker holds for the second
    # a client without breaker_store keeps the process-wide breaker, which never saw those failures
    with Client(provider=providers()) as plain:
        assert plain.chat.completions.create(model="m", messages=HI).provider == "good"
    assert len(faults.requests("bs-flaky")) == 4
    first.close()
    assert not any(t.is_alive() for t in started)  # both listener threads ended with their clients


def test_breaker_store_refuses_what_is_not_a_store() -> None:
    from polychat.errors import ConfigError

    with pytest.raises(ConfigError, match="breaker_store must be a BreakerStore"):
        Client(breaker_store=42)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="must start with redis://"):
        Client(breaker_store="http://127.0.0.1:6379")


@pytest.mark.anyio
async def test_the_gateway_closes_its_breaker_listener_on_shutdown(redis_server: RedisServer) -> None:
    from polychat.config import parse_config
    from polychat.server import ServerSettings, create_app

    before = listeners()
    app = create_app(ServerSettings(redis_url=redis_server.url), parse_config(""))
    started = listeners() - before
    assert len(started) == 1
    await app.gw.aclose()
    assert not any(t.is_alive() for t in started)


def test_closing_a_store_ends_its_listener_also_while_redis_is_down(redis_server: RedisServer) -> None:
    before = listeners()
    store = RedisBreakerStore(redis_server.url)
    started = listeners() - before
    assert len(started) == 1
    redis_server.kill()
    store.close()
    assert not any(t.is_alive() for t in started)
