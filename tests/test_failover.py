"""The failover contract (DESIGN.md §3), row by row, sync and async, against the fault-injecting server.

Each test runs once per flavour: ``sync`` uses ``Client``, ``async`` uses ``AsyncClient`` in its own event loop.
"""

from __future__ import annotations

import asyncio
import logging
from email.utils import formatdate
from typing import Any

import pytest

from polychat import AsyncClient, Client, errors
from polychat.providers import OpenaiChat
from polychat.routing import CircuitBreaker, RetryProvider
from tests.support.calls import MSGS, NoJitter, Seen, call_as_user
from tests.support.faults import (
    CloseBeforeHeaders,
    Empty,
    ErrorFrame,
    FaultServer,
    Malformed,
    Ok,
    ResetAfter,
    Stall,
    Status,
    Truncate,
)
from tests.support.servers import wait_until

DEAD = "http://127.0.0.1:9/v1"


def chain(*urls: str, **kwargs: Any) -> RetryProvider:
    providers = [OpenaiChat(base_url=u, name=name) for name, u in zip("ABCDEFG", urls, strict=False)]
    kwargs.setdefault("breaker", CircuitBreaker())
    kwargs.setdefault("rng", NoJitter())
    return RetryProvider(providers, **kwargs)


def run(flavour: str, provider: Any, *, stream: bool, **call: Any) -> Seen:
    """One call the way a user makes it, through a client on ``provider``, collecting what the caller sees."""
    return call_as_user(flavour, {"provider": provider}, stream=stream, **call)


# -- connection failures -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_connection_refused_switches_to_next_provider(faults: FaultServer, flavour: str, stream: bool) -> None:
    b = faults.scenario("b", Ok(text="from B"))
    res = run(flavour, chain(DEAD, b), stream=stream)
    assert res.error is None and res.text == "from B" and res.provider == "B"
    assert len(faults.requests("b")) == 1


def test_close_before_headers_fails_over(faults: FaultServer, flavour: str) -> None:
    a = faults.scenario("a", CloseBeforeHeaders())
    b = faults.scenario("b", Ok(text="fine"))
    res = run(flavour, chain(a, b), stream=True)
    assert res.text == "fine" and res.provider == "B"
    assert len(faults.requests("a")) == 1  # a connection error: next provider at once, no retry of A


def test_connection_error_on_only_provider_is_retried(faults: FaultServer, flavour: str) -> None:
    a = faults.scenario("a", CloseBeforeHeaders(), CloseBeforeHeaders(), Ok(text="third time"))
    res = run(flavour, chain(a, max_retries=2), stream=True)
    assert res.text == "third time"
    assert len(faults.requests("a")) == 3


# -- 429 and Retry-After -----------------------------------------------------------------------------------------


def test_429_retry_after_ms_is_waited_on_the_only_provider(faults: FaultServer, flavour: str) -> None:
    a = faults.scenario("a", Status(429, {"retry-after-ms": "400"}), Ok(text="after waiting"))
    res = run(flavour, chain(a, single_provider_retry=True, max_retries=3), stream=False)
    assert res.text == "after waiting"
    first, second = faults.requests("a")
    assert second.arrived - first.arrived >= 0.4


def test_429_retry_after_http_date_is_honoured(faults: FaultServer, flavour: str) -> None:
    import time

    when = formatdate(time.time() + 1.0, usegmt=True)  # one-second resolution: waits ~0-1 s past now
    a = faults.scenario("a", Status(429, {"retry-after": when}), Ok(text="ok"))
    res = run(flavour, chain(a, max_retries=1), stream=True)
    assert res.text == "ok"
    assert len(faults.requests("a")) == 2


def test_429_with_another_provider_switches_at_once_and_cools_down(faults: FaultServer, flavour: str) -> None:
    breaker = CircuitBreaker()
    a = faults.scenario("a", Status(429, {"retry-after": "30"}))
    b = faults.scenario("b", Ok(text="B answers"))
    provider = chain(a, b, breaker=breaker)
    res = run(flavour, provider, stream=True)
    assert res.text == "B answers"
    assert len(faults.requests("a")) == 1
    assert breaker.state(provider.providers[0].breaker_key) == "open"
    # The next call skips A while it cools down.
    res = run(flavour, provider, stream=False)
    assert res.provider == "B" and len(faults.requests("a")) == 1


