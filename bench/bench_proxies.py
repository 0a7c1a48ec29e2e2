"""What a proxy costs: a 50-chunk polychat stream direct, through tinyproxy (HTTP, auth) and microsocks (SOCKS5, auth).

One command: ``.venv/bin/python bench/bench_proxies.py`` (needs Debian's tinyproxy and microsocks, which
``bash scripts/setup.sh --test`` installs). It starts ``bench/upstream.py`` and both proxies on loopback, then
times sync and async streams read to the end, the three routes interleaved call by call, and prints medians with
ratios to the direct route of the same run. Connections are kept alive on every route, as a real client would.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.servers import MicroSocks, TinyProxy  # noqa: E402

from polychat import AsyncClient, Client  # noqa: E402
from polychat.providers import OpenaiChat  # noqa: E402

MSGS = [{"role": "user", "content": "hi"}]


def start_upstream(chunks: int = 50) -> tuple[subprocess.Popen[str], str]:
    """``bench/upstream.py`` on a free port (streams of ``chunks`` chunks); the process and its ``/v1`` URL."""
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "upstream.py"), "--port", "0", "--chunks", str(chunks)],
        stdin=subprocess.PIPE,  # the upstream lives until its stdin closes
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    return proc, f"http://127.0.0.1:{line[1]}/v1"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument(
        "--paced",
        action="store_true",
        help="20 chunks 5 ms apart (like a model generating) instead of 50 chunks back to back",
    )
    args = ap.parse_args()
    upstream, base_url = start_upstream()
    expected = 50
    if args.paced:
        base_url = base_url.replace("/v1", "/o/gap=5,chunks=20/v1")
        expected = 20
    try:
        with TinyProxy() as http_proxy, MicroSocks() as socks:
            routes = {"direct": False, "tinyproxy (HTTP)": http_proxy.url, "microsocks (SOCKS5)": socks.url}
            sync_clients = {k: Client(provider=OpenaiChat(base_url=base_url), proxies=v) for k, v in routes.items()}
            samples: dict[str, dict[str, list[float]]] = {
                "sync": {k: [] for k in routes},
                "async": {k: [] for k in routes},
            }

            def one(client: Client) -> float:
                t0 = time.perf_counter()
                n = sum(1 for _ in client.chat.completions.create(model="m", messages=MSGS, stream=True))
                assert n >= expected
                return time.perf_counter() - t0

            for _ in range(20):  # warm every pool
                for c in sync_clients.values():
                    one(c)
            for _ in range(args.samples):
                for name, c in sync_clients.items():
                    samples["sync"][name].append(one(c))

            async def run_async() -> None:
                clients = {k: AsyncClient(provider=OpenaiChat(base_url=base_url), proxies=v) for k, v in routes.items()}

                async def aone(client: AsyncClient) -> float:
                    t0 = time.perf_counter()
                    stream = await client.chat.completions.create(model="m", messages=MSGS, stream=True)
                    n = 0
                    async for _ in stream:
                        n += 1
                    assert n >= expected
                    return time.perf_counter() - t0

                for _ in range(20):
                    for c in clients.values():
                        await aone(c)
                for _ in range(args.samples):
                    for name, c in clients.items():
                        samples["async"][name].append(await aone(c))
                for c in clients.values():
                    await c.close()

            asyncio.run(run_async())
            for c in sync_clients.values():
                c.close()
            assert http_proxy.forwarded_count() > 0 and socks.connections_logged()
    finally:
        upstream.terminate()
        upstream.wait(5)

    kind = "20-chunk paced stream" if args.paced else "50-chunk stream"
    print(f"| route | sync {kind} p50 | × direct | async {kind} p50 | × direct |")
    print("|---|---:|---:|---:|---:|")
    result: dict[str, dict[str, float]] = {}
    for name in routes:
        s = statistics.median(samples["sync"][name]) * 1000
        a = statistics.median(samples["async"][name]) * 1000
        s0 = statistics.median(samples["sync"]["direct"]) * 1000
        a0 = statistics.median(samples["async"]["direct"]) * 1000
        result[name] = {"sync_ms": s, "async_ms": a, "sync_ratio": s / s0, "async_ratio": a / a0}
        print(f"| {name} | {s:.3f} ms | {s / s0:.2f}× | {a:.3f} ms | {a / a0:.2f}× |")
    out = ROOT / "bench" / "results" / ("proxies-paced.json" if args.paced else "proxies.json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"summary": result, "samples": samples}))


if __name__ == "__main__":
    main()
