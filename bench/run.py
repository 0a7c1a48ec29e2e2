"""The side-by-side benchmark: polychat against raw transports and its peers, all in one run.

Run it through ``bash bench/run.sh [--quick]`` (which sets up both virtual environments first). This script runs in
``bench/.venv-peers`` and starts everything else as subprocesses:

* ``upstream.py`` — the fast fixed-answer OpenAI-compatible server every contender talks to;
* one ``contenders.py NAME`` worker per contender, polychat and raw httpx with the project's ``.venv`` python, the
  peers with ``.venv-peers``; each keeps its own clients and pools for the whole run;
* fresh interpreters for the import measurements;
* the gateways (``polychat serve``, LiteLLM's proxy, g4f's API) and ``bench_local.py``.

Contenders are interleaved: each round asks every contender for a batch, in a rotating order, so drift in the
machine's load hits all of them alike. Medians and p99 are over all samples; every ratio is to the baseline measured
in the same run. Writes ``bench/results/latest.md`` (the table), ``latest.json`` (raw samples) and ``latest.png``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
VENV_PY = str(ROOT / ".venv" / "bin" / "python")
PEERS_PY = str(BENCH / ".venv-peers" / "bin" / "python")

# Which interpreter runs which contender, and which distributions to report versions of.
CONTENDERS: dict[str, tuple[str, list[str]]] = {
    "raw-httpx": (VENV_PY, ["httpx"]),
    "polychat": (VENV_PY, ["polychat", "httpx", "msgspec"]),
    "raw-aiohttp": (PEERS_PY, ["aiohttp"]),
    "openai": (PEERS_PY, ["openai", "httpx"]),
    "litellm": (PEERS_PY, ["litellm"]),
    "litellm-router": (PEERS_PY, ["litellm"]),
    "g4f": (PEERS_PY, ["g4f"]),
}


@dataclass
class Scale:
    import_reps: int
    lat_rounds: int
    lat_batch: int
    tput_rounds: int
    tput_n: int
    failover_n: int
    hedge_n: int
    gw_n1: int
    gw_n64: int
    gw_rounds: int
    mem_small: int
    mem_big: int
    local_rounds: int
    local_cold: int
    local_timeout: float


FULL = Scale(7, 8, 25, 3, 600, 300, 5, 300, 1500, 3, 1000, 10000, 3, 2, 600.0)
QUICK = Scale(3, 3, 10, 1, 300, 80, 2, 100, 400, 1, 200, 2000, 1, 1, 300.0)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def peer_env() -> dict[str, str]:
    env = dict(os.environ)
    # LiteLLM fetches its model cost map from the network at import unless told to use the packaged copy.
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    env.setdefault("LITELLM_TELEMETRY", "False")
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Worker:
    """A contender process speaking the JSON-lines protocol of ``contenders.py``."""

    def __init__(self, name: str, python: str, stderr: Any) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            [python, str(BENCH / "contenders.py"), name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=peer_env(),
            cwd=str(BENCH),
        )

    def cmd(self, **command: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.name}: worker exited (code {self.proc.wait()})")
        reply: dict[str, Any] = json.loads(line)
        if not reply.get("ok"):
            raise RuntimeError(f"{self.name}: {reply.get('error')}\n{reply.get('trace', '')}")
        return reply

    def close(self) -> None:
        with contextlib.suppress(Exception):
            assert self.proc.stdin is not None
            self.proc.stdin.write('{"op": "quit"}\n')
            self.proc.stdin.flush()
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Upstream:
    def __init__(self, stderr: Any, chunks: int = 50) -> None:
        self.proc = subprocess.Popen(
            [PEERS_PY, str(BENCH / "upstream.py"), "--port", "0", "--chunks", str(chunks)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline().split()
        if not first or first[0] != "PORT":
            raise RuntimeError("the upstream did not start")
        self.port = int(first[1])
        self.loop = first[2] if len(first) > 2 else "?"
        self.origin = f"http://127.0.0.1:{self.port}"
        self.base = self.origin + "/v1"

    def url(self, **opts: float) -> str:
        spec = ",".join(f"{k}={v:g}" for k, v in opts.items())
        return f"{self.origin}/o/{spec}/v1"

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# -- sections --------------------------------------------------------------------------------------------------

IMPORT_SCRIPT = """
import json, sys, time
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * {page}
r0 = rss(); t0 = time.perf_counter()
{code}
t1 = time.perf_counter(); r1 = rss()
print(json.dumps({{"s": t1 - t0, "mib": (r1 - r0) / 2**20, "rss_mib": r1 / 2**20}}))
"""

IMPORTS: list[tuple[str, str, str]] = [
    ("import httpx", VENV_PY, "import httpx"),
    ("import polychat", VENV_PY, "import polychat"),
    ("from polychat import Client (usable)", VENV_PY, "from polychat import Client\nimport polychat.providers.openai"),
    ("import aiohttp", PEERS_PY, "import aiohttp"),
    ("import openai", PEERS_PY, "import openai"),
    ("import litellm", PEERS_PY, "import litellm"),
    ("import g4f.client", PEERS_PY, "import g4f.client"),
]


def bench_imports(scale: Scale) -> dict[str, Any]:
    """Fresh interpreter per sample; the time and resident-memory growth of the import statement alone."""
    page = os.sysconf("SC_PAGE_SIZE")
    samples: dict[str, list[dict[str, float]]] = {label: [] for label, _, _ in IMPORTS}
    errors: dict[str, str] = {}
    for rep in range(scale.import_reps + 1):  # the first round only warms the bytecode caches
        order = IMPORTS[rep % len(IMPORTS) :] + IMPORTS[: rep % len(IMPORTS)]
        for label, python, code in order:
            if label in errors:
                continue
            script = IMPORT_SCRIPT.format(page=page, code=code)
            p = subprocess.run([python, "-c", script], capture_output=True, text=True, env=peer_env(), timeout=120)
            if p.returncode != 0:
                errors[label] = (p.stderr.strip().splitlines() or ["failed"])[-1][:300]
                continue
            if rep:
                samples[label].append(json.loads(p.stdout.strip().splitlines()[-1]))
    return {"samples": samples, "errors": errors}


def bench_latency(scale: Scale, workers: dict[str, Worker], caps: dict[str, dict[str, bool]]) -> dict[str, Any]:
    kinds = [("sync", False), ("sync", True), ("async", False), ("async", True)]
    samples: dict[str, dict[str, list[float]]] = {n: {} for n in workers}
    errors: dict[str, dict[str, str]] = {n: {} for n in workers}
    names = list(workers)
    for mode, stream in kinds:
        key = f"{mode}-{'stream' if stream else 'nonstream'}"
        log(f"latency {key}")
        for name in names:  # warm-up: connections open, lazy imports done
            if caps[name].get(mode):
                try:
                    workers[name].cmd(op="lat", mode=mode, stream=stream, n=10)
                except RuntimeError as e:
                    errors[name][key] = str(e).splitlines()[0][:300]
        for r in range(scale.lat_rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                if not caps[name].get(mode) or key in errors[name]:
                    continue
                try:
                    got = workers[name].cmd(op="lat", mode=mode, stream=stream, n=scale.lat_batch)["samples"]
                except RuntimeError as e:
                    errors[name][key] = str(e).splitlines()[0][:300]
                    continue
                samples[name].setdefault(key, []).extend(got)
    return {"samples": samples, "errors": errors}


def bench_throughput(scale: Scale, workers: dict[str, Worker], caps: dict[str, dict[str, bool]]) -> dict[str, Any]:
    names = [n for n in workers if caps[n].get("async")]
    runs: dict[str, list[float]] = {n: [] for n in names}
    errors: dict[str, str] = {}
    for name in names:
        try:
            workers[name].cmd(op="tput", concurrency=100, n=200)
        except RuntimeError as e:
            errors[name] = str(e).splitlines()[0][:300]
    for r in range(scale.tput_rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            if name in errors:
                continue
            got = workers[name].cmd(op="tput", concurrency=100, n=scale.tput_n)
            if got["errors"]:
                errors[name] = f"{got['errors']} errors, e.g. {got['first_error']}"
                continue
            runs[name].append(got["n"] / got["elapsed"])
        log(f"throughput round {r + 1}/{scale.tput_rounds}")
    return {"req_per_s": runs, "errors": errors}


def bench_failover(scale: Scale, up: Upstream, stderr: Any) -> dict[str, Any]:
    with socket.socket() as dead:
        dead.bind(("127.0.0.1", 0))  # bound, never listening: connecting is refused
        w = Worker("polychat-failover", VENV_PY, stderr)
        try:
            w.cmd(
                op="setup",
                base_url=up.base,
                dead_url=f"http://127.0.0.1:{dead.getsockname()[1]}/v1",
                slow_url=up.url(ttfb=2000),
                fast_url=up.url(ttfb=50),
            )
            out: dict[str, Any] = {}
            for mode in ("sync", "async"):
                w.cmd(op="pairs", mode=mode, n=20)
                out[f"{mode}-pairs"] = w.cmd(op="pairs", mode=mode, n=scale.failover_n)["samples"]
                out[f"{mode}-hedge"] = w.cmd(op="hedge", mode=mode, n=scale.hedge_n)["samples"]
            return out
        finally:
            w.close()


# -- gateways --------------------------------------------------------------------------------------------------


class Gateway:
    """A gateway subprocess in front of the upstream: started, waited for, measured, stopped."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], health: str, headers: dict[str, str]):
        self.name = name
        self.argv = argv
        self.env = env
        self.health = health
        self.headers = headers
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = tempfile.NamedTemporaryFile(prefix=f"bench-{name}-", suffix=".log", delete=False)  # noqa: SIM115

    def start(self, timeout: float = 90.0) -> None:
        import urllib.request

        self.proc = subprocess.Popen(
            self.argv, env=self.env, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"exited with code {self.proc.returncode}: {self.tail()}")
            try:
                with urllib.request.urlopen(self.health, timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.25)
        raise RuntimeError(f"not ready after {timeout:.0f} s: {self.tail()}")

    def tail(self) -> str:
        self.log.flush()
        text = Path(self.log.name).read_text(errors="replace").strip().splitlines()
        return " | ".join(text[-3:])[-400:]

    def rss_mib(self) -> float:
        """Resident memory of the gateway and its children (workers), MiB."""
        assert self.proc is not None
        total = 0
        pids = [self.proc.pid]
        with contextlib.suppress(OSError):
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
            pids += [int(c) for c in children]
        for pid in pids:
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        return total / 1024

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        with contextlib.suppress(OSError):
            os.unlink(self.log.name)


