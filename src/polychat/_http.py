"""httpx clients and the thin I/O shells every HTTP provider shares.

One :class:`TransportPool` per polychat client owns the connection pools: one ``httpx.Client`` /
``httpx.AsyncClient`` per distinct proxy route, created on first use and reused, so providers leaving through
different proxies never share a connection. Transport failures become polychat errors here and nowhere else.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from . import _constants as C
from ._proxy import ProxyConfig, build_mounts
from ._redact import redact_url
from .errors import APIConnectionError, APIError, APITimeoutError, status_error

TimeoutLike = float | int | httpx.Timeout | None


def make_timeout(value: TimeoutLike) -> httpx.Timeout:
    """A number is the read/write budget (connect stays at its default unless smaller)."""
    if isinstance(value, httpx.Timeout):
        return value
    if value is None:
        return httpx.Timeout(C.READ_TIMEOUT, connect=C.CONNECT_TIMEOUT, pool=C.POOL_TIMEOUT)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        from .errors import ConfigError

        raise ConfigError(f"timeout must be a positive number of seconds or an httpx.Timeout, got {value!r}")
    return httpx.Timeout(float(value), connect=min(C.CONNECT_TIMEOUT, float(value)), pool=C.POOL_TIMEOUT)


@dataclass(frozen=True, slots=True)
class WireRequest:
    """What an HTTP provider wants sent; built by pure code, sent by the shells below."""

    method: str
    url: str
    headers: Mapping[str, str]
    content: bytes | None = None
    params: Mapping[str, Any] | None = None


_LIMITS = httpx.Limits(
    max_connections=C.MAX_CONNECTIONS,
    max_keepalive_connections=C.MAX_KEEPALIVE_CONNECTIONS,
    keepalive_expiry=C.KEEPALIVE_EXPIRY,
)


class TransportPool:
    """Lazily built httpx clients, keyed by proxy route. Thread-safe; ``close()`` / ``aclose()`` release them."""

    def __init__(self, *, trust_env: bool = True) -> None:
        self.trust_env = trust_env
        self._sync: dict[Any, httpx.Client] = {}
        self._async: dict[Any, httpx.AsyncClient] = {}
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

    def async_client(self, proxy: ProxyConfig | None) -> httpx.AsyncClient:
        key = proxy.key if proxy else None
        client = self._async.get(key)
        if client is None:
            with self._lock:
                client = self._async.get(key)
                if client is None:
                    client = self._async[key] = self._build(httpx.AsyncClient, httpx.AsyncHTTPTransport, proxy)
        return client

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
        for c in clients:
            c.close()

    async def aclose(self) -> None:
        with self._lock:
            clients, self._async = list(self._async.values()), {}
        for c in clients:
            await c.aclose()


# -- errors ----------------------------------------------------------------------------------------------------


def _proxy_hint(proxy: ProxyConfig | None, url: str) -> str:
    if proxy is None or proxy.direct:
        return ""
    scheme = "https" if url.startswith("https:") else "http"
    purl = proxy.url_for(scheme)
    return f" via proxy {redact_url(purl)}" if purl else ""


def transport_error(exc: Exception, *, provider: str, url: str, proxy: ProxyConfig | None) -> APIError:
    """Map an httpx exception to a polychat error naming the target (and proxy), never a secret."""
    where = f"{redact_url(url)}{_proxy_hint(proxy, url)}"
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        phase = {
            httpx.ConnectTimeout: "connecting to",
            httpx.ReadTimeout: "waiting for data from",
            httpx.WriteTimeout: "sending to",
            httpx.PoolTimeout: "waiting for a free connection to",
        }.get(type(exc), "talking to")
        err: APIError = APITimeoutError(f"Timed out {phase} {where}", provider=provider)
    elif isinstance(exc, httpx.ProxyError):
        err = APIConnectionError(f"Proxy failed for {where}: {detail}", provider=provider)
    elif isinstance(exc, httpx.ConnectError):
        err = APIConnectionError(f"Could not connect to {where}: {detail}", provider=provider)
    elif isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError)):
        err = APIConnectionError(f"Connection to {where} broke: {detail}", provider=provider)
    else:
        err = APIConnectionError(f"Request to {where} failed: {type(exc).__name__}: {detail}", provider=provider)
    err.__cause__ = exc
    return err


def proxy_status_error(
    resp: httpx.Response, proxy: ProxyConfig | None, url: str, provider: str
) -> APIConnectionError | None:
    """A 407 (or an auth challenge from the proxy itself) on a forwarded request: the proxy refused us.

    Such failures are the route's, not the provider's, so they become connection errors naming the proxy
    (password hidden), which a failover chain answers by trying a provider on another route.
    """
    if proxy is None or proxy.direct or not _proxy_hint(proxy, url):
        return None
    status = resp.status_code
    # tinyproxy 1.11 answers a wrong password with 401 (not 407) under its own Server header.
    from_proxy = status == 407 or "proxy-authenticate" in resp.headers or (
        status == 401 and "tinyproxy" in resp.headers.get("server", "").lower()
    )
    if not from_proxy:
        return None
    return APIConnectionError(
        f"Proxy refused the request for {redact_url(url)}{_proxy_hint(proxy, url)}: HTTP {status} "
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


def error_from_response(status: int, headers: httpx.Headers, body: bytes, provider: str) -> APIError:
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
