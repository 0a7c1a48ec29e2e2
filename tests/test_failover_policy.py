"""Failover switches set at several levels: the most specific level that sets a switch wins, also with False.

The call beats the chain (a RetryProvider or a config route), which beats the client (or the config's
``[defaults]``); ``None`` at a level leaves the switch to the next. The end-to-end tests run sync and async against
the fault-injecting server; the merge itself is checked switch by switch without I/O.
"""

from __future__ import annotations

from typing import Any

import pytest

from polychat import Client, FailoverPolicy, errors
from polychat._failover import SWITCHES, UNSET, CallPolicy
from polychat.config import parse_config
from polychat.providers import OpenaiChat
from polychat.routing import CircuitBreaker, RetryProvider
from tests.support.calls import MSGS, NoJitter, Seen, call_as_user
from tests.support.faults import Empty, FaultServer, Ok, ResetAfter

# A value for each switch, and a different one (both set: None never stands in for a value here).
_ONE: dict[str, Any] = {
    "first_token_timeout": 1.0,
    "idle_timeout": 2.0,
    "response_timeout": 2.5,
    "deadline": 3.0,
    "hedge_after": 4.0,
    "resume": True,
    "allow_empty": True,
}
_OTHER: dict[str, Any] = {
    "first_token_timeout": 10.0,
    "idle_timeout": 20.0,
    "response_timeout": 25.0,
    "deadline": 30.0,
    "hedge_after": 40.0,
    "resume": False,
    "allow_empty": False,
}


def run(flavour: str, client_kwargs: dict[str, Any], *, stream: bool, model: str = "m", **call: Any) -> Seen:
    """One call as a user makes it, with the client built from ``client_kwargs``."""
    return call_as_user(flavour, client_kwargs, stream=stream, model=model, **call)


def chain(*urls: str, **switches: Any) -> RetryProvider:
    providers = [OpenaiChat(base_url=u, name=name, api_key="") for name, u in zip("AB", urls, strict=True)]
    return RetryProvider(providers, max_retries=0, breaker=CircuitBreaker(), rng=NoJitter(), **switches)


# -- the merge, switch by switch ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SWITCHES)
def test_most_specific_level_that_sets_a_switch_wins(name: str) -> None:
    one, other = FailoverPolicy(**{name: _ONE[name]}), FailoverPolicy(**{name: _OTHER[name]})
    assert getattr(one.merged(other), name) == _ONE[name]
    assert getattr(other.merged(one), name) == _OTHER[name]
    assert getattr(UNSET.merged(UNSET, other), name) == _OTHER[name]  # unset levels are skipped
    assert getattr(UNSET.merged(UNSET), name) is None


def test_call_policy_takes_call_over_chain_over_client_for_every_switch() -> None:
    everything = FailoverPolicy(**_ONE)
    others = FailoverPolicy(**_OTHER)
    for name in SWITCHES:
        alone = FailoverPolicy(**{name: _OTHER[name]})
        for resolved in (CallPolicy.resolve(alone, everything), CallPolicy.resolve(UNSET, alone, everything)):
            got = resolved.deadline_at is not None if name == "deadline" else getattr(resolved, name)
            want = True if name == "deadline" else _OTHER[name]
            assert got == want, name
        # and the less specific levels only fill gaps
        resolved = CallPolicy.resolve(UNSET, UNSET, others)
        assert resolved.resume is False and resolved.allow_empty is False and resolved.hedge_after == 40.0


def test_bad_values_are_refused_at_every_level_in_its_own_terms() -> None:
    with pytest.raises(errors.ConfigError, match="resume must be true or false"):
        Client(resume="yes")  # type: ignore[arg-type]
    with pytest.raises(errors.ConfigError, match="idle_timeout must be a positive number of seconds, got 0"):
        RetryProvider([OpenaiChat(api_key="")], idle_timeout=0)
    with pytest.raises(errors.ConfigError, match="allow_empty must be true or false"):
        RetryProvider([OpenaiChat(api_key="")], allow_empty=1)  # type: ignore[arg-type]
    with pytest.raises(errors.InvalidRequestError, match="Invalid argument deadline: must be a positive") as e:
        Client(provider=OpenaiChat(api_key="")).chat.completions.create(model="m", messages=MSGS, deadline=-1)
    assert e.value.param == "deadline"
    with pytest.raises(errors.ConfigFileError, match=r"routes\.r\.allow_empty: must be true or false"):
        parse_config('[routes.r]\nchain = ["local"]\nallow_empty = "no"\n')
    with pytest.raises(errors.ConfigError, match="hedge_after must be a positive number of seconds, got inf"):
        Client(hedge_after=float("inf"))