def make_gateways(up: Upstream, tmp: Path) -> dict[str, Gateway]:
    gws: dict[str, Gateway] = {}
    env = dict(os.environ)
    port = free_port()
    cfg = tmp / "polychat-gateway.toml"
    cfg.write_text(
        f'[providers.up]\ntype = "openai"\nbase_url = "{up.base}"\nmodels = ["bench-model"]\n'
        '[defaults]\nprovider = "up"\n'
    )
    gws["polychat serve"] = Gateway(
        "polychat",
        [
            str(ROOT / ".venv" / "bin" / "polychat"),
            "serve",
            "--config",
            str(cfg),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
        ],
        {**env, "POLYCHAT_CONFIG": str(cfg)},
        f"http://127.0.0.1:{port}/health",
        {},
    )
    port = free_port()
    lcfg = tmp / "litellm.yaml"
    lcfg.write_text(
        "model_list:\n  - model_name: bench-model\n    litellm_params:\n      model: openai/bench-model\n"
        f"      api_base: {up.base}\n      api_key: bench\n"
    )
    gws["LiteLLM proxy"] = Gateway(
        "litellm",
        [
            str(BENCH / ".venv-peers" / "bin" / "litellm"),
            "--config",
            str(lcfg),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        {**peer_env(), "LITELLM_MASTER_KEY": "sk-bench", "LITELLM_LOG": "ERROR"},
        f"http://127.0.0.1:{port}/health/liveliness",
        {"authorization": "Bearer sk-bench"},
    )
    port = free_port()
    # g4f's API loads a provider list from g4f.dev when it is imported; offline, it reads a dated cache file
    # instead. Seed that cache with one provider: our upstream (a stand-in for the list, no other change).
    cache = tmp / "g4f-cache"
    day = cache / ".models" / dt.date.today().isoformat()
    day.mkdir(parents=True, exist_ok=True)
    (day / "providers.json").write_text(
        json.dumps({"providers": {"default": {"baseUrl": up.base}}, "defaultModels": {}})
    )
    gws["g4f API"] = Gateway(
        "g4f",
        [
            str(BENCH / ".venv-peers" / "bin" / "g4f"),
            "api",
            "--bind",
            f"127.0.0.1:{port}",
            "--provider",
            up.base,
            "--no-gui",
            "--no-access-log",
        ],
        {**peer_env(), "G4F_CACHE_DIR": str(cache)},
        f"http://127.0.0.1:{port}/v1/models",
        {},
    )
    return gws


def gateway_base(gw: Gateway) -> str:
    return gw.health.split("/health")[0].split("/v1/models")[0] + "/v1"


def bench_gateways(scale: Scale, up: Upstream, stderr: Any, only: set[str] | None = None) -> dict[str, Any]:
    """Added latency at concurrency 1 and 64 and throughput at 64, each against the upstream asked directly by the
    same driver in the same round; for polychat also resident memory after 1,000 and 10,000 streamed requests."""
    out: dict[str, Any] = {"direct": {"c1": [], "c64": [], "tput": []}, "gateways": {}, "errors": {}}
    driver = Worker("gateway-driver", PEERS_PY, stderr)
    driver.cmd(op="setup")
    with tempfile.TemporaryDirectory(prefix="polychat-bench-") as tmpdir:
        gws = make_gateways(up, Path(tmpdir))
        for label, gw in gws.items():
            if only is not None and label not in only:
                continue
            log(f"gateway: {label}")
            try:
                gw.start()
            except Exception as e:
                out["errors"][label] = f"could not start: {e}"
                gw.stop()
                continue
            res: dict[str, Any] = {k: [] for k in ("c1", "c64", "tput", "direct_c1", "direct_c64", "direct_tput")}
            try:
                base = gateway_base(gw)
                driver.cmd(op="load", url=base, headers=gw.headers, concurrency=8, n=200, stream=False)
                for r in range(scale.gw_rounds):
                    for target in ("gw", "direct") if r % 2 == 0 else ("direct", "gw"):
                        url, headers = (base, gw.headers) if target == "gw" else (up.base, {})
                        prefix = "" if target == "gw" else "direct_"
                        one = driver.cmd(op="load", url=url, headers=headers, concurrency=1, n=scale.gw_n1)
                        many = driver.cmd(op="load", url=url, headers=headers, concurrency=64, n=scale.gw_n64)
                        for got in (one, many):
                            if got["errors"]:
                                raise RuntimeError(f"{got['errors']} errors, e.g. {got['first_error']}")
                        res[prefix + "c1"] += one["samples"]
                        res[prefix + "c64"] += many["samples"]
                        res[prefix + "tput"].append(many["n"] / many["elapsed"])
                if label == "polychat serve":
                    res["memory"] = gateway_memory(scale, driver, gw, base)
            except Exception as e:
                out["errors"][label] = str(e).splitlines()[0][:300]
            finally:
                gw.stop()
            out["gateways"][label] = res
    driver.close()
    return out


def gateway_memory(scale: Scale, driver: Worker, gw: Gateway, base: str) -> dict[str, float]:
    """RSS after ``mem_small`` streamed requests and after ``mem_big`` in total (concurrency 16)."""
    done = 0
    points: dict[str, float] = {"start": gw.rss_mib()}
    for target in (scale.mem_small, scale.mem_big):
        while done < target:
            n = min(1000, target - done)
            got = driver.cmd(op="load", url=base, headers=gw.headers, concurrency=16, n=n, stream=True)
            if got["errors"]:
                raise RuntimeError(f"memory run: {got['errors']} errors, e.g. {got['first_error']}")
            done += n
        points[str(target)] = gw.rss_mib()
    return points


# -- local -----------------------------------------------------------------------------------------------------


def bench_local(scale: Scale) -> dict[str, Any]:
    script = BENCH / "bench_local.py"
    if not script.exists():
        return {"error": "bench/bench_local.py is not there yet"}
    cmd = [VENV_PY, str(script), "--rounds", str(scale.local_rounds), "--cold-runs", str(scale.local_cold)]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, cwd=str(ROOT), timeout=scale.local_timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"bench_local.py did not finish within {scale.local_timeout:.0f} s (machine too busy?)"}
    if p.returncode != 0:
        return {"error": (p.stderr.strip().splitlines() or ["failed"])[-1][:300]}
    data: dict[str, Any] = json.loads((RESULTS / "local.json").read_text())
    data["stdout"] = p.stdout
    return data


