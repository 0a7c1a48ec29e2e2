"""Connection limits uvicorn does not have: a connection cap, a deadline for request headers, a header size limit.

Without them an unauthenticated client can starve the gateway before any API key is checked: a thousand idle
sockets use up the file descriptors (authorised clients then cannot even be accepted), a slow drip of header
bytes holds a connection forever, and one huge header is buffered and parsed whole. uvicorn's ``limit_concurrency``
does not help (it answers 503 only after the headers arrived); its keep-alive timeout only runs between requests.

So the HTTP protocol uvicorn uses (httptools when installed, else h11) is wrapped once, for any worker
(:class:`polychat.server._protocol.GuardedHTTPProtocol`, imported by uvicorn by name):

* **header deadline** (``header_timeout``): from the moment a connection opens, or its previous response ended,
  the request's headers must be complete within this many seconds, else ``408`` and close. An idle keep-alive
  connection is one waiting for headers, so it ends the same way;
* **header size** (``max_header_bytes``): more header bytes than this without the blank line that ends them:
  ``431`` and close, before the parser buffers more;
* **connection cap** (``max_connections``): when one more connection would exceed it, the connection that has
  waited longest for its headers is closed to make room (an idle or slow client loses its place, a client that is
  sending a request does not); when every connection is busy with a request, the new one is closed at once.
  :func:`fit_file_limit` makes sure the process may open that many sockets (with room for upstream connections).

The limits are counted in :class:`polychat.server._metrics` as rejections (``header_timeout``, ``header_too_large``,
``connection_cap``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from ._settings import DEFAULT_HEADER_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_HEADER_BYTES

log = logging.getLogger("polychat.server")

#: File descriptors kept free for upstream connections, log files and the embedded model.
_FD_RESERVE = 256


@dataclass(frozen=True)
class Limits:
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES


#: The limits of this process: set by :func:`configure` when the app is created (in each worker).
_limits = Limits()
#: Called with a rejection reason (the gateway's metrics); set by :func:`configure`.
_on_reject: Callable[[str], None] | None = None


def configure(limits: Limits, on_reject: Callable[[str], None] | None = None) -> None:
    global _limits, _on_reject
    _limits, _on_reject = limits, on_reject


def current() -> Limits:
    return _limits


def rejected(reason: str) -> None:
    """Count a connection the limits closed."""
    if _on_reject is not None:
        _on_reject(reason)


def fit_file_limit(max_connections: int) -> int:
    """Raise the soft file limit so ``max_connections`` sockets fit; the cap that fits when the hard limit is lower."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return max_connections
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max_connections + _FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            soft = new
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < want:
        fitted = max(16, soft - _FD_RESERVE)
        log.warning(
            "polychat: the open-file limit is %d, so at most %d connections are kept (not %d); raise it with ulimit -n",
            soft,
            fitted,
            max_connections,
        )
        return fitted
    return max_connections
