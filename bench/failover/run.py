"""The failover scorecard: every scenario against every contender at once, scored, tabled and charted.

Run through ``bash bench/failover/run.sh`` (it builds the venvs). This process hosts the fault server
(``tests/support/faults.py``) and the two special addresses (a refused port and a blackholed one), starts the
gateways (``polychat serve``, LiteLLM proxy, Portkey's gateway) configured with the same two providers per cell, then
runs one worker per contender (``contenders.py``), all in parallel, and scores each cell by the README's criteria.

Options: ``--only NAME,NAME`` (contenders), ``--scenarios KEY,KEY``, ``--out DIR`` (default bench/failover/results).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(HERE), str(ROOT)]

from tests.support.faults import FaultServer, Ok  # noqa: E402
from tests.support.scenarios import ANSWER, SCENARIOS, Addresses, Scenario  # noqa: E402

#: Seconds from the call to the complete answer within which a result counts (README: the rules).
BUDGET = 15.0
#: Past this a call is abandoned and scored as a hang.
HARD_CAP = 45.0
#: The settings every contender gets where it has them: per-attempt timeout, retries per provider.
TIMEOUT = 10.0
RETRIES = 1

PROJECT_PY = ROOT / ".venv" / "bin" / "python"
PEERS_PY = ROOT / "bench" / ".venv-peers" / "bin" / "python"
NODE_MODULES = HERE / "node_modules"
#: Name, interpreter, and the distributions whose versions the scorecard prints.
CONTENDERS: list[tuple[str, Path, tuple[str, ...]]] = [
    ("polychat", PROJECT_PY, ("polychat",)),
    ("polychat-async", PROJECT_PY, ("polychat",)),
    ("polychat-serve", PEERS_PY, ()),
    ("polychat-defaults", PROJECT_PY, ("polychat",)),
    ("litellm-router", PEERS_PY, ("litellm",)),
    ("litellm-proxy", PEERS_PY, ("litellm",)),
    ("portkey", PEERS_PY, ()),
    ("langchain", PEERS_PY, ("langchain-openai", "langchain-core")),
    ("g4f", PEERS_PY, ("g4f",)),
    ("openai", PEERS_PY, ("openai",)),
]
NODNS = ROOT / "tests" / "support" / "nodns"
CELL_CAP = 120.0
#: Contender processes running at once (each runs all its cells in parallel); more only adds CPU contention.
WORKERS = 4
LITELLM_KEY = "sk-failover-bench-local"  # the flapping scenario's calls together


@dataclass
class CellSpec:
    contender: str
    scenario: Scenario
    stream: bool
    index: int
    route: str = ""

    def __post_init__(self) -> None:
        self.route = self.route or f"r{self.index}"

    @property
    def id(self) -> str:
        return f"{self.contender}.{self.scenario.key}.{'stream' if self.stream else 'plain'}"


# -- addresses that fail before HTTP ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- gateways -----------------------------------------------------------------------------------------------------


def wait_http(url: str, proc: subprocess.Popen[bytes], seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)  # polling a process we do not control for readiness; not synchronising tests
    raise RuntimeError(f"not ready after {seconds:.0f} s")


def warm_cell(warm: str) -> tuple[CellSpec, str, str]:
    return CellSpec("", SCENARIOS[0], False, -1, route="warm"), warm, warm


def polychat_config(cells: list[tuple[CellSpec, str, str]], warm: str) -> str:
    lines = [
        "[defaults]",
        f"timeout = {TIMEOUT}",
        f"max_retries = {RETRIES}",
        "first_token_timeout = 5",
        "idle_timeout = 5",
        "hedge_after = 4",
        "resume = true",
        "",
    ]
    for cell, a, b in [*cells, warm_cell(warm)]:
        for side, url in (("a", a), ("b", b)):
            lines += [f"[providers.{cell.route}{side}]", 'type = "openai"', f'base_url = "{url}"']
            lines += ['api_key_env = "BENCH_KEY"', ""]
        lines += [f"[routes.{cell.route}]", f'chain = ["{cell.route}a:bench-model", "{cell.route}b:bench-model"]', ""]
    return "\n".join(lines)


def litellm_config(cells: list[tuple[CellSpec, str, str]], warm: str) -> str:
    models, fallbacks = [], []
    for cell, a, b in [*cells, warm_cell(warm)]:
        for side, url in (("", a), ("-b", b)):
            models.append(
                {
                    "model_name": cell.route + side,
                    "litellm_params": {"model": "openai/bench-model", "api_base": url, "api_key": "bench"},
                }
            )
        fallbacks.append({cell.route: [cell.route + "-b"]})
    config = {
        "model_list": models,
        "router_settings": {"num_retries": RETRIES, "timeout": TIMEOUT, "stream_timeout": TIMEOUT},
        "litellm_settings": {"fallbacks": fallbacks, "telemetry": False, "request_timeout": TIMEOUT},
        "general_settings": {"master_key": LITELLM_KEY},
    }
    return json.dumps(config, indent=1)  # JSON is YAML


PORTKEY_CONFIG = json.dumps(
    {
        "strategy": {"mode": "fallback"},
        "retry": {"attempts": RETRIES},
        "request_timeout": int(TIMEOUT * 1000),
        "targets": [
            {"provider": "openai", "api_key": "bench", "custom_host": url, "override_params": {"model": "bench-model"}}
            for url in ("{A}", "{B}")
        ],
    }
)


class Gateways:
    def __init__(self, env: dict[str, str], tmp: Path) -> None:
        self.env = env
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []
        self.urls: dict[str, str] = {}
        self.unavailable: dict[str, str] = {}
        self.logs: dict[str, Path] = {}

    def _start(self, name: str, cmd: list[str], health: str, port: int, seconds: float) -> None:
        log = self.tmp / f"{name}.log"
        self.logs[name] = log
        with open(log, "wb") as fh:
            proc = subprocess.Popen(cmd, env=self.env, stdout=fh, stderr=subprocess.STDOUT, cwd=self.tmp)
        self.procs.append(proc)
        try:
            wait_http(f"http://127.0.0.1:{port}{health}", proc, seconds)
            self.urls[name] = f"http://127.0.0.1:{port}/v1"
        except RuntimeError as e:
            tail = log.read_text(errors="replace").strip().splitlines()[-3:]
            self.unavailable[name] = f"did not start ({e}): {' | '.join(tail)}"[:300]

    def start(self, names: set[str], cells: list[tuple[CellSpec, str, str]], warm: str) -> None:
        """Start the wanted gateways, each with a route per cell of its own and a ``warm`` route to ``warm``."""
        if "polychat-serve" in names:
            cfg = self.tmp / "polychat.toml"
            cfg.write_text(polychat_config([c for c in cells if c[0].contender == "polychat-serve"], warm))
            port = free_port()
            cmd = [str(ROOT / ".venv" / "bin" / "polychat"), "serve", "--config", str(cfg), "--port", str(port)]
            self._start("polychat-serve", cmd, "/health", port, 60)
        if "litellm-proxy" in names:
            cfg = self.tmp / "litellm.yaml"
            cfg.write_text(litellm_config([c for c in cells if c[0].contender == "litellm-proxy"], warm))
            port = free_port()
            exe = str(PEERS_PY.parent / "litellm")
            self._start(
                "litellm-proxy", [exe, "--config", str(cfg), "--port", str(port)], "/health/liveliness", port, 180
            )
        if "portkey" in names:
            script = NODE_MODULES / "@portkey-ai" / "gateway" / "build" / "start-server.js"
            if not script.exists() or not shutil.which("node"):
                self.unavailable["portkey"] = (
                    "not installed (npm @portkey-ai/gateway; bench/failover/run.sh installs it)"
                )
            else:
                port = free_port()
                self._start("portkey", ["node", str(script), f"--port={port}"], "/", port, 60)

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


# -- scoring ------------------------------------------------------------------------------------------------------

ORDER = {"pass": 0, "safe": 1, "partial": 2, "fail": 3}


def score_call(call: dict[str, Any]) -> tuple[str, str]:
    t = call["elapsed"]
    if not call["ok"]:
        if t <= BUDGET:
            return "safe", f"error in {t:.1f} s: {call['error'][:120]}"
        return "fail", f"error only after {t:.1f} s: {call['error'][:120]}"
    text = call["text"].strip()
    if text == ANSWER:
        return ("pass", f"{t:.1f} s") if t <= BUDGET else ("partial", f"correct but late: {t:.1f} s")
    if ANSWER.startswith(text):
        return "fail", f"truncated answer delivered as complete ({len(text.split())}/12 words): {text[:60]!r}"
    if ANSWER in text or text.count("one two") > 1:
        return "fail", f"duplicated/spliced text delivered: {text[:80]!r}"
    return "fail", f"wrong answer delivered: {text[:80]!r}"


def score_cell(result: dict[str, Any], calls_wanted: int) -> tuple[str, str]:
    scored = [score_call(c) for c in result["calls"]]
    if result["hang"]:
        done = len(scored)
        scored.append(
            (
                "fail",
                f"hang: no result after {HARD_CAP if calls_wanted == 1 else CELL_CAP:.0f} s"
                + (f" (call {done + 1} of {calls_wanted})" if calls_wanted > 1 else ""),
            )
        )
    if not scored:
        return "fail", "no result"
    worst = max(scored, key=lambda s: ORDER[s[0]])
    if calls_wanted > 1:
        n_pass = sum(1 for s in scored if s[0] == "pass")
        slowest = max((c["elapsed"] for c in result["calls"]), default=0.0)
        note = f"{n_pass}/{calls_wanted} pass, slowest {slowest:.1f} s"
        return worst[0], note if worst[0] == "pass" else f"{note}; worst: {worst[1]}"
    return worst


# -- the run ------------------------------------------------------------------------------------------------------


def versions(py: Path, dists: tuple[str, ...]) -> dict[str, str]:
    if not dists or not py.exists():
        return {}
    code = (
        "import importlib.metadata as m, json, sys\n"
        "out = {}\n"
        "for d in sys.argv[1:]:\n"
        "    try: out[d] = m.version(d)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(out))"
    )
    r = subprocess.run([str(py), "-c", code, *dists], capture_output=True, text=True, timeout=60)
    return json.loads(r.stdout or "{}")


def node_version(pkg: str) -> str:
    with contextlib.suppress(OSError, ValueError):
        return str(json.loads((NODE_MODULES / pkg / "package.json").read_text())["version"])
    return ""


def run(args: argparse.Namespace) -> dict[str, Any]:
    wanted = [c for c in CONTENDERS if not args.only or c[0] in args.only]
    scenarios = [s for s in SCENARIOS if not args.scenarios or s.key in args.scenarios]
    tmp = Path(tempfile.mkdtemp(prefix="failover-bench-"))
    env = dict(os.environ)
    # The DNS scenario's lookups are answered "no such host" inside each process (shim/), so none leaves the machine.
    env["PYTHONPATH"] = os.pathsep.join([str(NODNS), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["NODE_OPTIONS"] = f"--require {NODNS / 'nodns.cjs'}"
    env["BENCH_KEY"] = "bench"
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    env.pop("OPENAI_API_KEY", None)
    started = time.monotonic()
    with FaultServer() as faults, Addresses() as addresses:
        cells: list[tuple[CellSpec, str, str]] = []
        index = 0
        for name, _, _ in wanted:
            for sc in scenarios:
                for stream in sc.modes:
                    cell = CellSpec(name, sc, stream, index)
                    index += 1
                    tag = f"c{cell.index}"
                    a = addresses.first_url(sc, faults, f"{tag}a")
                    b = faults.scenario(f"{tag}b", sc.second)
                    cells.append((cell, a, b))
        gateways = Gateways(env, tmp)
        warm = faults.scenario("warm-up", Ok(text=ANSWER))
        try:
            gateways.start({n for n, _, _ in wanted}, cells, warm)
            results = drive(wanted, cells, gateways, env, warm)
        finally:
            gateways.stop()
        bugs = list(faults.handler_errors)
        # How often each provider was asked: shows retries, and that nobody "passed" without trying the first.
        asked = {
            c.id: (
                len(faults.requests(f"c{c.index}a")) if not c.scenario.address else None,
                len(faults.requests(f"c{c.index}b")),
            )
            for c, _, _ in cells
        }
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load": os.getloadavg()[0],
        "seconds": time.monotonic() - started,
        "fault_server_bugs": [repr(b) for b in bugs],
    }
    vers: dict[str, dict[str, str]] = {n: versions(py, d) for n, py, d in wanted}
    if "portkey" in vers:
        vers["portkey"] = {"@portkey-ai/gateway": node_version("@portkey-ai/gateway")}
    if "polychat-serve" in vers:
        vers["polychat-serve"] = versions(PROJECT_PY, ("polychat",))
    unavailable = dict(gateways.unavailable)
    table: dict[str, dict[str, Any]] = {}
    for cell, _, _ in cells:
        row = table.setdefault(cell.contender, {})
        key = f"{cell.scenario.key}/{'stream' if cell.stream else 'plain'}"
        if cell.contender in unavailable:
            row[key] = {"score": "n/a", "note": unavailable[cell.contender]}
            continue
        res = results.get(cell.id) or {"calls": [], "hang": True}
        s, note = score_cell(res, cell.scenario.calls)
        to_a, to_b = asked[cell.id]
        if to_a == 0:
            s, note = "n/a", "never asked the failing provider (a bench or setup problem, not a result)"
        elif cell.scenario.calls > 1:
            note += f"; the flapping provider was asked {to_a} times, the healthy one {to_b}"
        row[key] = {"score": s, "note": note, "requests_first": to_a, "requests_second": to_b, "calls": res["calls"]}
    return {
        "info": info,
        "versions": vers,
        "unavailable": unavailable,
        "table": table,
        "scenarios": [(s.key, s.title, list(s.modes)) for s in scenarios],
    }


def drive(
    wanted: list[tuple[str, Path, tuple[str, ...]]],
    cells: list[tuple[CellSpec, str, str]],
    gateways: Gateways,
    env: dict[str, str],
    warm: str,
) -> dict[str, dict[str, Any]]:
    """Run the contenders' workers, :data:`WORKERS` at a time; every cell's result by cell id."""
    results: dict[str, dict[str, Any]] = {}

    def worker(name: str, py: Path) -> None:
        job: dict[str, Any] = {
            "contender": name,
            "gateway": gateways.urls.get(name),
            "api_key": LITELLM_KEY if name == "litellm-proxy" else "bench",
            "headers": {"x-portkey-config": PORTKEY_CONFIG} if name == "portkey" else {},
            "timeout": TIMEOUT,
            "retries": RETRIES,
            "cap": HARD_CAP,
            "cell_cap": CELL_CAP,
            "warm": warm,
            "cells": [
                {"id": c.id, "a": a, "b": b, "stream": c.stream, "calls": c.scenario.calls, "route": c.route}
                for c, a, b in cells
                if c.contender == name
            ],
        }
        with open(gateways.tmp / f"worker-{name}.log", "wb") as err:
            p = subprocess.Popen(
                [str(py), str(HERE / "contenders.py")],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                env=env,
            )
            out, _ = p.communicate(json.dumps(job).encode())
        for line in out.decode().splitlines():
            r = json.loads(line)
            results[r["id"]] = r

    with ThreadPoolExecutor(WORKERS) as pool:
        for f in [pool.submit(worker, n, py) for n, py, _ in wanted if n not in gateways.unavailable]:
            f.result()
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", type=lambda s: set(s.split(",")), default=set())
    ap.add_argument("--scenarios", type=lambda s: set(s.split(",")), default=set())
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args()
    data = run(args)
    from report import write

    write(data, args.out)


if __name__ == "__main__":
    main()