# -- main ------------------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 2**20:.0f} GiB"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory": mem,
        "os": platform.platform(),
        "python": platform.python_version(),
        "load_before": os.getloadavg(),
    }


def polychat_commit() -> str:
    with contextlib.suppress(Exception):
        return subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True, text=True
        ).stdout.strip()
    return "?"


@contextlib.contextmanager
def running(up_stderr: Any) -> Iterator[Upstream]:
    up = Upstream(up_stderr)
    try:
        yield up
    finally:
        up.close()


def main() -> None:
    ap = argparse.ArgumentParser(description="polychat side-by-side benchmark")
    ap.add_argument("--quick", action="store_true", help="a short run (about 2-3 minutes): fewer samples")
    ap.add_argument(
        "--only",
        default="",
        help="comma-separated sections to run (imports,latency,throughput,failover,gateway,local); default all",
    )
    ap.add_argument("--skip", default="", help="comma-separated sections to leave out")
    ap.add_argument("--contenders", default=",".join(CONTENDERS), help="comma-separated contenders")
    ap.add_argument("--out", default=str(RESULTS / "latest"), help="output path without extension")
    args = ap.parse_args()
    scale = QUICK if args.quick else FULL
    sections = (
        set(args.only.split(",")) if args.only else {"imports", "latency", "throughput", "failover", "gateway", "local"}
    )
    sections -= set(filter(None, args.skip.split(",")))
    RESULTS.mkdir(parents=True, exist_ok=True)
    wlog = open(RESULTS / "workers.log", "w")  # noqa: SIM115
    started = time.time()
    data: dict[str, Any] = {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine(),
        "polychat_commit": polychat_commit(),
        "quick": args.quick,
        "scale": scale.__dict__,
        "sections": sorted(sections),
    }
    if "imports" in sections:
        log("imports")
        data["imports"] = bench_imports(scale)
    with running(wlog) as up:
        data["upstream"] = {"loop": up.loop}
        if sections & {"latency", "throughput"}:
            names = [n for n in args.contenders.split(",") if n in CONTENDERS]
            workers: dict[str, Worker] = {}
            caps: dict[str, dict[str, bool]] = {}
            versions: dict[str, Any] = {}
            setup_errors: dict[str, str] = {}
            for name in names:
                python, dists = CONTENDERS[name]
                w = Worker(name, python, wlog)
                try:
                    got = w.cmd(op="setup", base_url=up.base, versions=dists)
                except RuntimeError as e:
                    setup_errors[name] = str(e).splitlines()[0][:300]
                    w.close()
                    continue
                workers[name] = w
                caps[name] = {"sync": got["sync"], "async": got["async"]}
                versions[name] = got["versions"]
            data["versions"] = versions
            data["setup_errors"] = setup_errors
            data["caps"] = caps
            try:
                if "latency" in sections:
                    data["latency"] = bench_latency(scale, workers, caps)
                if "throughput" in sections:
                    log("throughput at concurrency 100")
                    data["throughput"] = bench_throughput(scale, workers, caps)
            finally:
                for w in workers.values():
                    w.close()
        if "failover" in sections:
            log("failover")
            try:
                data["failover"] = bench_failover(scale, up, wlog)
            except RuntimeError as e:
                data["failover"] = {"error": str(e).splitlines()[0][:300]}
        if "gateway" in sections:
            data["gateway"] = bench_gateways(scale, up, wlog)
    if "local" in sections:
        log("local vs llama_cpp (bench/bench_local.py)")
        data["local"] = bench_local(scale)
    data["machine"]["load_after"] = os.getloadavg()
    data["seconds"] = time.time() - started
    wlog.close()

    from report import write_reports

    out = Path(args.out)
    md = write_reports(data, out)
    print(md)
    log(f"done in {data['seconds']:.0f} s: {out}.md, {out}.json, {out}.png")


if __name__ == "__main__":
    main()
