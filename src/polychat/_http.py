"""HTTP clients and the thin I/O helpers every HTTP provider shares.

One :class:`TransportPool` per polychat client owns the connection pools: one ``httpx.Client`` /
``httpx.AsyncClient`` per distinct proxy route, created on first use and reused, so providers leaving through
different proxies never share a connection. Async requests with no proxy in effect go through aiohttp instead
(:mod:`polychat._aio`). Each flavour sends through one seam (:class:`SyncTransport`, :class:`AsyncTransport`), which
the HTTP shells (:mod:`polychat._async.http` and its generated sync twin) use alike; every transport's failures
become polychat errors through the one table in :mod:`polychat._transport_errors`.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Protocol

import httpx
import msgspec

from . import _constants as C
from ._proxy import ProxyConfig, _no_proxy_patterns, build_mounts
from ._redact import guard_library_logs, redact_url
from ._timeouts import Watch, shutdown_socket
from ._transport_errors import proxy_hint, transport_error
from .errors import APIConnectionError, APIError, status_error

if TYPE_CHECKING:
    from ._aio import AiohttpTransport

TimeoutLike = float | int | httpx.Timeout | None


DEFAULT_TIMEOUT = httpx.Timeout(C.READ_TIMEOUT, connect=C.CONNECT_TIMEOUT, pool=C.POOL_TIMEOUT)


def make_timeout(value: TimeoutLike) -> httpx.Timeout:
    """A number is the read/write budget (connect stays at its default unless smaller)."""
    if isinstance(value, httpx.Timeout):
        return value
    if value is None:
        return DEFAULT_TIMEOUT
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        from .errors import ConfigError

        raise ConfigError(f"timeout must be a positive number of seconds or an httpx.Timeout, got {value!r}")
    return httpx.Timeout(float(value), connect=min(C.CONNECT_TIMEOUT, float(value)), pool=C.POOL_TIMEOUT)


class WireRequest(msgspec.Struct, frozen=True):
    """What an HTTP provider wants sent; built by pure code, sent by the shells below."""

    method: str
    url: str
    headers: Mapping[str, str]
    content: bytes | None = None
    params: Mapping[str, Any] | None = None


guard_library_logs()  # before any transport exists: httpcore's SOCKS debug lines carry the proxy password

_LIMITS = httpx.Limits(
    max_connections=C.MAX_CONNECTIONS,
    max_keepalive_connections=C.MAX_KEEPALIVE_CONNECTIONS,
    keepalive_expiry=C.KEEPALIVE_EXPIRY,
)


class ResponseHead(Protocol):
    """What the error paths read of a response: the status and case-insensitive headers."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...


class SyncResponse(ResponseHead, Protocol):
    """A response whose headers have arrived, as the sync shells use it (an ``httpx.Response`` is one)."""

    def iter_bytes(self) -> Iterator[bytes]: ...

    def read(self) -> bytes: ...

    def close(self) -> None: ...


class AsyncResponse(ResponseHead, Protocol):
    """A response whose headers have arrived, as the async shells use it (an ``httpx.Response`` is one)."""

    def aiter_bytes(self) -> AsyncIterator[bytes]: ...

    async def aread(self) -> bytes: ...

    async def aclose(self) -> None: ...


class SyncTransport(Protocol):
    """The sync seam: ``open`` sends a request and returns once the headers are in (httpx, every route).

    ``open`` and the response's methods raise only ``errors``; ``error()`` turns one into the polychat error. With
    a ``watch`` (the attempt's deadlines), the wait for the headers is bounded by what remains of them and the
    watch gets a way to cut the body's reads short: a blocking read cannot be interrupted otherwise.
    """

    errors: tuple[type[BaseException], ...]

    def open(self, wire: WireRequest, timeout: httpx.Timeout, watch: Watch | None) -> SyncResponse: ...

    def error(self, exc: BaseException, *, provider: str, url: str, proxy: ProxyConfig | None) -> APIError: ...


