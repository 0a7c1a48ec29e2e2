"""aiohttp under the async shells, for direct routes (no proxy in effect).

Measured here, raw aiohttp answers an async request ~4× faster than raw httpx and keeps ~14× the throughput at
100 requests in flight (httpcore's async pool degrades under concurrency). Proxied routes keep httpx, so every
proxy semantic (SOCKS, per-scheme dicts, ``NO_PROXY``, ``trust_env``) is httpx's; which route a URL takes is decided
in :mod:`polychat._http`. This module is imported on the first async request that goes direct, never by
``import polychat``.

It behaves like the httpx transport it stands in for: the same TLS context (certifi, or ``SSL_CERT_FILE`` with
``trust_env``), no redirects, the same timeout phases (``write`` has no aiohttp counterpart), the same query
encoding, and the same polychat errors (one table for both, :mod:`polychat._transport_errors`) — no aiohttp
exception reaches a caller. A response closed before its body was read to the end closes its connection instead of
returning it to the pool, so a cancelled hedge hangs up.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
import threading
from collections.abc import AsyncIterator

import aiohttp
import httpx
from multidict import CIMultiDictProxy
from yarl import URL

from . import _constants as C
from ._http import WireRequest
from ._proxy import ProxyConfig
from ._timeouts import Watch
from ._transport_errors import transport_error
from .errors import APIError


class RequestBuildError(aiohttp.ClientError):
    """aiohttp refused to build the request (a ValueError, e.g. a newline in a header value)."""


class AioResponse:
    """An aiohttp response seen through the shells' interface (``status_code``, ``headers``, bytes, ``aclose``)."""

    __slots__ = ("_resp", "headers", "status_code")

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp
        self.status_code: int = resp.status
        self.headers: CIMultiDictProxy[str] = resp.headers

    def aiter_bytes(self) -> AsyncIterator[bytes]:
        return self._resp.content.iter_any()

    async def aread(self) -> bytes:
        return await self._resp.read()

    async def aclose(self) -> None:
        # Once the body is complete aiohttp has already put the connection back in the pool and this is a no-op;
        # before that (an early close, a cancelled task) it closes the connection: nobody reads the rest.
        self._resp.close()


def _client_timeout(t: httpx.Timeout) -> aiohttp.ClientTimeout:
    # aiohttp's ``connect`` covers the wait for a pooled connection plus making one; ``sock_connect`` the latter.
    acquire = None if t.pool is None or t.connect is None else t.pool + t.connect
    return aiohttp.ClientTimeout(total=None, connect=acquire, sock_connect=t.connect, sock_read=t.read)


def _abandon(session: aiohttp.ClientSession) -> None:
    """Forget a session whose loop is gone or not running: mark it (and its connector) closed without awaiting."""
    connector = session.connector
    session.detach()
    if connector is not None:
        with contextlib.suppress(Exception):
            connector._close()  # closes the sockets if the loop still exists; marks the connector closed either way


class AiohttpTransport:
    """One ``aiohttp.ClientSession`` per event loop (sessions are loop-bound), built on first use in that loop."""

    errors: tuple[type[BaseException], ...] = (aiohttp.ClientError, asyncio.TimeoutError)

    def __init__(self, *, trust_env: bool) -> None:
        self.trust_env = trust_env
        self._sessions: dict[asyncio.AbstractEventLoop, aiohttp.ClientSession] = {}
        self._lock = threading.Lock()
        self._ssl: ssl.SSLContext | None = None
        self._timeouts: dict[tuple[float | None, ...], aiohttp.ClientTimeout] = {}

    # -- sessions --------------------------------------------------------------------------------------------------

    def _session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        session = self._sessions.get(loop)
        if session is not None and not session.closed:
            return session
        with self._lock:
            for other, old in list(self._sessions.items()):
                if other.is_closed() or old.closed:
                    del self._sessions[other]
                    _abandon(old)
            session = self._sessions[loop] = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=C.MAX_CONNECTIONS, limit_per_host=0, keepalive_timeout=C.KEEPALIVE_EXPIRY
                ),
                # Proxies were decided by polychat (this route is direct); cookies kept like httpx's client does.
                trust_env=False,
                cookie_jar=aiohttp.CookieJar(unsafe=True),
                auto_decompress=True,
                # httpx adds no Content-Type of its own to a bytes body; neither should we.
                skip_auto_headers=("Content-Type",),
            )
        return session

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            # httpx's own context: certifi's CAs, or SSL_CERT_FILE / SSL_CERT_DIR when trust_env.
            self._ssl = httpx.create_ssl_context(trust_env=self.trust_env)
        return self._ssl

    def _timeout(self, t: httpx.Timeout) -> aiohttp.ClientTimeout:
        key = (t.connect, t.read, t.write, t.pool)
        ct = self._timeouts.get(key)
        if ct is None:
            ct = self._timeouts[key] = _client_timeout(t)
        return ct

    # -- the seam --------------------------------------------------------------------------------------------------

    async def open(self, wire: WireRequest, timeout: httpx.Timeout, watch: Watch | None) -> AioResponse:
        session = self._session()
        url = wire.url
        target: str | URL = url
        if wire.params:
            target = URL(str(httpx.URL(url, params=wire.params)), encoded=True)  # httpx's encoding of the query
        try:
            resp = await session.request(
                wire.method,
                target,
                headers=wire.headers,
                data=wire.content,
                timeout=self._timeout(timeout),
                allow_redirects=False,
                ssl=self._ssl_context() if url.startswith("https:") else True,
            )
        except ValueError as e:
            raise RequestBuildError(str(e)) from e
        return AioResponse(resp)

    def error(self, exc: BaseException, *, provider: str, url: str, proxy: ProxyConfig | None) -> APIError:
        """The polychat error for an aiohttp failure, worded as the httpx transport's are (the route is direct,
        so no proxy is named)."""
        return transport_error(exc, provider=provider, url=url, proxy=None)

    # -- closing ---------------------------------------------------------------------------------------------------

    def _take(self) -> dict[asyncio.AbstractEventLoop, aiohttp.ClientSession]:
        with self._lock:
            sessions, self._sessions = self._sessions, {}
        return sessions

    async def aclose(self) -> None:
        current = asyncio.get_running_loop()
        for loop, session in self._take().items():
            if loop is current:
                await session.close()
            elif loop.is_running() and not loop.is_closed():
                await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(session.close(), loop))
            else:
                _abandon(session)

    def close(self) -> None:
        """Close from sync code (``Client.close()``): each session on its own loop (see :mod:`polychat._loops`)."""
        from ._loops import close_soon

        for loop, session in self._take().items():
            close_soon(session.close, loop, abandon=functools.partial(_abandon, session))
