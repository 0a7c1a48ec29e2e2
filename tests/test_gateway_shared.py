"""Gateway replicas sharing state through a real ``redis-server``: named keys and their limits (exact across
replicas), circuit breakers seen by every replica, and Redis killed and restarted under load.

Every gateway is a real ``polychat serve`` subprocess; the upstream is the real llama.cpp server (and the
fault-injecting server where a failure is needed); clients are the official ``openai`` package.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.support.faults import FaultServer, Status
from tests.support.gateway import Gateway, gateway_env, run_serve
from tests.support.redis import RedisServer
from tests.support.servers import LlamaServer, wait_until
from tests.test_gateway import metric_value

TOKEN = "team-a-token-0123456789"
OTHER = "team-b-token-9876543210"
HI: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hi."}]


def config(llama: LlamaServer, key: str, *, fault: FaultServer | None = None, server: str = "") -> str:
    lines = [
        "[defaults]",
        "max_retries = 0",
        "[providers.llama]",
        'type = "openai"',
        f'base_url = "{llama.base_url}"',
        'models = ["smol"]',
        "[routes.fast]",
        'chain = ["llama:smol"]',
    ]
    if fault is not None:
        lines += [
            "[providers.flaky]",
            'type = "openai"',
            f'base_url = "{fault.scenario("flaky", Status(500))}"',
            'models = ["flaky-model"]',
            "[routes.guarded]",
            'chain = ["flaky:m", "llama:smol"]',
            "max_retries = 0",
        ]
    lines += ["[server]", server, "[server.keys.team-a]", 'key_env = "TEAM_A_KEY"', key]
    lines += ["[server.keys.team-b]", 'key_env = "TEAM_B_KEY"']
    return "\n".join(lines) + "\n"


def replicas(stack: ExitStack, n: int, config_text: str, redis_url: str) -> list[Gateway]:
    env = {"TEAM_A_KEY": TOKEN, "TEAM_B_KEY": OTHER, "POLYCHAT_REDIS_URL": redis_url}
    return [stack.enter_context(Gateway(config_text=config_text, env=env)) for _ in range(n)]


def metrics(gw: Gateway, token: str = TOKEN) -> str:
    return httpx.get(f"{gw.url}/metrics", headers={"authorization": f"Bearer {token}"}).text


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def test_keys_wrong_key_401_allowlist_403_limit_429_and_usage_readable(
    llama_server: LlamaServer, redis_server: RedisServer
) -> None:
    key = 'models = ["fast"]\nrequests_per_minute = 2'
    with ExitStack() as stack:
        (gw,) = replicas(stack, 1, config(llama_server, key), redis_server.url)
        wrong = openai.OpenAI(base_url=gw.base_url, api_key="not-a-key", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            wrong.chat.completions.create(model="fast", messages=HI, max_tokens=2)
        client = openai.OpenAI(base_url=gw.base_url, api_key=TOKEN, max_retries=0)
        with pytest.raises(openai.PermissionDeniedError) as denied:
            client.chat.completions.create(model="smol", messages=HI, max_tokens=2)
        assert denied.value.code == "model_not_allowed" and "'smol'" in denied.value.message
        used = 0
        for _ in range(2):
            answer = client.chat.completions.create(model="fast", messages=HI, max_tokens=2)
            assert answer.choices[0].message.content is not None and answer.usage is not None
            used += answer.usage.total_tokens
        with pytest.raises(openai.RateLimitError) as limited:
            client.chat.completions.create(model="fast", messages=HI, max_tokens=2)
        assert limited.value.code == "rate_limit_exceeded"
        assert 1 <= int(limited.value.response.headers["retry-after"]) <= 60
        # another key has no limits
        other = openai.OpenAI(base_url=gw.base_url, api_key=OTHER, max_retries=0)
        other.chat.completions.create(model="smol", messages=HI, max_tokens=2)

        def settled() -> bool:
            return metric_value(metrics(gw), "polychat_key_tokens_total", key="team-a", kind="total") == used

        wait_until(settled, 30, what="the answers' usage to be settled")  # settling runs after the answer is sent
        text = metrics(gw)
        assert metric_value(text, "polychat_key_requests_total", key="team-a") == 2
        assert metric_value(text, "polychat_key_refused_total", key="team-a", limit="requests") == 1
        env = gateway_env({"TEAM_A_KEY": TOKEN, "TEAM_B_KEY": OTHER})
        assert gw.config_path is not None
        shown = subprocess.run(
            [
                sys.executable,
                "-m",
                "polychat",
                "keys",
                "usage",
                "--config",
                str(gw.config_path),
                "--redis-url",
                redis_server.url,
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert shown.returncode == 0, shown.stderr
        row = next(line.split() for line in shown.stdout.splitlines() if line.startswith("team-a"))
        assert row[1] == "2"  # requests
        assert "requests 1" in shown.stdout
        assert TOKEN not in shown.stdout + shown.stderr + gw.log_text()


def test_requests_per_minute_is_exact_across_three_replicas(
    llama_server: LlamaServer, redis_server: RedisServer
) -> None:
    limit, sent = 5, 15
    with ExitStack() as stack:
        gws = replicas(stack, 3, config(llama_server, f"requests_per_minute = {limit}"), redis_server.url)

        async def burst() -> list[int]:
            clients = [openai.AsyncOpenAI(base_url=g.base_url, api_key=TOKEN, max_retries=0) for g in gws]

            async def one(i: int) -> int:
                try:
                    await clients[i % 3].chat.completions.create(model="fast", messages=HI, max_tokens=1)
                    return 200
                except openai.RateLimitError as e:
                    assert "retry-after" in e.response.headers
                    return 429

            try:
                return await asyncio.gather(*(one(i) for i in range(sent)))
            finally:
                for c in clients:
                    await c.close()

        statuses = asyncio.run(burst())
        assert statuses.count(200) == limit
        assert statuses.count(429) == sent - limit
        # each replica served some: the limit held across them, not per process
        served = [metric_value(metrics(g), "polychat_gateway_requests_total", status="200") or 0 for g in gws]
        assert sum(served) == limit
        assert metric_value(metrics(gws[0]), "polychat_key_requests_total", key="team-a") == limit


def test_token_limits_are_never_exceeded_by_concurrent_streams_across_two_replicas(
    llama_server: LlamaServer, redis_server: RedisServer
) -> None:
    # llama.cpp reports no usage on streams: served tokens are counted here, prompt tokens by asking it once.
    upstream = openai.OpenAI(base_url=llama_server.base_url, api_key="x", max_retries=0)
    prompt = upstream.chat.completions.create(model="smol", messages=HI, max_tokens=1)
    assert prompt.usage is not None
    prompt_tokens = prompt.usage.prompt_tokens
    tpm, budget, max_tokens = 400, 700, 16
    key = f"tokens_per_minute = {tpm}\nbudget_tokens = {budget}"
    with ExitStack() as stack:
        gws = replicas(stack, 2, config(llama_server, key), redis_server.url)

        async def streams(n: int) -> list[int | None]:
            clients = [openai.AsyncOpenAI(base_url=g.base_url, api_key=TOKEN, max_retries=0) for g in gws]

            async def one(i: int) -> int | None:
                try:
                    stream = await clients[i % 2].chat.completions.create(
                        model="fast",
                        messages=HI,
                        max_tokens=max_tokens,
                        stream=True,
                    )
                except openai.RateLimitError as e:
                    assert e.code in ("rate_limit_exceeded", "budget_exceeded")
                    assert "retry-after" in e.response.headers
                    return None
                served = 0
                async for chunk in stream:
                    assert chunk.usage is None  # the gateway's own usage request stays the gateway's
                    if chunk.choices and chunk.choices[0].delta.content:
                        served += 1  # llama.cpp streams one token per chunk
                return prompt_tokens + served

            try:
                return await asyncio.gather(*(one(i) for i in range(n)))
            finally:
                for c in clients:
                    await c.close()

        first = asyncio.run(streams(12))
        served = [t for t in first if t is not None]
        assert served and len(served) < 12  # some passed, the tokens-per-minute limit stopped the rest
        assert sum(served) <= tpm
        text = metrics(gws[1])
        # no usage came back on the streams: each was charged its whole reservation, never less than it used
        used = metric_value(text, "polychat_key_budget_used_tokens", key="team-a")
        assert used is not None and sum(served) <= used <= tpm
        assert metric_value(text, "polychat_key_reserved_tokens", key="team-a") == 0


def test_a_breaker_opened_through_one_replica_is_open_on_the_other(
    llama_server: LlamaServer, redis_server: RedisServer, faults: FaultServer
) -> None:
    with ExitStack() as stack:
        a, b = replicas(stack, 2, config(llama_server, "", fault=faults), redis_server.url)
        client_a = openai.OpenAI(base_url=a.base_url, api_key=OTHER, max_retries=0)
        for _ in range(3):  # three consecutive failures open the breaker (flaky answers 500; llama answers)
            answer = client_a.chat.completions.create(model="guarded", messages=HI, max_tokens=1)
            assert answer.choices
        assert len(faults.requests("flaky")) == 3
        assert metric_value(metrics(a, OTHER), "polychat_breaker_state", provider="flaky", state="open") == 1

        def open_on_b() -> bool:
            return metric_value(metrics(b, OTHER), "polychat_breaker_state", provider="flaky", state="open") == 1

        wait_until(open_on_b, 10, what="replica b to see the breaker replica a opened")
        client_b = openai.OpenAI(base_url=b.base_url, api_key=OTHER, max_retries=0)
        raw = client_b.chat.completions.with_raw_response.create(model="guarded", messages=HI, max_tokens=1)
        assert raw.headers["x-polychat-provider"] == "llama"
        assert len(faults.requests("flaky")) == 3  # replica b skipped the open provider


@pytest.mark.parametrize("mode", ["closed", "open"])
def test_redis_killed_mid_load_and_restarted(llama_server: LlamaServer, mode: str) -> None:
    key = "budget_tokens = 1000000"
    password = "redis-secret-0123456789"
    with RedisServer(persistent=True, password=password) as redis, ExitStack() as stack:
        (gw,) = replicas(stack, 1, config(llama_server, key, server=f'redis_failure = "{mode}"'), redis.url)
        client = openai.OpenAI(base_url=gw.base_url, api_key=TOKEN, max_retries=0)
        before = client.chat.completions.create(model="fast", messages=HI, max_tokens=4)
        assert before.usage is not None
        expected = before.usage.total_tokens
        # background load through the whole outage: every answer is a 200 or (closed) the limits' 503, never a crash
        stop = threading.Event()
        background: list[int] = []

        def load() -> None:
            with httpx.Client(base_url=gw.base_url, headers={"authorization": f"Bearer {TOKEN}"}, timeout=60) as c:
                while not stop.is_set():
                    body = {"model": "fast", "messages": HI, "max_tokens": 1}
                    background.append(c.post("/chat/completions", json=body).status_code)

        loader = threading.Thread(target=load)
        loader.start()
        stream = client.chat.completions.create(model="fast", messages=HI, max_tokens=8, stream=True)
        first = next(iter(stream))  # admitted, in flight
        redis.kill()
        rest = list(stream)  # it finishes while Redis is down; its settlement waits
        assert [first, *rest]
        if mode == "closed":
            with pytest.raises(openai.InternalServerError) as refused:
                client.chat.completions.create(model="fast", messages=HI, max_tokens=4)
            assert refused.value.status_code == 503 and refused.value.code == "limits_unavailable"
            assert refused.value.response.headers["retry-after"] == "1"
        else:
            during = client.chat.completions.create(model="fast", messages=HI, max_tokens=4)
            assert during.usage is not None
            expected += during.usage.total_tokens
        assert httpx.get(f"{gw.url}/health").status_code == 200  # no crash
        redis.restart()
        after = client.chat.completions.create(model="fast", messages=HI, max_tokens=4)
        assert after.usage is not None
        expected += after.usage.total_tokens

        def settled() -> bool:
            text = metrics(gw)
            total = metric_value(text, "polychat_key_tokens_total", key="team-a", kind="total") or 0
            reserved = metric_value(text, "polychat_key_reserved_tokens", key="team-a")
            # the stream reported no usage: it was charged its prompt's bound (bytes) plus the tokens it streamed,
            # more than the answers' own usage
            return reserved == 0 and total > expected

        stop.set()
        loader.join(60)
        assert set(background) <= ({200, 503} if mode == "closed" else {200}), background
        try:
            wait_until(settled, 30, what="usage settled after Redis came back")
        except TimeoutError:
            key_lines = [line for line in metrics(gw).splitlines() if line.startswith("polychat_key_")]
            raise AssertionError(f"expected > {expected}; {key_lines}\n{gw.log_text()[-3000:]}") from None
        requests = metric_value(metrics(gw), "polychat_key_requests_total", key="team-a")
        assert requests == (4 if mode == "open" else 3) + background.count(200)
        log = gw.log_text()
        assert "lost the connection to Redis" in log and "reachable again" in log
        assert password not in log and password not in metrics(gw)
        assert gw.proc is not None and gw.proc.poll() is None


def test_workers_share_limits_through_redis(llama_server: LlamaServer, redis_server: RedisServer) -> None:
    limit, sent = 4, 12
    env = {"TEAM_A_KEY": TOKEN, "TEAM_B_KEY": OTHER}
    text = config(llama_server, f"requests_per_minute = {limit}")
    with Gateway(config_text=text, env=env, args=["--workers", "2", "--redis-url", redis_server.url]) as gw:

        async def burst() -> list[int]:
            async with openai.AsyncOpenAI(base_url=gw.base_url, api_key=TOKEN, max_retries=0) as client:

                async def one() -> int:
                    try:
                        await client.chat.completions.create(model="fast", messages=HI, max_tokens=1)
                        return 200
                    except openai.RateLimitError:
                        return 429

                return await asyncio.gather(*(one() for _ in range(sent)))

        statuses = asyncio.run(burst())
        assert statuses.count(200) == limit and statuses.count(429) == sent - limit


def test_streams_settle_with_the_upstreams_usage_and_when_the_client_disconnects(
    llama_server: LlamaServer, redis_server: RedisServer, faults: FaultServer
) -> None:
    from polychat.server._limits import prompt_bound
    from tests.support.faults import Ok, Stall

    key = 'budget_tokens = 100000\nmodels = ["flaky-model"]'
    with ExitStack() as stack:
        (gw,) = replicas(stack, 1, config(llama_server, key, fault=faults), redis_server.url)
        faults.scenario("flaky", Ok("one two three four"), Stall(after_chunks=2))  # the gateway's config set it
        client = openai.OpenAI(base_url=gw.base_url, api_key=TOKEN, max_retries=0)
        chunks = list(client.chat.completions.create(model="flaky-model", messages=HI, max_tokens=50, stream=True))
        assert all(c.usage is None for c in chunks)  # the usage the gateway asked for is not the client's
        assert any(c.choices and c.choices[0].delta.content for c in chunks)
        text = metrics(gw)
        # the fault server reports prompt 3 + one token per word
        assert metric_value(text, "polychat_key_tokens_total", key="team-a", kind="total") == 7
        assert metric_value(text, "polychat_key_budget_used_tokens", key="team-a") == 7

        # a stream the client abandons settles too: with its whole reservation, as the upstream's count is unknown
        with httpx.stream(
            "POST",
            f"{gw.base_url}/chat/completions",
            json={"model": "flaky-model", "messages": HI, "max_tokens": 50, "stream": True},
            headers={"authorization": f"Bearer {TOKEN}"},
            timeout=60,
        ) as r:
            lines = r.iter_lines()
            assert next(line for line in lines if line.startswith("data: "))

        def settled() -> bool:
            t = metrics(gw)
            return metric_value(t, "polychat_key_reserved_tokens", key="team-a") == 0

        wait_until(settled, 30, what="the abandoned stream to settle")
        used = metric_value(metrics(gw), "polychat_key_budget_used_tokens", key="team-a")
        assert used == 7 + prompt_bound(HI, {}) + 50


def test_limits_hold_on_the_anthropic_route_too(llama_server: LlamaServer, redis_server: RedisServer) -> None:
    import anthropic
    from anthropic.types import MessageParam

    HI_MESSAGES: list[MessageParam] = [{"role": "user", "content": "Say hi."}]
    key = 'models = ["fast"]\nrequests_per_minute = 1'
    with ExitStack() as stack:
        (gw,) = replicas(stack, 1, config(llama_server, key), redis_server.url)
        with anthropic.Anthropic(base_url=gw.url, api_key=TOKEN, max_retries=0, timeout=120) as client:
            with pytest.raises(anthropic.PermissionDeniedError):
                client.messages.create(model="smol", max_tokens=2, messages=HI_MESSAGES)
            answer = client.messages.create(model="fast", max_tokens=2, messages=HI_MESSAGES)
            assert answer.content
            with pytest.raises(anthropic.RateLimitError) as limited:
                client.messages.create(model="fast", max_tokens=2, messages=HI_MESSAGES)
            assert 1 <= int(limited.value.response.headers["retry-after"]) <= 60
        # one key, one limit, whichever protocol the requests came in
        assert metric_value(metrics(gw), "polychat_key_requests_total", key="team-a") == 1


def test_metrics_show_each_key_only_its_own_usage_and_the_metrics_key_all(
    llama_server: LlamaServer, redis_server: RedisServer
) -> None:
    ops, plain = "ops-metrics-token-0123456789", "plain-key-token-0123456789"
    text = config(llama_server, "requests_per_minute = 100", server='metrics_key_env = "OPS_METRICS_KEY"')
    env = {
        "TEAM_A_KEY": TOKEN,
        "TEAM_B_KEY": OTHER,
        "OPS_METRICS_KEY": ops,
        "POLYCHAT_API_KEYS": plain,
        "POLYCHAT_REDIS_URL": redis_server.url,
    }
    with Gateway(config_text=text, env=env) as gw:
        for token in (TOKEN, OTHER):
            client = openai.OpenAI(base_url=gw.base_url, api_key=token, max_retries=0)
            client.chat.completions.create(model="fast", messages=HI, max_tokens=1)

        def keys_in(view: str) -> set[str]:
            return {
                m
                for line in view.splitlines()
                if line.startswith("polychat_key_")
                for m in re.findall(r'key="([^"]+)"', line)
            }

        team_a, team_b, everyone, plain_view = (metrics(gw, t) for t in (TOKEN, OTHER, ops, plain))
        assert keys_in(team_a) == {"team-a"}
        assert keys_in(team_b) == {"team-b"}
        assert keys_in(everyone) == {"team-a", "team-b"}
        assert keys_in(plain_view) == set()
        assert metric_value(team_a, "polychat_key_requests_total", key="team-a") == 1
        assert metric_value(everyone, "polychat_key_requests_total", key="team-a") == 1
        assert "polychat_gateway_requests_total{" in team_b  # the gateway's own figures are everyone's
        assert ops not in everyone
        # the metrics key reads metrics; it is not an API key
        refused = httpx.post(
            f"{gw.base_url}/chat/completions",
            json={"model": "fast", "messages": HI},
            headers={"authorization": f"Bearer {ops}"},
        )
        assert refused.status_code == 401
        assert httpx.get(f"{gw.url}/metrics", headers={"authorization": "Bearer nope"}).status_code == 401


def test_an_unset_metrics_key_variable_stops_serve_with_a_clear_message(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text('[server]\nmetrics_key_env = "OPS_METRICS_KEY"\n')
    done = run_serve(["--config", str(path), "--port", "0"])
    assert done.returncode == 2
    assert "OPS_METRICS_KEY" in done.stderr and "metrics_key_env" in done.stderr


def test_a_stream_from_llama_cpp_is_charged_its_real_usage_not_its_reservation(
    llama_server: LlamaServer, redis_server: RedisServer
) -> None:
    # llama.cpp's server sends no usage in a stream, even asked (stream_options.include_usage, which the gateway
    # sends for keys it accounts): the gateway then counts the streamed tokens (one per chunk) of an answer that
    # finished, and charges them plus the prompt's bound — not the whole reservation (prompt bound + max_tokens).
    from polychat.server._limits import prompt_bound

    key = "budget_tokens = 100000"
    with ExitStack() as stack:
        (gw,) = replicas(stack, 1, config(llama_server, key), redis_server.url)
        client = openai.OpenAI(base_url=gw.base_url, api_key=TOKEN, max_retries=0)
        ask: dict[str, Any] = {"model": "fast", "messages": HI, "max_tokens": 200, "temperature": 0}
        chunks = list(client.chat.completions.create(**ask, stream=True))
        assert all(c.usage is None for c in chunks)
        streamed = sum(1 for c in chunks if c.choices and c.choices[0].delta.content)
        assert chunks[-1].choices[0].finish_reason == "stop"
        text = metrics(gw)
        assert metric_value(text, "polychat_key_reserved_tokens", key="team-a") == 0
        used = metric_value(text, "polychat_key_budget_used_tokens", key="team-a")
        assert used == prompt_bound(HI, {}) + streamed
        assert used < prompt_bound(HI, {}) + 200  # not the reservation
        # the count is the model's own: the same request (temperature 0) answered whole reports as many tokens
        whole = client.chat.completions.create(**ask)
        assert whole.usage is not None and whole.usage.completion_tokens == streamed