class AsyncTransport(Protocol):
    """The async seam: ``open`` sends a request and returns once the headers are in.

    ``open`` and the response's methods raise only ``errors``; ``error()`` turns one into the polychat error.
    Implementations: httpx (every proxied route) and aiohttp (direct routes, see :mod:`polychat._aio`). They take
    ``watch`` to share the sync seam's shape and leave it alone: async attempts bound every wait with asyncio
    deadlines instead (it is None for them).
    """

    errors: tuple[type[BaseException], ...]

    async def open(self, wire: WireRequest, timeout: httpx.Timeout, watch: Watch | None) -> AsyncResponse: ...

    def error(self, exc: BaseException, *, provider: str, url: str, proxy: ProxyConfig | None) -> APIError: ...


def _send_within(client: httpx.Client, req: httpx.Request, watch: Watch | None) -> httpx.Response:
    """Send ``req``; with a watch, the wait for the response is bounded by what remains of its deadline.

    A blocking read can only be bounded by the socket timeout, so the read timeout is lowered for the wait
    and put back before the body is read (httpcore reads the body's timeout when the body is first read).
    """
    remaining = watch.remaining() if watch is not None else None
    if remaining is None:
        return client.send(req, stream=True)
    timeouts: dict[str, float | None] = req.extensions["timeout"]
    saved = dict(timeouts)
    for phase in ("connect", "read", "write", "pool"):
        current = timeouts.get(phase)
        timeouts[phase] = remaining if current is None else min(current, remaining)
    try:
        resp = client.send(req, stream=True)
    except httpx.TimeoutException:
        # The watch's deadline, or a shorter timeout of the caller's own (which keeps its own words)?
        if watch is not None and watch.fired is None and watch.expired():
            watch.fired = watch.reason()
        raise
    timeouts.update(saved)
    return resp


class HttpxSyncTransport:
    """The sync seam over one ``httpx.Client`` (one proxy route)."""

    errors: tuple[type[BaseException], ...] = (httpx.HTTPError,)

    def __init__(self, client: httpx.Client) -> None:
        self.client = client

    def open(self, wire: WireRequest, timeout: httpx.Timeout, watch: Watch | None) -> httpx.Response:
        resp = _send_within(self.client, build_httpx_request(self.client, wire, timeout), watch)
        if watch is not None:
            watch.attach(shutdown_socket(resp.extensions.get("network_stream")))
        return resp

    def error(self, exc: BaseException, *, provider: str, url: str, proxy: ProxyConfig | None) -> APIError:
        return transport_error(exc, provider=provider, url=url, proxy=proxy, trust_env=self.client.trust_env)


class HttpxAsyncTransport:
    """The seam over one ``httpx.AsyncClient`` (one proxy route)."""

    errors: tuple[type[BaseException], ...] = (httpx.HTTPError,)

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def open(self, wire: WireRequest, timeout: httpx.Timeout, watch: Watch | None) -> httpx.Response:
        return await self.client.send(build_httpx_request(self.client, wire, timeout), stream=True)

    def error(self, exc: BaseException, *, provider: str, url: str, proxy: ProxyConfig | None) -> APIError:
        return transport_error(exc, provider=provider, url=url, proxy=proxy, trust_env=self.client.trust_env)


def goes_direct(proxy: ProxyConfig | None, url: str, *, trust_env: bool) -> bool:
    """Whether the httpx client :class:`TransportPool` builds for ``proxy`` would send ``url`` without a proxy.

    Mirrors httpx: an explicit setting is its ``http://`` / ``https://`` mounts plus its ``no_proxy`` patterns
    (environment variables are then ignored, as httpx ignores them when given a transport); no setting is the
    environment's proxies when ``trust_env``. The most specific matching pattern wins, as in httpx.
    """
    if proxy is not None and proxy.direct:
        return True
    if proxy is None and not trust_env:
        return True
    try:
        from httpx._utils import URLPattern, get_environment_proxies
    except ImportError:  # pragma: no cover - a future httpx moved them: keep everything on httpx
        return False
    if proxy is None:
        table = {pattern: target is None for pattern, target in get_environment_proxies().items()}
    else:
        table = {"http://": proxy.url_for("http") is None, "https://": proxy.url_for("https") is None}
        for host in proxy.no_proxy:
            for pattern in _no_proxy_patterns(host):
                table[pattern] = True
    target_url = httpx.URL(url)
    for pat in sorted(URLPattern(p) for p in table):
        if pat.matches(target_url):
            return table[pat.pattern]
    return True


