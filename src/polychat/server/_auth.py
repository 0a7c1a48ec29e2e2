"""Gateway API keys: ``Authorization: Bearer KEY``, compared in constant time.

Keys are kept only as SHA-256 digests; a presented key is hashed and compared with every configured digest using
:func:`hmac.compare_digest`, without stopping at the first match, so timing says nothing about how close a guess
was or which key matched. The client's key is never forwarded upstream: upstream keys come from the config.

Named keys (``[server.keys.NAME]``) are accepted keys that also carry their limits: :meth:`KeyRing.match` says
which one a request presented.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from typing import Any

#: What :meth:`KeyRing.match` returns for a key that is not accepted.
DENIED: Any = object()


class KeyRing:
    """The accepted keys: plain ones, and named ones (token → what :meth:`match` returns for it). Empty:
    authentication is off."""

    __slots__ = ("_digests", "_names")

    def __init__(self, keys: Iterable[str], named: Mapping[str, Any] | None = None) -> None:
        entries: dict[str, Any] = dict.fromkeys((k for k in keys if k), None)
        entries.update((token, value) for token, value in (named or {}).items() if token)
        self._digests = [hashlib.sha256(k.encode()).digest() for k in entries]
        self._names = list(entries.values())

    def __bool__(self) -> bool:
        return bool(self._digests)

    def check(self, authorization: bytes | None) -> bool:
        """Whether an ``Authorization`` header value carries an accepted key (always True when auth is off)."""
        return self.match(authorization) is not DENIED

    def match(self, authorization: bytes | None) -> Any:
        """The value of the named key presented, None for a plain key (or when auth is off), :data:`DENIED` for
        anything else. Every digest is compared, whatever matched."""
        if not self._digests:
            return None
        if not authorization:
            return DENIED
        scheme, _, token = authorization.partition(b" ")
        if scheme.lower() != b"bearer":
            return DENIED
        digest = hashlib.sha256(token.strip()).digest()
        found = -1
        for i, d in enumerate(self._digests):
            if hmac.compare_digest(digest, d):
                found = i
        return DENIED if found < 0 else self._names[found]
