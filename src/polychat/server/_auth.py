"""Gateway API keys: ``Authorization: Bearer KEY``, compared in constant time.

Keys are kept only as SHA-256 digests; a presented key is hashed and compared with every configured digest using
:func:`hmac.compare_digest`, without stopping at the first match, so timing says nothing about how close a guess
was or which key matched. The client's key is never forwarded upstream: upstream keys come from the config.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable


class KeyRing:
    """The accepted keys. Empty: authentication is off."""

    __slots__ = ("_digests",)

    def __init__(self, keys: Iterable[str]) -> None:
        self._digests = [hashlib.sha256(k.encode()).digest() for k in dict.fromkeys(keys) if k]

    def __bool__(self) -> bool:
        return bool(self._digests)

    def check(self, authorization: bytes | None) -> bool:
        """Whether an ``Authorization`` header value carries an accepted key (always True when auth is off)."""
        if not self._digests:
            return True
        if not authorization:
            return False
        scheme, _, token = authorization.partition(b" ")
        if scheme.lower() != b"bearer":
            return False
        digest = hashlib.sha256(token.strip()).digest()
        ok = False
        for d in self._digests:
            ok |= hmac.compare_digest(digest, d)
        return ok