def _origin(url: str) -> str:
    start = url.find("://")
    end = url.find("/", start + 3) if start >= 0 else -1
    return url if end < 0 else url[:end]


class TransportPool:
    """Lazily built clients, keyed by proxy route. Thread-safe; ``close()`` / ``aclose()`` release them.

    Sync requests always use httpx. Async requests use aiohttp when no proxy is in effect for the URL (much
    faster here, see :mod:`polychat._aio`) and httpx otherwise; the choice is made once per route and origin.
    """

    def __init__(self, *, trust_env: bool = True) -> None:
        self.trust_env = trust_env
        self._sync: dict[Any, httpx.Client] = {}
        self._sync_transports: dict[Any, HttpxSyncTransport] = {}
        self._async: dict[Any, httpx.AsyncClient] = {}
        self._async_transports: dict[Any, HttpxAsyncTransport] = {}
        self._routes: dict[tuple[Any, str], AsyncTransport] = {}
        self._aio: AiohttpTransport | None = None
        self._lock = threading.Lock()

    def sync_client(self, proxy: ProxyConfig | None) -> httpx.Client:
        key = proxy.key if proxy else None
        client = self._sync.get(key)
        if client is None:
            with self._lock:
                client = self._sync.get(key)
                if client is None:
                    client = self._sync[key] = self._build(httpx.Client, httpx.HTTPTransport, proxy)
        return client

    def sync_transport(self, proxy: ProxyConfig | None, url: str) -> SyncTransport:
        """The transport for a sync request under ``proxy``: httpx, whatever the ``url`` (which the async
        twin, :meth:`async_transport`, routes by)."""
        key = proxy.key if proxy else None
        transport = self._sync_transports.get(key)
        if transport is None:
            transport = self._sync_transports[key] = HttpxSyncTransport(self.sync_client(proxy))
        return transport

    def async_client(self, proxy: ProxyConfig | None) -> httpx.AsyncClient:
        key = proxy.key if proxy else None
        client = self._async.get(key)
        if client is None:
            with self._lock:
                client = self._async.get(key)
                if client is None:
                    client = self._async[key] = self._build(httpx.AsyncClient, httpx.AsyncHTTPTransport, proxy)
        return client

    def async_transport(self, proxy: ProxyConfig | None, url: str) -> AsyncTransport:
        """The transport for an async request to ``url`` under ``proxy``: aiohttp if direct, else httpx."""
        route = (proxy.key if proxy else None, _origin(url))
        transport = self._routes.get(route)
        if transport is None:
            transport = self._choose(proxy, url)
            if len(self._routes) >= 1024:
                self._routes.clear()
            self._routes[route] = transport
        return transport

    def _choose(self, proxy: ProxyConfig | None, url: str) -> AsyncTransport:
        if goes_direct(proxy, url, trust_env=self.trust_env):
            aio = self._aiohttp()
            if aio is not None:
                return aio
        return self._httpx_async(proxy)

    def _httpx_async(self, proxy: ProxyConfig | None) -> HttpxAsyncTransport:
        key = proxy.key if proxy else None
        transport = self._async_transports.get(key)
        if transport is None:
            transport = self._async_transports[key] = HttpxAsyncTransport(self.async_client(proxy))
        return transport

    def _aiohttp(self) -> AiohttpTransport | None:
        if self._aio is None:
            try:
                from ._aio import AiohttpTransport
            except ImportError:  # pragma: no cover - installed without its dependencies: httpx does it all
                return None
            with self._lock:
                if self._aio is None:
                    self._aio = AiohttpTransport(trust_env=self.trust_env)
        return self._aio

    def _build(self, client_cls: Any, transport_cls: Any, proxy: ProxyConfig | None) -> Any:
        kwargs: dict[str, Any] = {"limits": _LIMITS, "trust_env": self.trust_env, "follow_redirects": False}
        if proxy is not None:

            def make(url: str | None) -> Any:
                return transport_cls(proxy=url, limits=_LIMITS, trust_env=self.trust_env)

            if proxy.direct and not proxy.no_proxy:
                kwargs["transport"] = make(None)
            else:
                kwargs["mounts"] = build_mounts(proxy, make)
                kwargs["transport"] = make(None)
        return client_cls(**kwargs)

    def close(self) -> None:
        with self._lock:
            clients, self._sync = list(self._sync.values()), {}
            self._sync_transports = {}
            async_clients, self._async = list(self._async.values()), {}
            self._async_transports, self._routes = {}, {}
        for c in clients:
            c.close()
        if async_clients:  # opened by a sync client's hedging, on the bridge loop (or by async code, on its loop)
            from ._loops import close_soon
            from .routing._bridge import existing_loop

            for ac in async_clients:
                close_soon(ac.aclose, existing_loop())
        if self._aio is not None:
            self._aio.close()  # sessions a sync client's hedging opened on the background loop

    async def aclose(self) -> None:
        with self._lock:
            clients, self._async = list(self._async.values()), {}
            self._async_transports, self._routes = {}, {}
        for c in clients:
            await c.aclose()
        if self._aio is not None:
            await self._aio.aclose()


