"""``polychat serve`` as a real subprocess on a free loopback port, for gateway and page tests.

``Gateway(config_text=..., env=..., args=..., nofile=...)`` writes the config (if any) to a temp dir, starts
``python -m polychat serve --port P [--config FILE] ARGS`` and waits until ``GET /health`` answers. The child gets
a clean environment: no ``OPENAI_*`` variables (so the default chain is the embedded model alone), no
``POLYCHAT_*`` ones unless given, and ``XDG_CONFIG_HOME`` in the temp dir so no user config is read.

``stop()`` is idempotent (SIGTERM, wait, SIGKILL); ``terminate()`` sends SIGTERM only, for graceful-shutdown
tests, and ``wait_exit()`` waits for the exit code.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from tests.support.servers import LOOPBACK, ManagedProcess, free_port, wait_for_http

_WITH_NOFILE = (
    "import os, resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, ({0}, {0})); "
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
)
_DROP_ENV = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID")


def gateway_env(extra: dict[str, str] | None = None, home: Path | None = None) -> dict[str, str]:
    """The environment a test gateway runs with (see the module docstring)."""
    env = {k: v for k, v in os.environ.items() if k not in _DROP_ENV and not k.startswith("POLYCHAT_")}
    env["PYTHONUNBUFFERED"] = "1"
    if home is not None:
        env["XDG_CONFIG_HOME"] = str(home)
    env.update(extra or {})
    return env


class Gateway:
    """A running ``polychat serve``; ``url`` is its root, ``base_url`` the OpenAI base URL (``.../v1``)."""

    def __init__(
        self,
        *,
        config_text: str | None = None,
        args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        startup_timeout: float = 60.0,
        health_headers: dict[str, str] | None = None,
        nofile: int | None = None,
    ) -> None:
        self.tmpdir = Path(tempfile.mkdtemp(prefix="polychat-gateway-"))
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.base_url = f"{self.url}/v1"
        self.config_path: Path | None = None
        argv = [sys.executable, "-m", "polychat", "serve", "--host", LOOPBACK, "--port", str(self.port)]
        if nofile is not None:  # the open-file limit (soft and hard) the gateway starts with
            argv[1:1] = ["-c", _WITH_NOFILE.format(nofile)]
        if config_text is not None:
            self.config_path = self.tmpdir / "polychat.toml"
            self.config_path.write_text(config_text)
            argv += ["--config", str(self.config_path)]
        argv += list(args)
        self._final_log: str | None = None
        self.proc: ManagedProcess | None = ManagedProcess(
            argv,
            name="polychat-serve",
            log_path=self.tmpdir / "serve.log",
            env=gateway_env(env, self.tmpdir),
            cwd=self.tmpdir,
        )
        try:
            wait_for_http(f"{self.url}/health", startup_timeout, self.proc, health_headers)
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log_text(self) -> str:
        if self._final_log is not None:
            return self._final_log
        return self.proc.log_text() if self.proc is not None else ""

    def terminate(self) -> None:
        """SIGTERM, as a process manager would send (the gateway drains, then exits)."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGTERM)

    def wait_exit(self, timeout: float) -> int:
        """Wait for the process to exit; its exit code (raises subprocess.TimeoutExpired)."""
        assert self.proc is not None
        return self.proc.popen.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(timeout=15.0)
            self._final_log = self.proc.log_text()
            self.proc = None
        shutil.rmtree(self.tmpdir, ignore_errors=True)

    def __enter__(self) -> Gateway:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def run_serve(
    args: Sequence[str], *, env: dict[str, str] | None = None, timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    """Run ``polychat serve ARGS`` expecting it to exit by itself (e.g. a refusal); returns the finished process."""
    home = Path(tempfile.mkdtemp(prefix="polychat-serve-"))
    try:
        return subprocess.run(
            [sys.executable, "-m", "polychat", "serve", *args],
            env=gateway_env(env, home),
            cwd=home,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    finally:
        shutil.rmtree(home, ignore_errors=True)
