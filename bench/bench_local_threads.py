"""How many CPU threads should Local give llama.cpp? Decode speed by thread count, with and without a CPU hog.

Run: ``.venv/bin/python bench/bench_local_threads.py [--rounds 5] [--max-tokens 64]``

One child process per thread count (1 .. the CPUs this process may use) loads ``Local(n_threads=n)`` once and then
answers the same prompt greedily (temperature 0, fixed seed, ``max_tokens`` tokens) on request; it reports decode
throughput (text chunks after the first over the time from the first to the last) and the time to the first token.
Each round measures every thread count twice, in a rotating order: once as the machine is, once while a hog (one
busy-looping process per CPU, at normal priority — what a build, a test run or another service looks like to
llama.cpp) competes for the cores. Medians, minimum and maximum over the rounds are printed for each cell.

Why it matters: llama.cpp's worker threads spin-wait for one another at every step of every token, so when any of
them is descheduled, all of them wait; one thread has no one to wait for. The default (``default_threads()`` in
``polychat/providers/local``) comes from these figures. Samples go to ``bench/results/local_threads.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "local_threads.json"
PROMPT = [{"role": "user", "content": "Tell me a story about a dragon who learns to read."}]
HOG = "while True: pass"


def child(n_threads: int) -> None:
    """Load Local with ``n_threads`` and answer one ``max_tokens`` line on stdin with one JSON line of timings."""
    import polychat
    from polychat.providers import Local

    client = polychat.Client(provider=Local(n_threads=n_threads), max_retries=0)
    client.chat.completions.create(model="", messages=PROMPT, max_tokens=4, temperature=0, seed=1)  # load
    print("ready", flush=True)
    for line in sys.stdin:
        start = time.perf_counter()
        stamps: list[float] = []
        stream = client.chat.completions.create(
            model="", messages=PROMPT, max_tokens=int(line), temperature=0, seed=1, stream=True
        )
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                stamps.append(time.perf_counter())
        tps = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else 0.0
        print(json.dumps({"tokens_per_s": tps, "ttft_s": stamps[0] - start if stamps else 0.0}), flush=True)


class Child:
    def __init__(self, n_threads: int) -> None:
        cmd = [sys.executable, __file__, "--child", str(n_threads)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"

    def run(self, max_tokens: int) -> dict[str, float]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{max_tokens}\n")
        self.proc.stdin.flush()
        result: dict[str, float] = json.loads(self.proc.stdout.readline())
        return result

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(30)


class Hog:
    """One busy-looping process per CPU, stopped (by pid) on exit."""

    def __init__(self, cpus: int) -> None:
        self.procs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(cpus)]

    def __enter__(self) -> Hog:
        return self

    def __exit__(self, *exc: object) -> None:
        for p in self.procs:
            p.kill()
        for p in self.procs:
            p.wait()


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child(int(sys.argv[2]))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=64)
    args = ap.parse_args()

    cpus = len(os.sched_getaffinity(0))
    counts = list(range(1, cpus + 1))
    load_before = os.getloadavg()
    children = {n: Child(n) for n in counts}
    samples: dict[str, dict[int, list[dict[str, float]]]] = {c: {n: [] for n in counts} for c in ("as is", "hog")}
    try:
        for r in range(args.rounds):
            order = counts[r % len(counts) :] + counts[: r % len(counts)]
            for condition in ("as is", "hog") if r % 2 == 0 else ("hog", "as is"):
                if condition == "hog":
                    with Hog(cpus):
                        for n in order:
                            samples[condition][n].append(children[n].run(args.max_tokens))
                else:
                    for n in order:
                        samples[condition][n].append(children[n].run(args.max_tokens))
    finally:
        for c in children.values():
            c.close()
    load_after = os.getloadavg()

    print(
        f"\nLocal decode speed by n_threads: {cpus} CPUs, max_tokens={args.max_tokens}, {args.rounds} rounds; "
        f"load average before/after {load_before[0]:.2f} / {load_after[0]:.2f} (without our hog)"
    )
    print("| condition | n_threads | tokens/s median | min | max | first token median |")
    print("|---|---:|---:|---:|---:|---:|")
    table: dict[str, dict[int, dict[str, float]]] = {}
    for condition, by_count in samples.items():
        table[condition] = {}
        for n, runs in by_count.items():
            tps = [s["tokens_per_s"] for s in runs]
            ttft = statistics.median(s["ttft_s"] for s in runs)
            table[condition][n] = {"median": statistics.median(tps), "min": min(tps), "max": max(tps), "ttft": ttft}
            row = table[condition][n]
            print(
                f"| {condition} | {n} | {row['median']:.1f} | {row['min']:.1f} | {row['max']:.1f} "
                f"| {ttft * 1000:.0f} ms |"
            )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {
        "settings": {"max_tokens": args.max_tokens, "rounds": args.rounds, "cpus": cpus},
        "load_average_before": load_before,
        "load_average_after": load_after,
        "summary": table,
        "samples": samples,
    }
    RESULTS.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"samples: {RESULTS}")


if __name__ == "__main__":
    main()
