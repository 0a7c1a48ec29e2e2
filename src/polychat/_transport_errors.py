"""Transport failures as polychat errors: one table for every transport a request can take.

httpx carries every sync request and the async ones that go through a proxy; aiohttp carries the async ones that
go direct (:mod:`polychat._aio`). Each fails with its own exception classes; a caller sees only
:class:`~polychat.errors.APITimeoutError` or :class:`~polychat.errors.APIConnectionError`, worded the same
whichever transport carried the request: what failed (connecting, waiting for data, the proxy...), where (the URL
and the proxy in effect, secrets hidden) and the library's reason. :func:`transport_error` does it for all three
shells, from :func:`table` — the one place that says which exception means which failure.
"""

from __future__ import annotations

import os
import socket
import ssl
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from ._redact import redact_url
from .errors import APIConnectionError, APIError, APITimeoutError

if TYPE_CHECKING:
    from ._proxy import ProxyConfig


class Failure(NamedTuple):
    """What failed: the error class and its message (``{where}``: URL and proxy; ``{detail}``: the reason)."""

    error: type[APIError]
    message: str


CONNECT_TIMEOUT = Failure(APITimeoutError, "Timed out connecting to {where}")
READ_TIMEOUT = Failure(APITimeoutError, "Timed out waiting for data from {where}")
WRITE_TIMEOUT = Failure(APITimeoutError, "Timed out sending to {where}")
POOL_TIMEOUT = Failure(APITimeoutError, "Timed out waiting for a free connection to {where}")
TIMEOUT = Failure(APITimeoutError, "Timed out talking to {where}")
PROXY = Failure(APIConnectionError, "Proxy failed for {where}: {detail}")
CONNECT = Failure(APIConnectionError, "Could not connect to {where}: {detail}")
BROKEN = Failure(APIConnectionError, "Connection to {where} broke: {detail}")
#: Anything the table does not name.
OTHER = Failure(APIConnectionError, "Request to {where} failed: {kind}: {detail}")


def _said(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


class Row(NamedTuple):
    """Exceptions of class ``raised`` are ``failure``; ``detail`` words the reason (default: the exception's text)."""

    raised: type[BaseException]
    failure: Failure
    detail: Callable[[Any], str] = _said


def _httpx_rows() -> list[Row]:
    import httpx

    return [
        Row(httpx.ConnectTimeout, CONNECT_TIMEOUT),
        Row(httpx.ReadTimeout, READ_TIMEOUT),
        Row(httpx.WriteTimeout, WRITE_TIMEOUT),
        Row(httpx.PoolTimeout, POOL_TIMEOUT),
        Row(httpx.TimeoutException, TIMEOUT),
        Row(httpx.ProxyError, PROXY),
        Row(httpx.ConnectError, CONNECT, _os_detail),
        Row(httpx.RemoteProtocolError, BROKEN),
        Row(httpx.ReadError, BROKEN),
    ]


def _aiohttp_rows() -> list[Row]:
    import aiohttp

    # aiohttp's texts name the host and port, or the whole URL (query secrets and all): the details say less.
    return [
        Row(aiohttp.ConnectionTimeoutError, CONNECT_TIMEOUT),
        Row(aiohttp.ServerTimeoutError, READ_TIMEOUT),
        Row(aiohttp.ClientConnectorError, CONNECT, _connect_detail),
        Row(aiohttp.ClientResponseError, BROKEN, _response_detail),  # a response aiohttp could not parse
        Row(aiohttp.ClientConnectionError, BROKEN),
        Row(aiohttp.ClientPayloadError, BROKEN),
        Row(aiohttp.InvalidURL, OTHER, lambda _: "invalid URL"),
        Row(TimeoutError, READ_TIMEOUT),  # a read timeout, as aiohttp raised it before its own classes existed
    ]


def _os_detail(exc: BaseException) -> str:
    """The OS's reason a connection failed (``[Errno 111] Connection refused``), found under the wrappers: httpx's
    async backend words a refused connection "All connection attempts failed", its sync one gives the errno."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno and seen.errno > 0:
            return f"[Errno {seen.errno}] {os.strerror(seen.errno)}"
        seen = seen.__cause__ or seen.__context__
    return _said(exc)


def _connect_detail(exc: Any) -> str:
    """aiohttp's connect failure without the address, as httpx words it: the OS error, TLS or DNS reason."""
    import aiohttp

    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return str(exc.certificate_error)
    cause = exc.os_error
    if isinstance(cause, (socket.gaierror, ssl.SSLError)):
        return str(cause)
    if cause.errno and cause.errno > 0:
        return _os_detail(cause)
    return type(cause).__name__


def _response_detail(exc: Any) -> str:
    lines = str(exc.message).strip().splitlines()
    return lines[0] if lines else "bad response"


_tables: dict[bool, tuple[Row, ...]] = {}


def table() -> tuple[Row, ...]:
    """Every row, most specific first: httpx's, and aiohttp's once it is loaded (it is only for direct async
    requests, so a sync program never imports it for this)."""
    with_aiohttp = "aiohttp" in sys.modules
    rows = _tables.get(with_aiohttp)
    if rows is None:
        rows = _tables[with_aiohttp] = tuple(_httpx_rows() + (_aiohttp_rows() if with_aiohttp else []))
    return rows


def transport_error(
    exc: BaseException, *, provider: str, url: str, proxy: ProxyConfig | None, trust_env: bool = False
) -> APIError:
    """The polychat error for a transport's exception, naming the target and the proxy in effect (the
    environment's too, when ``trust_env`` let it apply), never a secret. ``exc`` becomes its cause."""
    where = f"{redact_url(url)}{proxy_hint(proxy, url, trust_env=trust_env)}"
    row = next((r for r in table() if isinstance(exc, r.raised)), Row(BaseException, OTHER))
    failure = row.failure
    err = failure.error(
        failure.message.format(where=where, detail=row.detail(exc), kind=type(exc).__name__), provider=provider
    )
    err.__cause__ = exc
    return err


def proxy_hint(proxy: ProxyConfig | None, url: str, *, trust_env: bool = False) -> str:
    """`` via proxy http://host:port`` (password hidden) when a proxy carries ``url``, else ``""``."""
    if proxy is None:
        return _env_proxy_hint(url) if trust_env else ""
    if proxy.direct:
        return ""
    scheme = "https" if url.startswith("https:") else "http"
    purl = proxy.url_for(scheme)
    return f" via proxy {redact_url(purl)}" if purl else ""


def _env_proxy_hint(url: str) -> str:
    """The environment's proxy for ``url`` (``HTTPS_PROXY`` and friends, minus ``NO_PROXY``), as httpx picks it."""
    import urllib.request
    from urllib.parse import urlsplit

    scheme = "https" if url.startswith("https:") else "http"
    found = urllib.request.getproxies_environment()
    purl = found.get(scheme) or found.get("all")
    bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]  # public, not in typeshed
    if not purl or bypass(urlsplit(url).hostname or ""):
        return ""
    var = next(
        (v for v in (f"{scheme}_proxy", "all_proxy") for v in (v, v.upper()) if os.environ.get(v) == purl),
        f"{scheme.upper()}_PROXY",
    )
    return f" via proxy {redact_url(purl)} (from {var})"