def test_429_retry_after_beyond_cap_is_not_waited(faults: FaultServer, flavour: str) -> None:
    a = faults.scenario("a", Status(429, {"retry-after": "3600"}))
    res = run(flavour, chain(a, single_provider_retry=True, max_retries=5), stream=False)
    assert isinstance(res.error, errors.RateLimitError)
    assert res.error.retry_after == 3600
    assert len(faults.requests("a")) == 1


# -- 5xx and retries ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [500, 502, 503, 529, 408, 409])
def test_retryable_status_is_retried_on_same_provider(faults: FaultServer, flavour: str, code: int) -> None:
    a = faults.scenario("a", Status(code), Status(code), Ok(text="recovered"))
    b = faults.scenario("b", Ok(text="B"))
    res = run(flavour, chain(a, b, max_retries=2), stream=True)
    assert res.text == "recovered" and res.provider == "A"
    assert len(faults.requests("a")) == 3 and not faults.requests("b")


def test_retries_exhausted_then_next_provider(faults: FaultServer, flavour: str) -> None:
    a = faults.scenario("a", Status(503))
    b = faults.scenario("b", Ok(text="B"))
    res = run(flavour, chain(a, b, max_retries=2), stream=False)
    assert res.text == "B"
    assert len(faults.requests("a")) == 3


def test_x_should_retry_false_is_respected(faults: FaultServer, flavour: str) -> None:
    a = faults.scenario("a", Status(503, {"x-should-retry": "false"}), Ok())
    res = run(flavour, chain(a, max_retries=3), stream=False)
    assert isinstance(res.error, errors.InternalServerError)
    assert len(faults.requests("a")) == 1


def test_seed_single_provider_retry_max_retries_5(faults: FaultServer, flavour: str) -> None:
    a = faults.scenario("a", *[Status(503)] * 5, Ok(text="sixth try"))
    b = faults.scenario("b", Ok(text="never"))
    res = run(flavour, chain(a, b, single_provider_retry=True, max_retries=5), stream=True)
    assert res.text == "sixth try"
    assert len(faults.requests("a")) == 6 and not faults.requests("b")
    a2 = faults.scenario("a2", Status(503))
    res = run(flavour, chain(a2, b, single_provider_retry=True, max_retries=5), stream=True)
    assert isinstance(res.error, errors.InternalServerError)
    assert len(faults.requests("a2")) == 6 and not faults.requests("b")
    assert len(res.error.attempts) == 6


# -- client errors -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [400, 404, 422])
def test_client_error_fails_over_without_retry(faults: FaultServer, flavour: str, code: int) -> None:
    a = faults.scenario("a", Status(code))
    b = faults.scenario("b", Ok(text="B accepts it"))
    res = run(flavour, chain(a, b, max_retries=3), stream=True)
    assert res.text == "B accepts it"
    assert len(faults.requests("a")) == 1


def test_same_client_error_everywhere_raises_that_class(faults: FaultServer, flavour: str) -> None:
    a = faults.scenario("a", Status(400, message="bad A"))
    b = faults.scenario("b", Status(400, message="bad B"))
    res = run(flavour, chain(a, b), stream=False)
    assert type(res.error) is errors.BadRequestError
    assert "bad A" in str(res.error) and "bad B" in str(res.error)
    assert res.error.status_code == 400


@pytest.mark.parametrize("code", [401, 403])
def test_auth_failure_fails_over_and_opens_breaker(faults: FaultServer, flavour: str, code: int) -> None:
    breaker = CircuitBreaker()
    a = faults.scenario("a", Status(code))
    b = faults.scenario("b", Ok(text="B"))
    provider = chain(a, b, breaker=breaker, max_retries=3)
    res = run(flavour, provider, stream=False)
    assert res.text == "B" and len(faults.requests("a")) == 1
    assert breaker.state(provider.providers[0].breaker_key) == "open"


# -- timeouts ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stall", "timeout"),
    [
        pytest.param(Stall(), 0.3, id="before-headers"),
        # Headers and keep-alive comments flow, but no token: only an application-level timer can see this.
        pytest.param(Stall(after_chunks=0, keepalive=0.05), 0.4, id="with-keepalives"),
    ],
)
def test_first_token_timeout_fails_over(faults: FaultServer, flavour: str, stall: Stall, timeout: float) -> None:
    a = faults.scenario("a", stall)
    b = faults.scenario("b", Ok(text="quick"))
    res = run(flavour, chain(a, b, first_token_timeout=timeout), stream=True)
    assert res.text == "quick" and res.provider == "B"
    faults.release()


