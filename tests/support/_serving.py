"""What the scripted test servers share: scenarios by name, and running a server on a thread of its own.

The fault server, the wire server and the fake Anthropic upstream each answer per *scenario* (the first path
segment after ``/s/``): a list of behaviours used one per request, the last repeating. ``Scripted`` is that
bookkeeping once. ``LoopThread`` runs an asyncio server on a private event loop in a daemon thread (the fault and
wire servers speak raw HTTP over asyncio streams so they can misbehave byte by byte); ``HTTPThread`` runs a
``ThreadingHTTPServer`` (the fake Anthropic upstream and the OTLP receiver, which only need well-formed HTTP).
"""

from __future__ import annotations

import asyncio
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Generic, TypeVar

from tests.support.servers import LOOPBACK

B = TypeVar("B")
L = TypeVar("L", bound="LoopThread")
H = TypeVar("H", bound="HTTPThread")


class Scripted(Generic[B]):
    """Behaviours by scenario name; ``_lock`` also guards whatever the server records."""

    def __init__(self, fallback: B) -> None:
        self._fallback = fallback  # what an unknown (or emptily scripted) scenario gets
        self._scenarios: dict[str, list[B]] = {}
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def _script(self, name: str, behaviours: tuple[B, ...]) -> None:
        with self._lock:
            self._scenarios[name] = list(behaviours) or [self._fallback]
            self._counts[name] = 0

    def _next(self, scenario: str) -> B:
        with self._lock:
            items = self._scenarios.get(scenario) or [self._fallback]
            i = self._counts.get(scenario, 0)
            self._counts[scenario] = i + 1
            return items[min(i, len(items) - 1)]


class _Stoppable:
    def stop(self) -> None:
        raise NotImplementedError

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class LoopThread(_Stoppable):
    """An ``asyncio.start_server`` on 127.0.0.1 (a free port) whose loop runs in a daemon thread.

    ``start()`` (or ``with``) starts it; ``stop()`` closes the listener and every open connection.
    """

    def __init__(self, thread_name: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=thread_name, daemon=True)
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def _on_start(self) -> None:
        """Runs on the loop before the listener opens (for loop-bound state)."""

    def _on_stop(self) -> None:
        """Runs on the loop before connections are closed (to let stalled handlers go)."""

    def start(self: L) -> L:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    async def _start(self) -> None:
        await self._on_start()
        self._server = await asyncio.start_server(self._handle, LOOPBACK, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        async def _stop() -> None:
            assert self._server is not None
            self._on_stop()
            self._server.close()
            writers = list(self._writers)
            for w in writers:
                w.close()
            # Wait until each close has gone out before the loop stops; a peer that already hung up makes its
            # wait_closed raise, which is the close having happened.
            await asyncio.gather(*(w.wait_closed() for w in writers), return_exceptions=True)

        asyncio.run_coroutine_threadsafe(_stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()  # else the garbage collector closes it, in whichever test happens to be running

    def __enter__(self: L) -> L:
        return self.start()


class HTTPThread(_Stoppable):
    """A ``ThreadingHTTPServer`` on 127.0.0.1 (a free port) serving ``handler`` from a daemon thread; started here."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self._server = ThreadingHTTPServer((LOOPBACK, 0), handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self: H) -> H:
        return self