# -- end to end: the bug where a chain's False lost to the client's True ----------------------------------------


def test_chain_resume_false_beats_client_resume_true(faults: FaultServer, flavour: str) -> None:
    a = faults.scenario("a", ResetAfter(2))
    b = faults.scenario("b", Ok(text="never asked"))
    res = run(flavour, {"provider": chain(a, b, resume=False), "resume": True}, stream=True)
    assert isinstance(res.error, errors.StreamInterruptedError) and res.error.partial == "one two"
    assert faults.requests("b") == []
    # ...and the call beats the chain: resume=True on the call resumes on B.
    res = run(flavour, {"provider": chain(a, b, resume=False), "resume": False}, stream=True, resume=True)
    assert res.error is None and res.text.startswith("one two") and "B" in res.providers


def test_call_resume_false_beats_chain_resume_true(faults: FaultServer, flavour: str) -> None:
    a = faults.scenario("a", ResetAfter(2))
    b = faults.scenario("b", Ok(text="never asked"))
    res = run(flavour, {"provider": chain(a, b, resume=True)}, stream=True, resume=False)
    assert isinstance(res.error, errors.StreamInterruptedError) and faults.requests("b") == []


@pytest.mark.parametrize("stream", [False, True])
def test_chain_allow_empty_false_beats_client_allow_empty_true(faults: FaultServer, flavour: str, stream: bool) -> None:
    a = faults.scenario("a", Empty())
    b = faults.scenario("b", Ok(text="something"))
    res = run(flavour, {"provider": chain(a, b, allow_empty=False), "allow_empty": True}, stream=stream)
    assert res.error is None and res.text == "something" and set(res.providers) == {"B"}
    # With the chain leaving it unset, the client's True holds: A's empty answer is the answer.
    res = run(flavour, {"provider": chain(a, b), "allow_empty": True}, stream=stream)
    assert res.error is None and res.text == "" and set(res.providers) <= {"A"}
    # The call's False beats both.
    res = run(
        flavour, {"provider": chain(a, b, allow_empty=True), "allow_empty": True}, stream=stream, allow_empty=False
    )
    assert res.text == "something" and set(res.providers) == {"B"}


def test_bare_provider_follows_client_allow_empty(faults: FaultServer, flavour: str) -> None:
    a = faults.scenario("a", Empty())
    bare = OpenaiChat(base_url=a, name="A", api_key="")
    assert run(flavour, {"provider": bare, "max_retries": 0}, stream=False).error is None  # nothing to fail over to
    res = run(flavour, {"provider": bare, "max_retries": 0, "allow_empty": False}, stream=False)
    assert isinstance(res.error, errors.EmptyResponseError)


def test_config_route_beats_config_defaults(faults: FaultServer, flavour: str) -> None:
    a = faults.scenario("a", ResetAfter(2))
    b = faults.scenario("b", Ok(text="never asked"))
    config = parse_config(
        "[defaults]\nresume = true\nmax_retries = 0\n"
        f'[providers.a]\ntype = "openai"\nbase_url = "{a}"\n'
        f'[providers.b]\ntype = "openai"\nbase_url = "{b}"\n'
        '[routes.r]\nchain = ["a:m", "b:m"]\nresume = false\n'
        '[routes.s]\nchain = ["a:m", "b:m"]\n'
    )
    assert config.failover == FailoverPolicy(resume=True)
    res = run(flavour, {"config": config}, stream=True, model="r")
    assert isinstance(res.error, errors.StreamInterruptedError) and faults.requests("b") == []
    res = run(flavour, {"config": config}, stream=True, model="s")  # no switch on the route: [defaults] applies
    assert res.error is None and res.text.startswith("one two") and "b" in res.providers
