"""A lean asyncio connection to Redis for the limit scripts every limited request runs on its path.

Why not redis-py's asyncio client: it spends about 0.1 ms of Python per command (connection pool, locks, retry
wrappers, response callbacks) — more than Redis takes to run the reservation script — and a gateway pays it on every
request, before the upstream is called. This speaks RESP itself over one connection per process: requests are
written as they come and replies matched in order (Redis answers a connection's commands in order), so concurrent
requests share one socket and one wake-up can deliver many replies. Replies are parsed by hiredis (the parser
redis-py uses; ``polychat[redis]`` installs it). The URL means what it means to redis-py (its ``parse_url``:
password, username, database, ``rediss://``, ``unix://``), and the timeout is polychat's :data:`REDIS_TIMEOUT`.

Failures are Python's own: ``ConnectionError`` (refused, lost, or a reply Redis sends while it cannot serve, such as
``LOADING`` after a restart) and ``TimeoutError``; an error reply to a command is :class:`ReplyError`. A late reply
ends the connection (the replies behind it could no longer be matched); the next command connects again.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from typing import Any, cast

from .._redis import REDIS_TIMEOUT, check_url, missing_package

#: Error replies that mean "Redis cannot serve right now" (redis-py counts them as connection errors too).
_UNAVAILABLE = ("LOADING", "BUSY", "MASTERDOWN", "READONLY", "TRYAGAIN", "CLUSTERDOWN")


class ReplyError(Exception):
    """Redis answered a command with an error (the message is Redis's, e.g. ``NOSCRIPT ...``)."""


def pack(args: tuple[Any, ...]) -> bytes:
    """``args`` as one RESP command (bytes, str and int arguments), packed by hiredis's C code."""
    return cast(bytes, _pack_command(args))


_pack_command: Any
try:
    from hiredis import pack_command as _pack_command
except ImportError:  # pragma: no cover - Connection() says which package is missing before anything is packed
    _pack_command = None


class _Protocol(asyncio.Protocol):
    def __init__(self, timeout: float) -> None:
        import hiredis

        self._reader = hiredis.Reader()
        self._reply_error = hiredis.ReplyError
        self._protocol_error = hiredis.ProtocolError
        self._timeout = timeout
        self._waiting: deque[tuple[asyncio.Future[Any], asyncio.TimerHandle]] = deque()
        self._transport: asyncio.Transport | None = None
        self._outgoing: list[bytes] = []
        #: Why the connection ended (None while it is up).
        self.ended: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports are not its subclasses

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while self._waiting:
            try:
                reply = self._reader.gets()
            except self._protocol_error as e:
                self._end(ConnectionError(f"Redis sent something that is not RESP ({e})"))
                return
            if reply is False:
                return
            future, timer = self._waiting.popleft()
            timer.cancel()
            if future.done():  # its caller was cancelled (a client went away): the reply is for no one
                continue
            if isinstance(reply, self._reply_error):
                message = str(reply)
                error: Exception = (
                    ConnectionError(f"Redis cannot serve: {message[:200]}")
                    if message.startswith(_UNAVAILABLE)
                    else ReplyError(message)
                )
                future.set_exception(error)
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError(f"the connection to Redis was lost ({exc or 'closed by Redis'})"))

    @property
    def busy(self) -> bool:
        return bool(self._waiting or self._outgoing)

    def request(self, payload: bytes) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        idle = not self.busy
        self._waiting.append((future, loop.call_later(self._timeout, self._late)))
        if idle:
            # Nothing in flight: no company to wait for, and the turn of the loop a deferred write costs is a
            # request's latency.
            if self._transport is not None and self.ended is None:
                self._transport.write(payload)
            return future
        # Written once the running callbacks are done: the commands of every request that arrived in the same
        # turn of the loop go out in one system call (under load, dozens).
        if not self._outgoing:
            loop.call_soon(self._write)
        self._outgoing.append(payload)
        return future

    def _write(self) -> None:
        data, self._outgoing = b"".join(self._outgoing), []
        if self._transport is not None and self.ended is None:
            self._transport.write(data)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def _late(self) -> None:
        self._end(TimeoutError(f"Redis did not answer within {self._timeout:g}s"))

    def _end(self, error: BaseException) -> None:
        self._fail(error)
        if self._transport is not None:
            self._transport.abort()

    def _fail(self, error: BaseException) -> None:
        if self.ended is None:
            self.ended = error
        while self._waiting:
            future, timer = self._waiting.popleft()
            timer.cancel()
            if not future.done():
                future.set_exception(error)


class Connection:
    """One pipelined connection to the Redis at ``url``, opened on first use (in the running loop) and again after
    it ended."""

    def __init__(self, url: str, *, timeout: float = REDIS_TIMEOUT) -> None:
        try:
            import hiredis  # noqa: F401  (the replies' parser, imported here so a missing one is said up front)
            from redis.connection import parse_url
        except ImportError:
            raise missing_package() from None
        options: dict[str, Any] = parse_url(check_url(url))
        self._path: str | None = options.get("path")
        self._host: str = options.get("host") or "localhost"
        self._port: int = int(options.get("port") or 6379)
        self._tls = "SSL" in getattr(options.get("connection_class"), "__name__", "")
        self._timeout = timeout
        setup: list[bytes] = []
        password, username = options.get("password"), options.get("username")
        if password:
            setup.append(pack(("AUTH", username, password) if username else ("AUTH", password)))
        if options.get("db"):
            setup.append(pack(("SELECT", options["db"])))
        self._setup = setup
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None

    @property
    def busy(self) -> bool:
        """The connection is opening, or commands are on their way or waiting for replies (a caller that can batch
        may as well wait for them)."""
        protocol = self._protocol
        return self._connecting is not None or (protocol is not None and protocol.busy)

    async def call(self, *args: Any) -> Any:
        """Send one command; its reply (hiredis's types: bytes, int, list, ...)."""
        protocol = self._protocol
        if protocol is None or protocol.ended is not None:
            protocol = await self._connect()
        return await protocol.request(pack(args))

    async def _connect(self) -> _Protocol:
        # Concurrent callers wait for the same attempt instead of opening a connection each.
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._open())
        connecting = self._connecting
        try:
            return await asyncio.shield(connecting)
        finally:
            if self._connecting is connecting and connecting.done():
                self._connecting = None

    async def _open(self) -> _Protocol:
        loop = asyncio.get_running_loop()

        def factory() -> _Protocol:
            return _Protocol(self._timeout)

        try:
            if self._path is not None:
                opening = loop.create_unix_connection(factory, self._path)
            elif self._tls:
                opening = loop.create_connection(
                    factory, self._host, self._port, ssl=ssl.create_default_context(), server_hostname=self._host
                )
            else:
                opening = loop.create_connection(factory, self._host, self._port)
            _, protocol = await asyncio.wait_for(opening, self._timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"connecting to Redis timed out after {self._timeout:g}s") from None
        try:
            for command in self._setup:
                await protocol.request(command)
        except ReplyError as e:  # AUTH or SELECT refused; Redis's message names no secret
            protocol.close()
            raise ConnectionError(f"Redis refused the connection's setup: {str(e)[:200]}") from None
        self._protocol = protocol
        return protocol

    async def aclose(self) -> None:
        if self._protocol is not None:
            self._protocol.close()
            self._protocol = None
