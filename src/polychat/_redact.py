"""The one redaction helper: every URL or secret shown in a repr, log line or error goes through here."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

_MASK = "***"


def mask_secret(secret: str | None) -> str:
    """A stand-in for an API key that says whether one is set without showing any of it."""
    return _MASK if secret else "None"


def redact_url(url: str) -> str:
    """``scheme://user:***@host:port/path`` — the password (and any ``key=`` query value) hidden."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return re.sub(r"//([^:/@]*):[^@/]*@", rf"//\1:{_MASK}@", url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{_MASK}@{hostport}" if ":" in userinfo else f"{user}@{hostport}"
    query = re.sub(r"((?:^|&)(?:key|api[_-]?key|token|access_token)=)[^&]*", rf"\1{_MASK}", parts.query, flags=re.I)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str, secrets: list[str] | tuple[str, ...]) -> str:
    """Replace each known secret (of four characters or more) appearing in ``text``."""
    for s in secrets:
        if s and len(s) >= 4:
            text = text.replace(s, _MASK)
    return text