# -- errors ----------------------------------------------------------------------------------------------------


def proxy_status_error(
    resp: ResponseHead, proxy: ProxyConfig | None, url: str, provider: str
) -> APIConnectionError | None:
    """A 407 (or an auth challenge from the proxy itself) on a forwarded request: the proxy refused us.

    Such failures are the route's, not the provider's, so they become connection errors naming the proxy
    (password hidden), which a failover chain answers by trying a provider on another route.
    """
    if proxy is None or proxy.direct or not proxy_hint(proxy, url):
        return None
    status = resp.status_code
    # tinyproxy 1.11 answers a wrong password with 401 (not 407) under its own Server header.
    from_proxy = (
        status == 407
        or "proxy-authenticate" in resp.headers
        or (status == 401 and "tinyproxy" in resp.headers.get("server", "").lower())
    )
    if not from_proxy:
        return None
    return APIConnectionError(
        f"Proxy refused the request for {redact_url(url)}{proxy_hint(proxy, url)}: HTTP {status} "
        "(check the proxy's user name and password)",
        provider=provider,
    )


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """``retry-after-ms``, then ``retry-after`` (seconds or an HTTP date), as the official clients read them."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    ra = headers.get("retry-after")
    if not ra:
        return None
    try:
        return max(0.0, float(ra))
    except ValueError:
        pass
    try:
        import time

        dt = parsedate_to_datetime(ra)
        return max(0.0, dt.timestamp() - time.time())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def error_from_response(status: int, headers: Mapping[str, str], body: bytes, provider: str) -> APIError:
    from ._json import loads_or_text

    hdrs = {k.lower(): v for k, v in headers.items()}
    return status_error(
        status, loads_or_text(body), headers=hdrs, provider=provider, retry_after=retry_after_seconds(hdrs)
    )


def build_httpx_request(
    client: httpx.Client | httpx.AsyncClient, wire: WireRequest, timeout: httpx.Timeout
) -> httpx.Request:
    return client.build_request(
        wire.method,
        wire.url,
        headers=dict(wire.headers),
        content=wire.content,
        params=wire.params,
        timeout=timeout,
    )