def test_first_token_timeout_on_only_provider_says_so(faults: FaultServer, flavour: str) -> None:
    a = faults.scenario("a", Stall(after_chunks=0, keepalive=0.05))
    res = run(flavour, chain(a, max_retries=0), stream=True, first_token_timeout=0.3)
    assert isinstance(res.error, errors.APITimeoutError)
    assert "first_token_timeout" in str(res.error)
    faults.release()


def test_idle_timeout_after_content_interrupts(faults: FaultServer, flavour: str) -> None:
    a = faults.scenario("a", Stall(after_chunks=2))
    b = faults.scenario("b", Ok(text="never used"))
    res = run(flavour, chain(a, b), stream=True, idle_timeout=0.3)
    err = res.error
    assert isinstance(err, errors.StreamInterruptedError)
    assert err.partial == "alpha beta" == res.text
    assert err.provider == "A"
    assert isinstance(err.cause, errors.APITimeoutError) and "idle_timeout" in str(err.cause)
    assert not faults.requests("b")
    faults.release()


def test_slow_consumer_is_not_an_idle_timeout(faults: FaultServer, flavour: str) -> None:
    # Time the caller spends with a chunk is not the provider's silence.
    a = faults.scenario("a", Ok(text="one two three"))
    provider = chain(a, idle_timeout=0.2)
    if flavour == "sync":
        import threading

        client = Client(provider=provider)
        stream = client.chat.completions.create(model="m", messages=MSGS, stream=True)
        got = []
        for c in stream:
            got.append(c.choices[0].delta.content or "" if c.choices else "")
            threading.Event().wait(0.3)  # a slow consumer (not synchronisation: the test is about slowness)
        assert "".join(got) == "one two three"
    else:

        async def go() -> str:
            async with AsyncClient(provider=provider) as client:
                stream = await client.chat.completions.create(model="m", messages=MSGS, stream=True)
                text = ""
                async for c in stream:
                    text += c.choices[0].delta.content or "" if c.choices else ""
                    await asyncio.sleep(0.3)
                return text

        assert asyncio.run(go()) == "one two three"


def test_overall_deadline_stops_the_chain(faults: FaultServer, flavour: str) -> None:
    a = faults.scenario("a", Stall())
    b = faults.scenario("b", Stall())
    res = run(flavour, chain(a, b, deadline=0.5), stream=False)
    assert isinstance(res.error, errors.APITimeoutError)
    assert "deadline" in str(res.error)
    faults.release()


# -- broken streams ----------------------------------------------------------------------------------------------


def broken_streams(after: int) -> list[Any]:
    """Each way a stream can break, ``after`` content chunks."""
    return [
        pytest.param(ResetAfter(after), id="reset"),
        pytest.param(ErrorFrame(after_chunks=after), id="error-frame"),
        pytest.param(Malformed(after_chunks=after), id="malformed"),
        pytest.param(Truncate(n=after), id="truncated"),
    ]


@pytest.mark.parametrize("fault", broken_streams(after=0))
def test_broken_stream_before_content_fails_over_invisibly(faults: FaultServer, flavour: str, fault: Any) -> None:
    a = faults.scenario("a", fault)
    b = faults.scenario("b", Ok(text="clean answer"))
    res = run(flavour, chain(a, b, max_retries=0), stream=True)
    assert res.error is None
    assert res.text == "clean answer"
    assert {c.provider for c in res.chunks} == {"B"}  # nothing of A's reached the caller


@pytest.mark.parametrize("fault", broken_streams(after=2))
def test_broken_stream_after_content_raises_with_partial(faults: FaultServer, flavour: str, fault: Any) -> None:
    a = faults.scenario("a", fault)
    b = faults.scenario("b", Ok(text="never"))
    res = run(flavour, chain(a, b), stream=True)
    err = res.error
    assert isinstance(err, errors.StreamInterruptedError)
    assert err.partial == res.text and err.partial.split() == (
        ["one", "two"] if isinstance(fault, ResetAfter) else ["alpha", "beta"]
    )
    assert err.provider == "A" and isinstance(err.cause, errors.APIError)
    assert not faults.requests("b")  # never spliced with another provider's text


