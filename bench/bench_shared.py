"""What sharing state through Redis costs the gateway, and what workers with Redis buy.

One command: ``.venv/bin/python bench/bench_shared.py`` (needs Debian's redis-server, which
``bash scripts/setup.sh --test`` installs). It starts ``bench/upstream.py`` (fixed answers, with usage), a
``redis-server`` with the settings the README recommends (``appendonly yes``, ``appendfsync everysec``) and
``polychat serve`` gateways in front of the upstream, all with one named key whose limits (requests and tokens per
minute, budget) are far above the load, so every request goes through reserve and settle:

1. **Added latency at concurrency 1**: the same gateway with its limits in the process vs in Redis (and, for
   reference, with no limited key), non-stream requests interleaved one by one; medians and the difference. Twice:
   through ``polychat serve`` processes over HTTP, and with the two apps driven in this process (ASGI, no HTTP
   hop) — on a busy machine every extra process wake-up costs scheduling delay, which the second figure leaves out
   except for Redis's own.
2. **Throughput at concurrency 64**: ``--workers 2`` with Redis vs one worker without, each the median of a few
   rounds, the two interleaved round by round. On a 2-core machine the load generator and Redis share the cores with
   the workers, so this measures less than two free cores would give.
3. **Memory of each worker** of the 2-worker gateway: RSS after a warm-up and after 10,000 more requests.

Prints a Markdown table and writes ``bench/results/shared.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_proxies import start_upstream  # noqa: E402
from bench.cheap import Nginx, Round, cpu_seconds, median_cores, missing, wrk_round  # noqa: E402
from tests.support.gateway import Gateway  # noqa: E402
from tests.support.redis import RedisServer  # noqa: E402

TOKEN = "bench-team-token-0123456789"
BODY = {"model": "fast", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}
HEADERS = {"authorization": f"Bearer {TOKEN}"}


def config(upstream: str, limited: bool) -> str:
    text = f"""
[providers.up]
type = "openai"
base_url = "{upstream}"
models = ["bench-model"]

[routes.fast]
chain = ["up:bench-model"]
max_retries = 0

