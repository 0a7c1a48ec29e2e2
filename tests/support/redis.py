"""A real ``redis-server`` (Debian's) on a free loopback port, for the shared-state tests.

``RedisServer()`` starts it without persistence (``--save '' --appendonly no``); ``RedisServer(persistent=True)``
turns the append-only file on (``appendfsync always`` unless ``fsync`` says otherwise), so ``kill()`` followed by
``restart()`` — same port, same directory — keeps every write Redis acknowledged. ``stop()`` is idempotent; the
directory goes with it.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from tests.support.servers import LOOPBACK, ManagedProcess, _Server, free_port, require_program, wait_until


class RedisServer(_Server):
    name = "redis-server"

    def __init__(self, *, persistent: bool = False, password: str | None = None, fsync: str = "always") -> None:
        super().__init__()
        self.port = free_port()
        self.persistent = persistent
        self.fsync = fsync
        self.password = password
        auth = f":{password}@" if password else ""
        self.url = f"redis://{auth}{LOOPBACK}:{self.port}/0"
        self._program = require_program("redis-server")
        self._start_or_cleanup(self.start)

    def _argv(self) -> list[str]:
        argv = [self._program, "--port", str(self.port), "--bind", LOOPBACK, "--dir", str(self.tmpdir)]
        argv += ["--save", "", "--daemonize", "no", "--logfile", ""]
        if self.persistent:
            argv += ["--appendonly", "yes", "--appendfsync", self.fsync]
        else:
            argv += ["--appendonly", "no"]
        if self.password:
            argv += ["--requirepass", self.password]
        return argv

    def start(self) -> None:
        proc = self._spawn(self._argv())
        wait_until(self._pings, 30.0, what=f"redis-server on port {self.port}", proc=proc)

    def _pings(self) -> bool:
        client = self.client()
        try:
            return bool(client.ping())
        except Exception:
            return False
        finally:
            client.close()

    def client(self) -> Any:
        import redis

        return redis.Redis.from_url(self.url, socket_timeout=5)

    def kill(self) -> None:
        """SIGKILL, as a crash would: no chance to write anything more."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.popen.wait(10)
        self.proc.stop()
        self.proc = None

    def restart(self) -> None:
        """Start again on the same port with the same data directory."""
        assert self.proc is None
        self.start()

    @property
    def process(self) -> ManagedProcess | None:
        return self.proc