def test_resume_continues_on_next_provider_without_repetition(faults: FaultServer, flavour: str) -> None:
    a = faults.scenario("a", Stall(after_chunks=3))
    # B repeats the tail ("gamma") before continuing: the overlap must be dropped.
    b = faults.scenario("b", Ok(text=" gamma delta epsilon"))
    res = run(flavour, chain(a, b), stream=True, idle_timeout=0.3, resume=True)
    assert res.error is None
    assert res.text == "alpha beta gamma delta epsilon"
    providers = [c.provider for c in res.chunks if c.choices and c.choices[0].delta.content]
    assert providers[:3] == ["A"] * 3 and set(providers[3:]) == {"B"}
    resumed = [c for c in res.chunks if c.provider == "B"]
    assert all(getattr(c, "resumed_from", None) == "A" for c in resumed)
    body = faults.requests("b")[0].body
    assert body["messages"][-2] == {"role": "assistant", "content": "alpha beta gamma"}
    assert body["messages"][-1]["role"] == "user" and "Continue" in body["messages"][-1]["content"]
    faults.release()


def test_resume_with_nowhere_to_go_raises_interrupted(faults: FaultServer, flavour: str) -> None:
    a = faults.scenario("a", ResetAfter(2))
    res = run(flavour, chain(a, max_retries=0), stream=True, resume=True)
    assert isinstance(res.error, errors.StreamInterruptedError) and res.error.partial == "one two"


# -- empty answers -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_empty_answer_fails_over(faults: FaultServer, flavour: str, stream: bool) -> None:
    a = faults.scenario("a", Empty())
    b = faults.scenario("b", Ok(text="something"))
    res = run(flavour, chain(a, b), stream=stream)
    assert res.text == "something" and res.provider == "B"
    res = run(flavour, chain(a, b), stream=stream, allow_empty=True)
    assert res.error is None and res.text == "" and res.provider == "A"


# -- everything failed -------------------------------------------------------------------------------------------


def test_all_failed_lists_every_attempt(faults: FaultServer, flavour: str) -> None:
    a = faults.scenario("a", Status(500))
    b = faults.scenario("b", Status(401))
    res = run(flavour, chain(a, DEAD, b, max_retries=1), stream=True)
    err = res.error
    assert isinstance(err, errors.AllProvidersFailedError) and isinstance(err, errors.APIError)
    got = [(x.provider, x.error_class, x.status_code, x.retryable) for x in err.attempts]
    assert got == [
        ("A", "InternalServerError", 500, True),
        ("A", "InternalServerError", 500, True),
        ("B", "APIConnectionError", None, True),
        ("C", "AuthenticationError", 401, False),
    ]
    assert all(x.model == "m" and x.elapsed >= 0 for x in err.attempts)
    lines = str(err).splitlines()
    assert lines[0] == "All providers failed (4 attempts):" and len(lines) == 5
    assert "C (model 'm'): AuthenticationError 401, not retryable" in lines[4]


# -- circuit breaker ---------------------------------------------------------------------------------------------


def test_breaker_opens_after_consecutive_failures_and_skips(faults: FaultServer, flavour: str) -> None:
    breaker = CircuitBreaker(threshold=3, cooldown=60)
    a = faults.scenario("a", Status(500))
    b = faults.scenario("b", Ok(text="B"))
    provider = chain(a, b, breaker=breaker, max_retries=2)
    assert run(flavour, provider, stream=False).text == "B"  # A: 3 failures -> open
    assert len(faults.requests("a")) == 3
    assert run(flavour, provider, stream=True).text == "B"
    assert len(faults.requests("a")) == 3  # skipped while open


def test_all_open_providers_are_still_tried(faults: FaultServer, flavour: str) -> None:
    breaker = CircuitBreaker(threshold=1, cooldown=60)
    a = faults.scenario("a", Status(500), Ok(text="A is back"))
    provider = chain(a, breaker=breaker, max_retries=0)
    assert isinstance(run(flavour, provider, stream=False).error, errors.InternalServerError)
    assert breaker.state(provider.providers[0].breaker_key) == "open"
    assert run(flavour, provider, stream=False).text == "A is back"
    assert breaker.state(provider.providers[0].breaker_key) == "closed"


