"""Proxy settings: parsed and checked once, when given, then turned into httpx transports.

Accepted forms (the same for ``Client(proxies=...)``, ``OpenaiChat(proxy=...)``, per-call ``proxy=`` and the CLI):

* ``None`` — not set here: fall back to the next level (call → provider → client → environment variables);
* a URL string — every request goes through it;
* a dict like the ``requests`` package's: ``{'http': URL, 'https': URL, 'all': URL, 'no_proxy': 'host1,host2'}``
  — plain-HTTP upstreams use ``http``, TLS upstreams ``https``, ``all`` covers what the others do not;
  any other key is an error;
* ``False`` or ``{}`` — a direct connection, even when ``HTTP_PROXY`` and friends are set.

Schemes: http, https, socks5, socks5h (SOCKS through ``socksio``). Credentials may be in the URL,
percent-encoded as needed; they never appear in ``repr`` or errors.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import msgspec

from ._redact import redact_url
from .errors import ConfigError

SCHEMES = ("http", "https", "socks5", "socks5h")
DICT_KEYS = ("http", "https", "all", "no_proxy")


def _check_url(url: Any, where: str) -> str:
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(f"{where}: a proxy must be a URL string such as 'http://host:3128', got {type(url).__name__}")
    url = url.strip()
    url = str(url)
    if "://" not in url:
        raise ConfigError(f"{where}: proxy URL {redact_url(url)!r} has no scheme; use one of {', '.join(SCHEMES)}")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise ConfigError(f"{where}: proxy URL {redact_url(url)!r} is not valid: {e}") from None
    if parts.scheme.lower() not in SCHEMES:
        raise ConfigError(
            f"{where}: proxy scheme {parts.scheme!r} in {redact_url(url)!r} is not supported; "
            f"use one of {', '.join(SCHEMES)}"
        )
    if not parts.hostname:
        raise ConfigError(f"{where}: proxy URL {redact_url(url)!r} has no host")
    del port
    return str(url)


class ProxyConfig(msgspec.Struct, frozen=True):
    """A checked proxy setting. ``direct`` means "no proxy at all"; otherwise ``routes`` maps http/https/all."""

    routes: tuple[tuple[str, str], ...] = ()
    no_proxy: tuple[str, ...] = ()
    direct: bool = False
    # A stable key for pooling connections; the URLs inside are never shown.
    key: tuple[Any, ...] = ()

    def __repr__(self) -> str:
        if self.direct:
            return "ProxyConfig(direct)"
        shown = ", ".join(f"{k}={redact_url(u)}" for k, u in self.routes)
        extra = f", no_proxy={','.join(self.no_proxy)}" if self.no_proxy else ""
        return f"ProxyConfig({shown}{extra})"

    def describe(self) -> str:
        return "direct" if self.direct else repr(self)[len("ProxyConfig(") : -1]

    def url_for(self, scheme: str) -> str | None:
        routes = dict(self.routes)
        return routes.get(scheme) or routes.get("all")


def parse_proxy(value: Any, where: str = "proxies") -> ProxyConfig | None:
    """Check a proxy setting; ``None`` means "not set at this level"."""
    if value is None:
        return None
    if value is False:
        return ProxyConfig(direct=True, key=("direct",))
    if isinstance(value, ProxyConfig):
        return value
    if isinstance(value, str):
        url = _check_url(value, where)
        return ProxyConfig(routes=(("all", url),), key=(("all", url),))
    if isinstance(value, Mapping):
        unknown = [k for k in value if k not in DICT_KEYS]
        if unknown:
            raise ConfigError(
                f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; "
                f"a proxies dict takes {', '.join(map(repr, DICT_KEYS))}"
            )
        routes = tuple(
            (k, _check_url(value[k], f"{where}[{k!r}]")) for k in ("http", "https", "all") if value.get(k) is not None
        )
        raw_np = value.get("no_proxy") or ()
        if isinstance(raw_np, str):
            raw_np = raw_np.split(",")
        if not isinstance(raw_np, (list, tuple)) or not all(isinstance(h, str) for h in raw_np):
            raise ConfigError(f"{where}['no_proxy']: must be a comma-separated string or a list of host names")
        no_proxy = tuple(h.strip() for h in raw_np if h.strip())
        if not routes:
            return ProxyConfig(direct=True, no_proxy=no_proxy, key=("direct",))
        return ProxyConfig(routes=routes, no_proxy=no_proxy, key=(routes, no_proxy))
    raise ConfigError(
        f"{where}: expected a proxy URL, a dict like {{'http': URL, 'https': URL}}, False or None; "
        f"got {type(value).__name__}"
    )


def _no_proxy_patterns(host: str) -> list[str]:
    host = host.strip()
    if host == "*":
        return ["all://"]
    if "://" in host:
        return [host]
    host = host.lstrip(".")
    if host.startswith("*"):
        return [f"all://{host}"]
    # A bare host name covers its sub-domains too, as NO_PROXY does.
    return [f"all://{host}", f"all://*.{host}"] if not host.replace(".", "").isdigit() else [f"all://{host}"]


def build_mounts(cfg: ProxyConfig, make_transport: Any) -> dict[str, Any]:
    """httpx ``mounts`` for ``cfg``; ``make_transport(proxy_url_or_None)`` builds one transport.

    Every scheme gets an explicit mount, so environment proxy variables never mix into an explicit setting.
    """
    by_url: dict[str | None, Any] = {}

    def transport(url: str | None) -> Any:
        if url not in by_url:
            by_url[url] = make_transport(url)
        return by_url[url]

    mounts: dict[str, Any] = {
        "http://": transport(cfg.url_for("http")),
        "https://": transport(cfg.url_for("https")),
    }
    for host in cfg.no_proxy:
        for pattern in _no_proxy_patterns(host):
            mounts[pattern] = transport(None)
    return mounts
