"""The failover scorecard's scenarios (bench/failover) as correctness properties: each one, in every mode it has,
must end in exactly the healthy provider's answer — from the client (sync and async) and through ``polychat serve``.

The scenarios are the bench's own data (``tests/support/scenarios.py``); the settings are the ones the scorecard
gives polychat, with shorter timeouts so the suite stays quick. Nothing here measures time: a scenario passes when
the text is right, the right provider produced it, and a resumed answer says so on its chunks.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import openai
import pytest

from polychat.providers import OpenaiChat
from polychat.routing import CircuitBreaker, RetryProvider
from tests.support.calls import Seen, call_as_user
from tests.support.faults import FaultServer, Ok
from tests.support.gateway import Gateway
from tests.support.nodns import sitecustomize as nodns
from tests.support.scenarios import ANSWER, CUT, SCENARIOS, Addresses, Scenario, by_key

MSGS = [{"role": "user", "content": "Count from one to twelve in words."}]
#: The scorecard's polychat settings (bench/failover/README.md), with the timeouts scaled down.
SETTINGS: dict[str, Any] = {
    "max_retries": 1,
    "first_token_timeout": 1.0,
    "idle_timeout": 1.0,
    "hedge_after": 0.5,
    "resume": True,
}
TIMEOUT = 2.0
#: Scenarios whose first provider fails after content reached the caller: the answer must be resumed, and say so.
RESUMED = {"stream-cut", "stream-stall", "malformed-sse", "error-frame", "prefill-rejected"}

CELLS = [
    pytest.param(s, stream, id=f"{s.key}-{'stream' if stream else 'plain'}") for s in SCENARIOS for stream in s.modes
]
_tags = itertools.count()


@pytest.fixture(scope="module", autouse=True)
def no_dns_leaves() -> None:
    nodns.install()  # the .invalid lookup fails here, not at the machine's name server


@pytest.fixture(scope="module")
def addresses() -> Iterator[Addresses]:
    with Addresses() as a:
        yield a


def call(flavour: str, provider: RetryProvider, stream: bool) -> Seen:
    return call_as_user(flavour, {"provider": provider, "timeout": TIMEOUT}, stream=stream, messages=MSGS)


def check(scenario: Scenario, stream: bool, seen: Seen) -> None:
    assert seen.error is None, seen.error
    assert seen.text == ANSWER
    if stream and scenario.key in RESUMED:
        assert seen.resumed_from == {"A"}, "a resumed answer says where it was resumed from"
    elif scenario.key not in ("500-burst", "flapping"):  # those may recover on the first provider itself
        assert seen.providers[-1] == "B"


@pytest.mark.parametrize(("scenario", "stream"), CELLS)
def test_client_gets_the_healthy_answer(
    faults: FaultServer, addresses: Addresses, flavour: str, scenario: Scenario, stream: bool
) -> None:
    tag = f"t{next(_tags)}"
    a = addresses.first_url(scenario, faults, tag + "a")
    b = faults.scenario(tag + "b", scenario.second)
    provider = RetryProvider(
        [OpenaiChat(base_url=a, api_key="k", name="A"), OpenaiChat(base_url=b, api_key="k", name="B")],
        breaker=CircuitBreaker(),
        **SETTINGS,
    )
    for _ in range(scenario.calls):
        check(scenario, stream, call(flavour, provider, stream))
    if scenario.key == "prefill-rejected":
        # The fallback got a continuation it accepts (the partial answer, then a user turn), never a 400.
        continuation = faults.requests(tag + "b")
        assert continuation and all(r.body["messages"][-1]["role"] == "user" for r in continuation)


# -- through the gateway -------------------------------------------------------------------------------------------


def gateway_config(faults: FaultServer, addresses: Addresses) -> str:
    lines = ["[defaults]", f"timeout = {TIMEOUT}", *(f"{k} = {str(v).lower()}" for k, v in SETTINGS.items()), ""]
    for i, sc in enumerate(SCENARIOS):
        for stream in sc.modes:
            route = f"{sc.key}-{'stream' if stream else 'plain'}"
            a = addresses.first_url(sc, faults, f"gw{i}{route}a")
            b = faults.scenario(f"gw{i}{route}b", sc.second)
            for side, url in (("a", a), ("b", b)):
                lines += [
                    f"[providers.{route}-{side}]",
                    'type = "openai"',
                    f'base_url = "{url}"',
                    'api_key_env = "FAULT_KEY"',
                    "",
                ]
            lines += [f"[routes.{route}]", f'chain = ["{route}-a:m", "{route}-b:m"]', ""]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def gateway(fault: FaultServer, addresses: Addresses) -> Iterator[Gateway]:
    nodns_dir = os.pathsep.join([str(Path(nodns.__file__).parent), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    with Gateway(config_text=gateway_config(fault, addresses), env={"PYTHONPATH": nodns_dir, "FAULT_KEY": "k"}) as gw:
        yield gw


@pytest.mark.parametrize(("scenario", "stream"), CELLS)
def test_gateway_gets_the_healthy_answer(gateway: Gateway, scenario: Scenario, stream: bool) -> None:
    route = f"{scenario.key}-{'stream' if stream else 'plain'}"
    with openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0, timeout=60) as client:
        for _ in range(scenario.calls):
            if stream:
                chunks = client.chat.completions.create(model=route, messages=MSGS, stream=True)  # type: ignore[arg-type]
                text = "".join((c.choices[0].delta.content or "") if c.choices else "" for c in chunks)
            else:
                r = client.chat.completions.create(model=route, messages=MSGS)  # type: ignore[arg-type]
                text = r.choices[0].message.content or ""
            assert text == ANSWER


# -- resume onto a provider that claims prefill but refuses it -----------------------------------------------------


class PrefillChat(OpenaiChat):
    """An OpenAI-compatible server that says it continues an assistant prefill (as Anthropic's protocol does),
    while the model behind it refuses one, as some do."""

    capabilities = msgspec.structs.replace(OpenaiChat.capabilities, prefill=True)


def test_fallback_refusing_prefill_gets_a_continuation_instruction(faults: FaultServer, flavour: str) -> None:
    tag = f"t{next(_tags)}"
    first = by_key("prefill-rejected").first
    a = faults.scenario(tag + "a", *first)
    b = faults.scenario(tag + "b", Ok(text=ANSWER, continues=True, reject_prefill=True))
    provider = RetryProvider(
        [OpenaiChat(base_url=a, api_key="k", name="A"), PrefillChat(base_url=b, api_key="k", name="B")],
        breaker=CircuitBreaker(),
        **SETTINGS,
    )
    seen = call(flavour, provider, stream=True)
    assert seen.text == ANSWER and seen.resumed_from == {"A"}
    tried = [r.body["messages"] for r in faults.requests(tag + "b")]
    # First the prefill (refused with a 400), then the same provider again with an instruction to continue.
    assert [m[-1]["role"] for m in tried] == ["assistant", "user"]
    assert tried[1][-2] == {"role": "assistant", "content": " ".join(ANSWER.split()[:CUT])}
    assert provider.breaker is not None and not provider.breaker.is_open(provider.providers[1].breaker_key)