def test_half_open_probe_closes_or_reopens(faults: FaultServer) -> None:
    import time

    breaker = CircuitBreaker(threshold=1, cooldown=0.2)
    a = faults.scenario("a", Status(500), Status(500), Ok(text="healthy"))
    b = faults.scenario("b", Ok(text="B"))
    provider = chain(a, b, breaker=breaker, max_retries=0)
    key = provider.providers[0].breaker_key
    run("sync", provider, stream=False)
    assert breaker.state(key) == "open"
    wait_until(lambda: breaker.state(key) == "half-open", timeout=5, what="cooldown")
    probed_at = time.monotonic()
    run("sync", provider, stream=False)  # the probe fails: open again, with a longer cooldown
    st = breaker.store.get(key)
    assert st.state == "open" and st.cooldown == pytest.approx(0.4)
    assert st.open_until >= probed_at + 0.4  # the longer cooldown counts from the failed probe
    wait_until(lambda: breaker.state(key) == "half-open", timeout=5, what="cooldown")
    assert run("sync", provider, stream=False).text == "healthy"
    assert breaker.state(key) == "closed"


# -- hedging -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [True, False])
def test_hedging_starts_next_provider_and_cancels_the_slow_one(faults: FaultServer, flavour: str, stream: bool) -> None:
    a = faults.scenario("a", Stall())  # never answers and never hangs up: only we can close this connection
    b = faults.scenario("b", Ok(text="fast answer"))
    res = run(flavour, chain(a, b), stream=stream, hedge_after=0.2)
    assert res.error is None and res.text == "fast answer" and res.provider == "B"
    (rec,) = faults.requests("a")
    wait_until(lambda: rec.closed is not None, timeout=10, what="the hedged-out connection to close")
    faults.release()


def test_hedging_keeps_the_first_when_it_answers_in_time(faults: FaultServer, flavour: str) -> None:
    a = faults.scenario("a", Ok(text="prompt answer"))
    b = faults.scenario("b", Ok(text="unused"))
    res = run(flavour, chain(a, b), stream=True, hedge_after=2.0)
    assert res.text == "prompt answer" and not faults.requests("b")


def test_hedging_when_both_fail_moves_on(faults: FaultServer, flavour: str) -> None:
    a = faults.scenario("a", Stall())
    b = faults.scenario("b", Status(500, {"x-should-retry": "false"}))
    c = faults.scenario("c", Ok(text="C saves the day"))
    res = run(flavour, chain(a, b, c, first_token_timeout=0.6), stream=True, hedge_after=0.1)
    assert res.text == "C saves the day"
    faults.release()


# -- several instances of one class, and logging -----------------------------------------------------------------


def test_same_class_twice_with_different_settings(faults: FaultServer, flavour: str) -> None:
    a = faults.scenario("a", Status(401))
    provider = RetryProvider(
        [
            OpenaiChat(base_url=a, api_key="sk-first-key", name="key1"),
            OpenaiChat(base_url=a.replace("/s/a/", "/s/b/"), api_key="sk-second-key", name="key2"),
        ],
        breaker=CircuitBreaker(),
    )
    faults.scenario("b", Ok(text="second key works"))
    res = run(flavour, provider, stream=True)
    assert res.text == "second key works" and res.provider == "key2"
    assert faults.requests("a")[0].headers["authorization"] == "Bearer sk-first-key"
    assert faults.requests("b")[0].headers["authorization"] == "Bearer sk-second-key"


def test_failover_is_logged_without_secrets(faults: FaultServer, caplog: pytest.LogCaptureFixture) -> None:
    a = faults.scenario("a", Status(401))
    b = faults.scenario("b", Ok(text="ok"))
    provider = RetryProvider(
        [OpenaiChat(base_url=a, api_key="sk-very-secret-1", name="A"), OpenaiChat(base_url=b, name="B")],
        breaker=CircuitBreaker(),
    )
    with caplog.at_level(logging.DEBUG, logger="polychat"):
        assert run("sync", provider, stream=True).text == "ok"
    messages = [r.getMessage() for r in caplog.records]
    assert any("A failed (AuthenticationError" in m and "switching to B" in m for m in messages)
    assert any("circuit for" in m and "open" in m for m in messages)
    assert not any("sk-very-secret-1" in m for m in messages)


@pytest.fixture
def successes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, float]]:
    """(provider, elapsed) of every success the failover engine records."""
    from polychat.routing.plan import FailoverPlan

    seen: list[tuple[str, float]] = []
    original = FailoverPlan.succeeded

    def spy(self: FailoverPlan, step: Any, elapsed: float, *rest: Any) -> None:
        seen.append((step.provider.name, elapsed))
        original(self, step, elapsed, *rest)

    monkeypatch.setattr(FailoverPlan, "succeeded", spy)
    return seen


