"""What the Anthropic Messages and OpenAI Responses endpoints add to a request, against ``/v1/chat/completions``.

One ``polychat serve`` in front of ``upstream.py`` (fixed answers, 50-chunk streams, no added latency); one client
(httpx, keep-alive) sends the same question to the three endpoints in interleaved rounds (the order shuffled each
round), so drift in the machine's load hits every endpoint alike. Figures are medians (and p90) over every sample;
"added" is an endpoint's median minus ``/v1/chat/completions``'s, measured in the same run; "direct" is the upstream
without the gateway, for scale. The translation itself (request in, every chunk out) is what the difference is.

Run with the project's venv: ``.venv/bin/python bench/bench_protocols.py [--quick]``; writes
``bench/results/protocols.md`` and ``protocols.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
QUESTION = "What is the capital of France?"

BODIES: dict[str, tuple[str, dict[str, Any]]] = {
    "/v1/chat/completions": ("/v1/chat/completions", {"messages": [{"role": "user", "content": QUESTION}]}),
    "/v1/messages": ("/v1/messages", {"max_tokens": 256, "messages": [{"role": "user", "content": QUESTION}]}),
    "/v1/responses": ("/v1/responses", {"input": QUESTION, "max_output_tokens": 256}),
}
DIRECT = "direct (no gateway)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_upstream() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, str(BENCH / "upstream.py"), "--port", "0", "--chunks", "50"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline().split()
    if not first or first[0] != "PORT":
        raise RuntimeError("the upstream did not start")
    return proc, f"http://127.0.0.1:{first[1]}"


def start_gateway(upstream: str, tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    cfg = tmp / "gateway.toml"
    cfg.write_text(
        f'[providers.up]\ntype = "openai"\nbase_url = "{upstream}/v1"\nmodels = ["bench-model"]\n'
        '[defaults]\nprovider = "up"\n'
    )
    port = free_port()
    argv = [str(ROOT / ".venv" / "bin" / "polychat"), "serve", "--config", str(cfg), "--port", str(port)]
    proc = subprocess.Popen(
        [*argv, "--host", "127.0.0.1", "--no-access-log"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "POLYCHAT_CONFIG": str(cfg)},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the gateway did not start")


def one(client: httpx.Client, url: str, body: dict[str, Any]) -> float:
    t0 = time.perf_counter()
    with client.stream("POST", url, json=body) as r:
        for _ in r.iter_raw():
            pass
        if r.status_code != 200:
            raise RuntimeError(f"{url}: {r.status_code}")
    return time.perf_counter() - t0


def measure(gateway: str, upstream: str, rounds: int, per_round: int) -> dict[str, dict[str, list[float]]]:
    samples: dict[str, dict[str, list[float]]] = {}
    targets = {name: (gateway + path, body) for name, (path, body) in BODIES.items()}
    targets[DIRECT] = (upstream + "/v1/chat/completions", BODIES["/v1/chat/completions"][1])
    with httpx.Client(timeout=30) as client:
        for kind, stream in (("non-stream", False), ("stream (50 chunks)", True)):
            for url, body in targets.values():  # warm every path (imports, connections) first
                for _ in range(20):
                    one(client, url, {"model": "bench-model", **body, "stream": stream})
            for _ in range(rounds):
                order = list(targets)
                random.shuffle(order)
                for name in order:
                    url, body = targets[name]
                    full = {"model": "bench-model", **body, "stream": stream}
                    got = samples.setdefault(kind, {}).setdefault(name, [])
                    got.extend(one(client, url, full) for _ in range(per_round))
    return samples


def summarise(samples: dict[str, dict[str, list[float]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind, by_target in samples.items():
        base = statistics.median(by_target["/v1/chat/completions"])
        rows = {}
        for name, values in by_target.items():
            p50 = statistics.median(values)
            p90 = statistics.quantiles(values, n=10)[-1]
            rows[name] = {"n": len(values), "p50_ms": p50 * 1e3, "p90_ms": p90 * 1e3, "added_ms": (p50 - base) * 1e3}
        out[kind] = rows
    return out


def translation_cost(repeat: int) -> dict[str, float]:
    """In-process CPU cost of each protocol's work for one streamed request: parse and translate the body, turn 50
    chunks into the protocol's events (chat completions: encode them as they are). Median µs over ``repeat``."""
    from polychat.protocols import anthropic_messages as am
    from polychat.protocols import responses as rp
    from polychat.server import _sse
    from polychat.types import ChatCompletionChunk, ChoiceDelta, StreamChoice

    def chunks() -> list[ChatCompletionChunk]:
        out = [
            ChatCompletionChunk(id="c", model="m", choices=[StreamChoice(delta=ChoiceDelta(content="tok "))])
            for _ in range(50)
        ]
        out[-1].choices[0].finish_reason = "stop"
        return out

    bodies = {name: {"model": "m", **body, "stream": True} for name, (_, body) in BODIES.items()}
    raw = {name: json.dumps(b).encode() for name, b in bodies.items()}

    def chat() -> None:
        json.loads(raw["/v1/chat/completions"])
        for c in chunks():
            _sse.frame(c)

    def messages() -> None:
        call = am.to_chat(json.loads(raw["/v1/messages"]))
        enc = am.MessageStream(call.model)
        for c in chunks():
            enc.chunk(c)
        enc.end()

    def responses() -> None:
        call = rp.to_chat(json.loads(raw["/v1/responses"]))
        enc = rp.ResponseStream(call.model, call.echo)
        for c in chunks():
            rp.sse(enc.chunk(c))
        rp.sse(enc.end())

    out = {}
    for name, fn in (("/v1/chat/completions", chat), ("/v1/messages", messages), ("/v1/responses", responses)):
        times = []
        for _ in range(repeat):
            t0 = time.process_time()
            fn()
            times.append(time.process_time() - t0)
        out[name] = statistics.median(times) * 1e6
    return out


