"""No DNS query for ``.invalid`` names leaves the machine: they fail "no such host" at once, locally.

Failover scenarios point a provider at a ``.invalid`` host (RFC 6761: it never resolves). Left to the system
resolver that lookup would still travel to the configured name server, off this machine. Here
``socket.getaddrinfo`` answers such names with the ``socket.gaierror`` a real NXDOMAIN gives, before anything is
sent; other names resolve as usual. Put this directory first on ``PYTHONPATH`` and every Python process (a
gateway, a contender) loads it as its ``sitecustomize``; tests call :func:`install` (idempotent). ``nodns.cjs`` is
the same for node (``NODE_OPTIONS=--require .../nodns.cjs``).
"""

import socket
from typing import Any

_real_getaddrinfo = socket.getaddrinfo


def _getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    name = host.decode() if isinstance(host, bytes) else host
    if isinstance(name, str) and name.rstrip(".").lower().endswith(".invalid"):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    return _real_getaddrinfo(host, *args, **kwargs)


def install() -> None:
    socket.getaddrinfo = _getaddrinfo


install()