@pytest.mark.parametrize("stream", [False, True])
def test_hedged_attempts_are_timed_from_their_own_start(faults: FaultServer, flavour: str, stream: bool) -> None:
    # Both answer empty after 0.6 s: each attempt took at least that long, the hedge wait included.
    a = faults.scenario("a", Ok(text="", delay_first=0.6))
    b = faults.scenario("b", Ok(text="", delay_first=0.6))
    res = run(flavour, chain(a, b, max_retries=0), stream=stream, hedge_after=0.1)
    assert isinstance(res.error, errors.AllProvidersFailedError)
    assert sorted(x.provider for x in res.error.attempts) == ["A", "B"]
    assert all(x.elapsed >= 0.6 for x in res.error.attempts), res.error.attempts


@pytest.mark.parametrize("stream", [False, True])
def test_success_times_include_the_wait_for_the_answer(
    faults: FaultServer, flavour: str, stream: bool, successes: list[tuple[str, float]]
) -> None:
    a = faults.scenario("a", Stall())  # never answers, so the hedge wins however slow the machine is
    b = faults.scenario("b", Ok(text="hedge wins", delay_first=0.5))
    res = run(flavour, chain(a, b), stream=stream, hedge_after=0.1)
    assert res.text == "hedge wins"
    assert successes[-1][0] == "B" and successes[-1][1] >= 0.5, successes  # not 0, not only after the first token
    c = faults.scenario("c", Ok(text="plain", delay_first=0.5))
    assert run(flavour, chain(c), stream=stream).text == "plain"
    assert successes[-1][0] == "A" and successes[-1][1] >= 0.5, successes  # the time to first token counts
    faults.release()


def test_a_hedge_never_races_a_provider_whose_circuit_is_open(faults: FaultServer, flavour: str) -> None:
    a = faults.scenario("a", Stall())  # never answers, so C's hedge wins however slow the machine is
    b = faults.scenario("b", Ok(text="B is open"))
    c = faults.scenario("c", Ok(text="C hedges"))
    provider = chain(a, b, c)
    assert provider.breaker is not None
    provider.breaker.failure(provider.providers[1].breaker_key, errors.AuthenticationError("bad key", status_code=401))
    res = run(flavour, provider, stream=True, hedge_after=0.1)
    assert res.text == "C hedges" and res.provider == "C"
    assert faults.requests("b") == []
    faults.release()


# -- a silent upstream in a non-stream chain ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "setting",
    [{"response_timeout": 0.5}, {"first_token_timeout": 0.1}],  # 6 × first_token_timeout when response_timeout unset
    ids=["response_timeout", "first_token_timeout"],
)
def test_a_silent_upstream_does_not_hold_a_non_stream_call(
    faults: FaultServer, flavour: str, setting: dict[str, float]
) -> None:
    a = faults.scenario("a", Ok(text="far too late", delay_first=120.0))
    b = faults.scenario("b", Ok(text="from B"))
    res = run(flavour, chain(a, b, max_retries=0, **setting), stream=False)
    assert res.error is None and res.text == "from B" and res.provider == "B"
    res = run(flavour, chain(a, max_retries=0, **setting), stream=False)
    assert isinstance(res.error, errors.APITimeoutError)
    assert "no answer within" in str(res.error) and "(response_timeout)" in str(res.error)


def test_a_config_routes_first_token_timeout_covers_non_stream_calls(faults: FaultServer, flavour: str) -> None:
    from polychat.config import parse_config

    a = faults.scenario("a", Ok(text="far too late", delay_first=120.0))
    b = faults.scenario("b", Ok(text="from B"))
    config = parse_config(
        f'[providers.a]\ntype = "openai"\nbase_url = "{a}"\nmodels = ["m1"]\n'
        f'[providers.b]\ntype = "openai"\nbase_url = "{b}"\nmodels = ["m2"]\n'
        '[routes.fast]\nchain = ["a:m1", "b:m2"]\nmax_retries = 0\nfirst_token_timeout = 0.1\n'
    )

    def ask() -> str:
        if flavour == "sync":
            return Client(config=config).chat.completions.create(model="fast", messages=MSGS).content

        async def go() -> str:
            async with AsyncClient(config=config) as client:
                return (await client.chat.completions.create(model="fast", messages=MSGS)).content

        return asyncio.run(go())

    assert ask() == "from B"