def report(summary: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [
        "# Protocol endpoints vs /v1/chat/completions",
        "",
        f"{time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, loopback, load average {os.getloadavg()[0]:.1f}; "
        f"{args.rounds} interleaved rounds x {args.per_round} requests per endpoint and kind; "
        "`polychat serve` (1 worker) in front of `bench/upstream.py`.",
        "",
    ]
    for kind, rows in summary.items():
        if kind == "translation_us":
            continue
        lines += [
            f"## {kind}",
            "",
            "| endpoint | p50 | p90 | added vs /v1/chat/completions (p50) |",
            "|---|---:|---:|---:|",
        ]
        for name in [*BODIES, DIRECT]:
            r = rows[name]
            added = "—" if name in ("/v1/chat/completions", DIRECT) else f"{r['added_ms']:+.3f} ms"
            lines.append(f"| {name} | {r['p50_ms']:.3f} ms | {r['p90_ms']:.3f} ms | {added} |")
        lines.append("")
    cost = summary.get("translation_us")
    if cost:
        base = cost["/v1/chat/completions"]
        lines += [
            "## In-process CPU per streamed request (50 chunks): parse + translate + encode",
            "",
            "| endpoint | median CPU | added vs /v1/chat/completions |",
            "|---|---:|---:|",
        ]
        for name, us in cost.items():
            added = "—" if name == "/v1/chat/completions" else f"{us - base:+.0f} µs"
            lines.append(f"| {name} | {us:.0f} µs | {added} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: few samples")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--per-round", type=int, default=20)
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.per_round = 3, 5
    up, upstream = start_upstream()
    tmp = Path(tempfile.mkdtemp(prefix="bench-protocols-"))
    gw, gateway = start_gateway(upstream, tmp)
    try:
        summary = summarise(measure(gateway, upstream, args.rounds, args.per_round))
        summary["translation_us"] = translation_cost(50 if args.quick else 2000)
    finally:
        gw.terminate()
        gw.wait(timeout=20)
        assert up.stdin is not None
        up.stdin.close()
        up.wait(timeout=10)
    text = report(summary, args)
    print(text)
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "protocols.md").write_text(text)
        (RESULTS / "protocols.json").write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
