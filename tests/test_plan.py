"""The pure parts of failover: backoff, the plan's decisions, the breaker's states, resume overlap, the watchdog."""

from __future__ import annotations

import random
import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest

from polychat import errors
from polychat._timeouts import Limits, Watch
from polychat.providers import OpenaiChat
from polychat.routing import plan as plan_module
from polychat.routing.breaker import CircuitBreaker
from polychat.routing.plan import FailoverPlan, Step, backoff_delay
from polychat.routing.resume import overlap


def due(plan: FailoverPlan) -> Step:
    """The plan's next step, which the test expects there to be."""
    step = plan.next_step()
    assert step is not None
    return step


def providers(n: int) -> list[OpenaiChat]:
    return [OpenaiChat(base_url=f"http://127.0.0.1:{9000 + i}/v1", name=f"P{i}") for i in range(n)]


def status(code: int, **kw: Any) -> errors.APIStatusError:
    return errors.status_error(code, {"error": {"message": "x"}}, **kw)


def test_backoff_is_full_jitter_within_exponential_cap() -> None:
    rng = random.Random(1)
    for n, cap in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (10, 8.0)]:
        samples = [backoff_delay(n, rng) for _ in range(2000)]
        assert 0 <= min(samples) < cap * 0.05
        assert cap * 0.95 < max(samples) <= cap


def test_switching_provider_never_waits() -> None:
    plan = FailoverPlan(providers(2), max_retries=3)
    s = plan.next_step()
    assert s is not None and s.delay == 0
    plan.failed(s, errors.APIConnectionError("refused"), 0.01)
    s2 = plan.next_step()
    assert s2 is not None and s2.provider.name == "P1" and s2.delay == 0


def test_connection_error_on_last_provider_backs_off() -> None:
    plan = FailoverPlan(providers(1), max_retries=2, rng=random.Random(3))
    s = plan.next_step()
    assert s is not None
    plan.failed(s, errors.APIConnectionError("refused"), 0.01)
    s2 = plan.next_step()
    assert s2 is not None and s2.provider.name == "P0" and 0 <= s2.delay <= 0.5 and s2.retry == 1


def test_5xx_retries_same_provider_with_growing_ceiling() -> None:
    class Max(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return b

    plan = FailoverPlan(providers(2), max_retries=3, rng=Max())
    delays = []
    for _ in range(4):
        s = plan.next_step()
        assert s is not None and s.provider.name == "P0"
        plan.failed(s, status(503), 0.0)
        delays.append(due(plan).delay)
    assert delays == [0.5, 1.0, 2.0, 0.0]  # fourth failure: the 3 retries are spent, switch at once
    assert due(plan).provider.name == "P1"


def test_429_rules() -> None:
    # another provider left: switch at once, whatever Retry-After says
    plan = FailoverPlan(providers(2), max_retries=3)
    s = due(plan)
    plan.failed(s, status(429, retry_after=2.0), 0.0)
    assert (due(plan).provider.name, due(plan).delay) == ("P1", 0.0)
    # the only provider: wait exactly Retry-After
    plan = FailoverPlan(providers(2), max_retries=3, single_provider_retry=True)
    s = due(plan)
    plan.failed(s, status(429, retry_after=2.0), 0.0)
    assert (due(plan).provider.name, due(plan).delay) == ("P0", 2.0)
    # beyond the cap: give up on it
    plan = FailoverPlan(providers(1), max_retries=3, retry_after_cap=60)
    s = due(plan)
    plan.failed(s, status(429, retry_after=61.0), 0.0)
    assert plan.next_step() is None


@pytest.mark.parametrize("code", [400, 401, 403, 404, 422])
def test_client_errors_never_retry_same_provider(code: int) -> None:
    plan = FailoverPlan(providers(1), max_retries=5)
    s = due(plan)
    plan.failed(s, status(code), 0.0)
    assert plan.next_step() is None


def test_retry_after_header_forms() -> None:
    from email.utils import formatdate

    from polychat._http import retry_after_seconds

    assert retry_after_seconds({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert retry_after_seconds({"retry-after": "7"}) == 7.0
    date = retry_after_seconds({"retry-after": formatdate(time.time() + 30, usegmt=True)})
    assert date is not None and 28 <= date <= 31
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None


def test_deadline_stops_plan_before_a_wait_that_would_pass_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # A clock that stands still: the first step is due now, and the backoff after a 503 would end past the deadline.
    monkeypatch.setattr(plan_module, "time", SimpleNamespace(monotonic=lambda: 100.0))
    plan = FailoverPlan(providers(1), max_retries=3, rng=random.Random(0), deadline_at=100.001)
    s = plan.next_step()
    assert s is not None
    plan.failed(s, status(503), 0.0)
    assert plan.next_step() is None
    assert isinstance(plan.error(), errors.APITimeoutError)


def test_breaker_states_and_open_providers_moved_last() -> None:
    br = CircuitBreaker(threshold=2, cooldown=10)
    ps = providers(3)
    key = ps[0].breaker_key
    br.failure(key, status(500))
    assert br.state(key) == "closed"
    br.failure(key, status(400))  # the request's fault: does not count
    assert br.state(key) == "closed"
    br.failure(key, errors.APIConnectionError("x"))
    assert br.state(key) == "open" and br.is_open(key)
    plan = FailoverPlan(ps, max_retries=0, breaker=br)
    order = []
    while (s := plan.next_step()) is not None:
        order.append(s.provider.name)
        plan.failed(s, status(500), 0.0)
    assert order == ["P1", "P2", "P0"]  # skipped, then given its last chance


def test_breaker_auth_failure_opens_at_once_for_long() -> None:
    br = CircuitBreaker(threshold=5, auth_cooldown=3600)
    br.failure("k", status(401))
    st = br.store.get("k")
    assert st.state == "open" and st.open_until - time.monotonic() > 3500


def test_half_open_allows_one_probe() -> None:
    br = CircuitBreaker(threshold=1, cooldown=0.0)
    br.failure("k", status(500))
    assert not br.is_open("k", now=time.monotonic() + 1)  # cooldown over: a probe may go
    br.acquire("k")
    assert br.state("k") == "half-open" and br.is_open("k")  # the probe is out: others wait
    br.success("k")
    assert br.state("k") == "closed" and not br.is_open("k")


def test_overlap_trimming() -> None:
    assert overlap("The capital of France is", " France is Paris.") == len(" France is")
    assert overlap("The capital of France is", " is Paris.") == 0  # " is" is too short to be sure
    assert overlap("Hello there", "Hello there, friend") == len("Hello there")
    assert overlap("abc", "xyz") == 0
    assert overlap("one two", " two three") == 4
    assert overlap("a b", " b") == 0  # two characters of coincidence are kept


def test_watchdog_fires_and_cancels() -> None:
    fired = threading.Event()
    w = Watch(Limits(first_token=0.05))
    w.attach(fired.set)
    w.start()
    assert fired.wait(5)
    assert w.fired is not None and "first_token_timeout" in w.fired


def test_watchdog_does_not_count_paused_time() -> None:
    fired = threading.Event()
    w = Watch(Limits(idle=0.05))
    w.attach(fired.set)
    w.phase = "idle"
    w.pause()
    assert not fired.wait(0.2)  # paused: nothing may fire
    w.resume()
    assert fired.wait(5) and "idle_timeout" in (w.fired or "")
