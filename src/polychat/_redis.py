"""Redis settings and clients for the state polychat shares between processes (circuit breakers, gateway limits).

One place decides how polychat talks to Redis: short timeouts (a stalled Redis must cost a request a fraction of
a second, not hang it), no retries inside redis-py (the callers decide what an outage means), which URLs are
accepted, and a clear message when the optional ``redis`` package is missing. redis-py serves the breakers and
``polychat keys usage``; the gateway's per-request limit scripts use the leaner
:mod:`polychat.server._resp` with the same URL rules and timeout. Both import ``redis`` only when a URL is given.
"""

from __future__ import annotations

import os
from typing import Any

from ._redact import redact_url
from .errors import ConfigError

#: Environment variable with the Redis URL (``polychat serve`` also takes ``--redis-url`` and ``[server] redis_url``).
REDIS_URL_ENV = "POLYCHAT_REDIS_URL"
#: Seconds a Redis command (or connecting) may take before the store counts as unreachable: long enough for a
#: loaded machine's scheduling stalls, short enough that an outage costs a request about two seconds at most.
REDIS_TIMEOUT = 1.0

_SCHEMES = ("redis://", "rediss://", "unix://")


def check_url(url: str) -> str:
    """``url`` if it is a Redis URL; a ConfigError naming the problem (password hidden) otherwise."""
    if not url.startswith(_SCHEMES):
        raise ConfigError(f"Redis URL {redact_url(url)!r} must start with redis://, rediss:// or unix://")
    return url


def _options(retry: Any) -> dict[str, Any]:
    # One immediate retry: a pooled connection may be stale after Redis restarted. redis-py's default (10 retries
    # with backoff) would hold a request for seconds while Redis is down.
    from redis.backoff import NoBackoff

    return {
        "socket_timeout": REDIS_TIMEOUT,
        "socket_connect_timeout": REDIS_TIMEOUT,
        "retry": retry(NoBackoff(), 1),
    }


def missing_package() -> ConfigError:
    return ConfigError("sharing state through Redis needs the redis package: pip install 'polychat[redis]'")


def sync_client(url: str) -> Any:
    """A ``redis.Redis`` for ``url`` (connects on first use)."""
    try:
        import redis
    except ImportError:
        raise missing_package() from None
    from redis.retry import Retry

    return redis.Redis.from_url(check_url(url), **_options(Retry))


def url_from_env() -> str | None:
    return os.environ.get(REDIS_URL_ENV) or None