[server.keys.team]
key_env = "BENCH_TEAM_KEY"
"""
    if limited:
        text += "requests_per_minute = 100000000\ntokens_per_minute = 100000000000\nbudget_tokens = 100000000000000\n"
    return text


def workers_of(gw: Gateway) -> list[int]:
    """PIDs of a ``--workers`` gateway's worker processes (children running multiprocessing's spawn)."""
    out = subprocess.run(["ps", "-o", "pid=,args=", "--ppid", str(gw.pid)], capture_output=True, text=True).stdout
    return [int(line.split()[0]) for line in out.splitlines() if "spawn" in line]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


async def load(url: str, n: int, concurrency: int) -> float:
    """Requests per second for ``n`` requests over ``concurrency`` lanes; every answer must be a 200. A session
    per round: the gateway closes keep-alive connections idle for 5 s, as they are while the other one runs."""
    import aiohttp

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        return await _load(session, url, n, concurrency)


async def _load(session: Any, url: str, n: int, concurrency: int) -> float:
    remaining = n

    async def lane() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            async with session.post(url, json=BODY, headers=HEADERS) as r:
                await r.read()
                if r.status != 200:
                    raise RuntimeError(f"HTTP {r.status}: {(await r.text())[:200]}")

    t0 = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return n / (time.perf_counter() - t0)


def asgi_latency(upstream: str, redis_url: str, samples: int) -> dict[str, float]:
    """p50 (ms) of the same app with limits in the process and in Redis, driven in this process over ASGI."""
    import httpx
    import uvloop

    from polychat.config import parse_config
    from polychat.server import ServerSettings, create_app

    os.environ["BENCH_TEAM_KEY"] = TOKEN
    text = config(upstream, True)
    apps = {
        "memory": create_app(ServerSettings(), parse_config(text)),
        "redis": create_app(ServerSettings(redis_url=redis_url), parse_config(text)),
    }

    async def run() -> dict[str, float]:
        lat: dict[str, list[float]] = {k: [] for k in apps}
        clients = {
            k: httpx.AsyncClient(transport=httpx.ASGITransport(app=a), base_url="http://127.0.0.1/v1", headers=HEADERS)
            for k, a in apps.items()
        }
        for i in range(200 + samples):
            for k, c in clients.items():
                t0 = time.perf_counter()
                r = await c.post("/chat/completions", json=BODY)
                elapsed = time.perf_counter() - t0
                assert r.status_code == 200, r.text
                if i >= 200:
                    lat[k].append(elapsed)
        for c in clients.values():
            await c.aclose()
        for a in apps.values():
            await a.gw.aclose()
        return {k: statistics.median(v) * 1000 for k, v in lat.items()}

    return uvloop.run(run())


def latency(base: str, redis: RedisServer, samples: int) -> dict[str, Any]:
    """p50 at concurrency 1 through three ``polychat serve`` gateways, requests interleaved one by one; then the
    same in-process (ASGI)."""
    import httpx

    env = {"BENCH_TEAM_KEY": TOKEN}
    local = ["--no-access-log"]
    shared = ["--redis-url", redis.url, *local]
    with (
        Gateway(config_text=config(base, True), env=env, args=local) as in_process,
        Gateway(config_text=config(base, True), env=env, args=shared) as in_redis,
        Gateway(config_text=config(base, False), env=env, args=local) as unlimited,
    ):
        gateways = {"limits in process": in_process, "limits in Redis": in_redis, "no limited key": unlimited}
        clients = {k: httpx.Client(base_url=g.base_url, headers=HEADERS) for k, g in gateways.items()}
        lat: dict[str, list[float]] = {k: [] for k in gateways}
        for i in range(200 + samples):
            for name, c in clients.items():
                t0 = time.perf_counter()
                r = c.post("/chat/completions", json=BODY)
                elapsed = time.perf_counter() - t0
                assert r.status_code == 200, r.text
                if i >= 200:
                    lat[name].append(elapsed)
        for c in clients.values():
            c.close()
        usage = httpx.get(f"{in_redis.url}/metrics", headers=HEADERS).text
        assert 'polychat_key_requests_total{key="team"}' in usage
    p50 = {k: statistics.median(v) * 1000 for k, v in lat.items()}
    asgi = asgi_latency(base, redis.url, samples)
    return {
        "latency_p50_ms": p50,
        "redis_added_ms": p50["limits in Redis"] - p50["limits in process"],
        "asgi_p50_ms": asgi,
        "asgi_redis_added_ms": asgi["redis"] - asgi["memory"],
    }


def throughput(env: dict[str, str], redis: RedisServer, args: argparse.Namespace) -> dict[str, Any]:
    """Requests per second at concurrency 64 of one worker without Redis and ``--workers 2`` with Redis, in front
    of nginx, loaded by wrk, rounds interleaved; and the cores each process kept busy (see ``bench/cheap.py``)."""
    from bench.upstream import Responses

    body = json.dumps(BODY).encode()
    with Nginx(Responses(16).completion_body) as nginx:
        text = config(nginx.url, True)
        shared = ["--redis-url", redis.url, "--no-access-log"]
        with (
            Gateway(config_text=text, env=env, args=["--no-access-log"]) as one,
            Gateway(config_text=text, env=env, args=[*shared, "--workers", "2"]) as two,
        ):
            workers = workers_of(two)
            assert len(workers) == 2, workers
            assert redis.proc is not None
            common = {"upstream (nginx)": [nginx.pid], "redis-server": [redis.proc.pid]}
            targets = {
                "1 worker, no Redis": (one, {"gateway": [one.pid], **common}),
                "2 workers, Redis": (two, {"gateway": [two.pid, *workers], **common}),
            }
            rounds: dict[str, list[Round]] = {name: [] for name in targets}
            for i in range(args.rounds + 1):  # the first round of each warms up (connections, caches): not kept
                for name, (gw, groups) in targets.items():
                    r = wrk_round(
                        gw.base_url + "/chat/completions",
                        body,
                        {**HEADERS, "content-type": "application/json"},
                        seconds=args.seconds if i else 2,
                        connections=64,
                        groups=groups,
                    )
                    if i:
                        rounds[name].append(r)
    rps = {name: statistics.median(r.rps for r in rs) for name, rs in rounds.items()}
    return {
        "throughput_rps": {name: [r.rps for r in rs] for name, rs in rounds.items()},
        "throughput_ratio": rps["2 workers, Redis"] / rps["1 worker, no Redis"],
        # each round's pair was measured back to back: the median of their ratios is less at the mercy of a slow
        # stretch of the machine than the ratio of the medians
        "throughput_ratio_paired": statistics.median(
            two.rps / one.rps for one, two in zip(rounds["1 worker, no Redis"], rounds["2 workers, Redis"], strict=True)
        ),
        "throughput_cores": {name: median_cores(rs) for name, rs in rounds.items()},
        "gateway_cpu_us_per_request": {
            name: statistics.median(r.cpu["gateway"] / r.requests * 1e6 for r in rs) for name, rs in rounds.items()
        },
    }


def print_latency(result: dict[str, Any]) -> None:
    p50 = result["latency_p50_ms"]
    print("| gateway, concurrency 1, non-stream | p50 |")
    print("|---|---:|")
    for name, v in p50.items():
        print(f"| {name} | {v:.3f} ms |")
    print(f"\nRedis path adds {result['redis_added_ms']:.3f} ms per request at p50 (target <= 0.3 ms).")
    asgi = result["asgi_p50_ms"]
    print(
        f"In-process (ASGI, no HTTP hop): {asgi['memory']:.3f} ms in process, {asgi['redis']:.3f} ms with Redis: "
        f"adds {result['asgi_redis_added_ms']:.3f} ms.\n"
    )


def print_throughput(result: dict[str, Any]) -> None:
    med = {k: statistics.median(v) for k, v in result["throughput_rps"].items()}
    cores = result["throughput_cores"]
    per_request = result["gateway_cpu_us_per_request"]
    groups = list(next(iter(cores.values())))
    print(
        "| concurrency 64 (wrk, nginx upstream) | req/s (median of rounds) | gateway CPU per request | "
        + " | ".join(f"cores: {g}" for g in groups)
        + " |"
    )
    print("|---|---:|---:|" + "---:|" * len(groups))
    for name, v in med.items():
        row = " | ".join(f"{cores[name][g]:.2f}" for g in groups)
        print(f"| {name} | {v:.0f} | {per_request[name]:.0f} µs | {row} |")
    print(
        f"\n2 workers with Redis / 1 worker without: {result['throughput_ratio']:.2f}x (target >= 1.6x); median of "
        f"the rounds' ratios {result['throughput_ratio_paired']:.2f}x\n"
    )


def memory(upstream: str, env: dict[str, str], shared: list[str], n: int) -> dict[str, list[float]]:
    """RSS of each worker of a ``--workers 2`` gateway with Redis limits, after a warm-up and after ``n`` more
    requests; and the CPU seconds each worker spent on those, which shows both served them.

    The kernel hands a connection to whichever worker accepts it first, so one session's connections may all land
    on one worker: the load comes in sessions of fresh connections, and the warm-up goes on until every worker has
    served a share of two consecutive rounds (a worker's first requests grow it by ~10 MiB of imports and caches,
    which is warming up, not a leak)."""
    with Gateway(config_text=config(upstream, True), env=env, args=[*shared, "--workers", "2"]) as two:
        pids = workers_of(two)
        assert len(pids) == 2, pids
        url = two.base_url + "/chat/completions"

        async def spread(total: int) -> dict[int, float]:
            """``total`` requests in sessions of 500; the CPU seconds each worker spent."""
            before = {pid: cpu_seconds(pid) for pid in pids}
            for _ in range(max(1, total // 500)):
                await load(url, 500, 64)
            return {pid: cpu_seconds(pid) - before[pid] for pid in pids}

        async def run() -> dict[str, list[float]]:
            both = 0
            for _ in range(20):
                spent = await spread(2000)
                both = both + 1 if min(spent.values()) > 0.25 * max(spent.values()) else 0
                if both == 2:
                    break
            before = {pid: rss_mib(pid) for pid in pids}
            spent = await spread(n)
            return {str(pid): [before[pid], rss_mib(pid), spent[pid]] for pid in pids}

        return asyncio.run(run())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--samples", type=int, default=2000, help="latency samples per gateway (default: 2000)")
    ap.add_argument("--seconds", type=float, default=10, help="seconds per throughput round (default: 10)")
    ap.add_argument("--rounds", type=int, default=5, help="throughput rounds per gateway (default: 5)")
    ap.add_argument("--memory-n", type=int, default=10_000, help="requests between the two RSS readings")
    ap.add_argument(
        "--parts", default="latency,throughput,memory", help="what to measure (default: latency,throughput,memory)"
    )
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    env = {"BENCH_TEAM_KEY": TOKEN}
    upstream, base = start_upstream(chunks=16)
    result: dict[str, Any] = {}
    try:
        with RedisServer(persistent=True, fsync="everysec") as redis:
            shared = ["--redis-url", redis.url, "--no-access-log"]
            result["load_average_before"] = os.getloadavg()
            if "latency" in parts:
                result.update(latency(base, redis, args.samples))
            if "throughput" in parts and missing():
                result["throughput_skipped"] = f"needs {' and '.join(missing())}: apt-get install nginx-light wrk"
            elif "throughput" in parts:
                result.update(throughput(env, redis, args))
            if "memory" in parts:
                result["rss_mib"] = memory(base, env, shared, args.memory_n)
            result["load_average_after"] = os.getloadavg()
    finally:
        upstream.terminate()
        upstream.wait(5)

    if "latency_p50_ms" in result:
        print_latency(result)
    if "throughput_skipped" in result:
        print(f"Throughput skipped: it {result['throughput_skipped']}.\n")
    elif "throughput_rps" in result:
        print_throughput(result)
    for pid, (before, after, cpu) in result.get("rss_mib", {}).items():
        print(
            f"worker {pid}: RSS {before:.1f} MiB -> {after:.1f} MiB over {args.memory_n} more requests "
            f"(it spent {cpu:.1f} CPU s on its share)"
        )
    before, after = result["load_average_before"], result["load_average_after"]
    print(
        f"\nLoad average (1, 5, 15 min) before: {before[0]:.2f} {before[1]:.2f} {before[2]:.2f}; "
        f"after: {after[0]:.2f} {after[1]:.2f} {after[2]:.2f} ({os.cpu_count()} cores)"
    )
    out = ROOT / "bench" / "results" / "shared.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
