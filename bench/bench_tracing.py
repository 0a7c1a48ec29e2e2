"""What tracing costs: import time and per-call overhead with OpenTelemetry absent, installed-but-off, and on.

Three worker processes, one per mode, call the same ``upstream.py`` (fixed answers, 50-chunk streams) in
interleaved rounds, so drift in the machine's load hits every mode alike; every figure is a median over all samples
and every ratio is to "absent" measured in the same run.

* **absent** — ``opentelemetry`` cannot be imported at all (a meta-path hook refuses it, as if not installed);
  measured twice, by two workers ("absent-2"), so the noise between two identical processes shows;
* **off** — the application imported ``opentelemetry.trace`` but configured no tracer provider (polychat must not
  trace, and must cost what "absent" costs);
* **on** — an SDK ``TracerProvider`` with a ``BatchSpanProcessor`` into an exporter that drops the spans: the cost of
  making polychat's spans (a call span and one span per attempt), not of shipping them.

Run with the project's venv: ``.venv/bin/python bench/bench_tracing.py [--quick]``; writes
``bench/results/tracing.md`` and ``tracing.json``.
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

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
#: "absent-2" is a second "absent" worker: the gap between the two is this machine's noise floor.
MODES = ("absent", "absent-2", "off", "on")
KINDS = ("sync complete", "sync stream (50 chunks)", "async complete", "async stream (50 chunks)")
MSGS = [{"role": "user", "content": "hi"}]

_ABSENT = (
    "import sys, importlib.abc\n"
    "class _NoOtel(importlib.abc.MetaPathFinder):\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name == 'opentelemetry' or name.startswith('opentelemetry.'):\n"
    "            raise ImportError(name)\n"
    "sys.meta_path.insert(0, _NoOtel())\n"
)
SETUP = {
    "absent": _ABSENT,
    "absent-2": _ABSENT,
    "before": _ABSENT,
    "off": "import opentelemetry.trace\n",
    "on": (
        "from opentelemetry import trace\n"
        "from opentelemetry.sdk.trace import TracerProvider\n"
        "from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult\n"
        "class _Drop(SpanExporter):\n"
        "    def export(self, spans):\n"
        "        return SpanExportResult.SUCCESS\n"
        "_p = TracerProvider()\n"
        "_p.add_span_processor(BatchSpanProcessor(_Drop()))\n"
        "trace.set_tracer_provider(_p)\n"
    ),
}
IMPORT_CODE = "from polychat import Client\nimport polychat.providers.openai\n"


# -- worker ---------------------------------------------------------------------------------------------------------


def worker(mode: str, base: str, before: str | None) -> None:
    # bench/profile.py would shadow the standard library's profile module, which cProfile imports.
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH]
    if mode == "before":
        sys.path.insert(0, before or "")
    exec(SETUP[mode], {})
    from polychat import AsyncClient, Client
    from polychat.providers import OpenaiChat
    from polychat.routing import RetryProvider

    def chain() -> RetryProvider:
        return RetryProvider([OpenaiChat(base_url=base, api_key="bench", name="up")], max_retries=0)

    client = Client(provider=chain())
    loop = asyncio.new_event_loop()
    aclient = AsyncClient(provider=chain())

    def sync_complete() -> None:
        client.chat.completions.create(model="m", messages=MSGS)

    def sync_stream() -> None:
        for _ in client.chat.completions.create(model="m", messages=MSGS, stream=True):
            pass

    async def async_complete() -> None:
        await aclient.chat.completions.create(model="m", messages=MSGS)

    async def async_stream() -> None:
        async for _ in await aclient.chat.completions.create(model="m", messages=MSGS, stream=True):
            pass

    # Each sample: (wall seconds, CPU seconds of this process, all threads: the span processor's included).
    async def timed_async(fn: Any, n: int) -> list[tuple[float, float]]:
        out = []
        for _ in range(n):
            t0, c0 = time.perf_counter(), time.process_time()
            await fn()
            out.append((time.perf_counter() - t0, time.process_time() - c0))
        return out

    def timed(fn: Any, n: int) -> list[tuple[float, float]]:
        out = []
        for _ in range(n):
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            out.append((time.perf_counter() - t0, time.process_time() - c0))
        return out

    def calls_per_call(n: int) -> dict[str, float]:
        """Python function calls per call, counted by cProfile: the same on a busy machine as on an idle one."""
        import cProfile
        import pstats

        out = {}
        for kind, fn in zip(KINDS, (sync_complete, sync_stream, async_complete, async_stream), strict=True):
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(n):
                if asyncio.iscoroutinefunction(fn):
                    loop.run_until_complete(fn())
                else:
                    fn()
            prof.disable()
            out[kind] = pstats.Stats(prof).total_calls / n  # type: ignore[attr-defined]
        return out

    for line in sys.stdin:
        if line.strip() == "count":
            print(json.dumps(calls_per_call(50)), flush=True)
            continue
        n = int(line)
        if n == 0:
            break
        reply = {
            KINDS[0]: timed(sync_complete, n),
            KINDS[1]: timed(sync_stream, n),
            KINDS[2]: loop.run_until_complete(timed_async(async_complete, n)),
            KINDS[3]: loop.run_until_complete(timed_async(async_stream, n)),
        }
        print(json.dumps(reply), flush=True)
    loop.run_until_complete(aclient.close())
    client.close()


# -- driver ---------------------------------------------------------------------------------------------------------


def import_time(mode: str, reps: int, before: str | None) -> float:
    script = (
        (f"import sys\nsys.path.insert(0, {before!r})\n" if mode == "before" else "")
        + SETUP[mode]
        + "import time\nt0 = time.process_time()\n"
        + IMPORT_CODE
        + "print(time.process_time() - t0)\n"
        + "import sys\nassert (mode != 'on') or 'opentelemetry.sdk.trace' in sys.modules\n"
    )
    times = []
    for _ in range(reps):
        out = subprocess.run([sys.executable, "-c", f"mode = {mode!r}\n" + script], capture_output=True, text=True)
        if out.returncode:
            raise RuntimeError(out.stderr)
        times.append(float(out.stdout.strip().splitlines()[-1]))
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    ap.add_argument("--worker", choices=(*MODES, "before"), help=argparse.SUPPRESS)
    ap.add_argument("--base", help=argparse.SUPPRESS)
    ap.add_argument(
        "--before",
        metavar="SRC",
        help="also measure the polychat in SRC (a checkout's src/ directory, e.g. from before tracing), as 'before'",
    )
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker, args.base, args.before)
    modes = (*MODES, "before") if args.before else MODES
    rounds, batch, import_reps = (6, 10, 3) if args.quick else (60, 10, 9)

    up = subprocess.Popen(
        [sys.executable, str(BENCH / "upstream.py"), "--port", "0", "--chunks", "50"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert up.stdout is not None
    port = int(up.stdout.readline().split()[1])
    base = f"http://127.0.0.1:{port}/v1"
    before_arg = ["--before", args.before] if args.before else []
    workers = {
        m: subprocess.Popen(
            [sys.executable, __file__, "--worker", m, "--base", base, *before_arg],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for m in modes
    }
    samples: dict[str, dict[str, list[list[float]]]] = {m: {k: [] for k in KINDS} for m in modes}
    try:

        def ask(m: str, n: int) -> dict[str, list[list[float]]]:
            p = workers[m]
            assert p.stdin is not None and p.stdout is not None
            p.stdin.write(f"{n}\n")
            p.stdin.flush()
            answer: dict[str, list[list[float]]] = json.loads(p.stdout.readline())
            return answer

        for m in modes:
            ask(m, 20)  # warm-up: pools, caches, first-call imports
        for r in range(rounds):
            order = modes[r % len(modes) :] + modes[: r % len(modes)]
            for m in order:
                for k, v in ask(m, batch).items():
                    samples[m][k].extend(v)
        calls = {}
        for m in modes:
            p = workers[m]
            assert p.stdin is not None and p.stdout is not None
            p.stdin.write("count\n")
            p.stdin.flush()
            calls[m] = json.loads(p.stdout.readline())
        imports = {m: import_time(m, import_reps, args.before) for m in modes}
    finally:
        for p in workers.values():
            if p.stdin is not None:
                p.stdin.write("0\n")
                p.stdin.close()
            p.wait(timeout=30)
        if up.stdin is not None:
            up.stdin.close()
        up.wait(timeout=10)

    # CPU time is the figure: on a shared machine wall time mostly measures the neighbours' load.
    med = {m: {k: [statistics.median(x[i] for x in v) for i in (0, 1)] for k, v in samples[m].items()} for m in modes}
    lines = [
        f"Tracing overhead ({time.strftime('%Y-%m-%d')}, {rounds} rounds x {batch} calls per kind and mode, "
        "interleaved; medians of CPU time per call (wall time in brackets); ratios to 'absent' in the same run)",
        "",
        "| | " + " | ".join(modes) + " |",
        "|---|" + "---:|" * len(modes),
    ]
    for k in KINDS:
        base_v = med["absent"][k][1]
        cells = [
            f"{med[m][k][1] * 1000:.3f} ms"
            + ("" if m == "absent" else f" ({med[m][k][1] / base_v:.2f}x)")
            + f" [{med[m][k][0] * 1000:.3f} ms]"
            for m in modes
        ]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    for k in KINDS:
        cells = [
            f"{calls[m][k]:.0f}" + ("" if m == "absent" else f" ({calls[m][k] - calls['absent'][k]:+.0f})")
            for m in modes
        ]
        lines.append(f"| {k}: Python function calls per call | " + " | ".join(cells) + " |")
    cells = [f"{imports[m] * 1000:.1f} ms" for m in modes]
    lines.append("| `from polychat import Client` + OpenaiChat, CPU (fresh interpreter) | " + " | ".join(cells) + " |")
    load = os.getloadavg()[0]
    lines += ["", f"Load average during the run: {load:.1f} on {os.cpu_count()} CPUs."]
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "tracing.md").write_text(text)
    (RESULTS / "tracing.json").write_text(
        json.dumps({"medians": med, "calls": calls, "imports": imports, "samples": samples})
    )


if __name__ == "__main__":
    main()
