"""Throughput measured so that the gateway's CPU is what bounds it, and where every core went.

On a small machine the load generator and the upstream take CPU the gateway then cannot use, and a Python upstream
or load generator takes a lot of it. So the upstream here is nginx answering a fixed completion straight from its
config (``return 200 '...'``), the load comes from ``wrk`` (C, one thread), and the CPU time of every process
involved is read from ``/proc`` around each round, beside the whole machine's (``/proc/stat``: what other programs
took meanwhile).

Both are Debian packages (``apt-get install nginx-light wrk``) that only the benches need: :func:`missing` names the
absent ones and a bench skips its throughput part with that message.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_TICK = os.sysconf("SC_CLK_TCK")


def _which(tool: str) -> str | None:
    return shutil.which(tool) or next((p for p in (f"/usr/sbin/{tool}",) if os.path.exists(p)), None)


def missing() -> list[str]:
    """The tools this module needs that are not installed."""
    return [tool for tool in ("nginx", "wrk") if _which(tool) is None]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Nginx:
    """nginx (one process) on a free loopback port answering every request with the JSON ``body``."""

    def __init__(self, body: bytes) -> None:
        text = body.decode()
        if "'" in text or "$" in text:  # nginx would read them as the string's end or a variable
            raise ValueError("the fixed answer must not contain ' or $")
        program = _which("nginx")
        if program is None:
            raise RuntimeError("nginx is not installed (apt-get install nginx-light)")
        self.dir = Path(tempfile.mkdtemp(prefix="polychat-bench-nginx-"))
        port = _free_port()
        d = self.dir
        temp = " ".join(
            f"{kind}_temp_path {d}/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        (d / "nginx.conf").write_text(
            f"daemon off; master_process off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log warn;\n"
            "events { worker_connections 4096; }\n"
            f"http {{ access_log off; {temp} keepalive_requests 100000000; keepalive_timeout 300s;\n"
            f"  server {{ listen 127.0.0.1:{port};\n"
            f"    location / {{ default_type application/json; return 200 '{text}'; }} }}\n"
            "}\n"
        )
        self.proc = subprocess.Popen([program, "-c", str(d / "nginx.conf"), "-p", str(d)])
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.close()
                    raise RuntimeError(f"nginx did not start: {(d / 'error.log').read_text()[:500]}") from None
                time.sleep(0.05)  # polling for the port to open, not synchronising with a result
        self.pid = self.proc.pid
        self.url = f"http://127.0.0.1:{port}/v1"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Nginx:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def machine_busy() -> float:
    """CPU seconds the whole machine has been busy (every core, every process)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / _TICK  # all but idle and iowait (guest time is in user)


@dataclass
class Round:
    """One wrk run: requests per second, and CPU seconds per named group of processes during it."""

    rps: float
    requests: int
    seconds: float
    cpu: dict[str, float]

    def cores(self) -> dict[str, float]:
        """Each group's CPU as cores kept busy on average."""
        return {name: used / self.seconds for name, used in self.cpu.items()}


_LUA = """wrk.method = "POST"
wrk.body = {body}
{headers}
"""


def _lua_string(text: str) -> str:
    return "[==[" + text + "]==]"


def wrk_round(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    seconds: float,
    connections: int,
    groups: Mapping[str, Sequence[int]],
) -> Round:
    """Load ``url`` with POSTs of ``body`` from ``connections`` connections for ``seconds``; every answer must be a
    2xx. ``groups`` name the processes whose CPU is counted (the load generator's and the rest of the machine's
    are added as ``wrk`` and ``other programs``)."""
    program = _which("wrk")
    if program is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk)")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(
            _LUA.format(
                body=_lua_string(body.decode()),
                headers="\n".join(f"wrk.headers[ {_lua_string(k)} ] = {_lua_string(v)}" for k, v in headers.items()),
            )
        )
        script = f.name
    try:
        before = {name: sum(cpu_seconds(p) for p in pids) for name, pids in groups.items()}
        busy = machine_busy()
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [program, "-t1", f"-c{connections}", f"-d{seconds:g}s", "-s", script, url],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert proc.stdout is not None
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        busy = machine_busy() - busy
        cpu = {name: sum(cpu_seconds(p) for p in pids) - before[name] for name, pids in groups.items()}
    finally:
        os.unlink(script)
    if proc.returncode != 0 or "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk run failed or got errors:\n{out}")
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    if rps is None or total is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    cpu["wrk"] = usage.ru_utime + usage.ru_stime
    cpu["other programs"] = max(0.0, busy - sum(cpu.values()))
    return Round(float(rps.group(1)), int(total.group(1)), wall, cpu)


def median_cores(rounds: Sequence[Round]) -> dict[str, Any]:
    """Per group, the median over rounds of the cores it kept busy."""
    import statistics

    names = list(rounds[0].cpu)
    return {name: statistics.median(r.cores()[name] for r in rounds) for name in names}
