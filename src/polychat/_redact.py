"""The one redaction helper: every URL or secret shown in a repr, log line or error goes through here."""

from __future__ import annotations

import base64
import logging
import re
from urllib.parse import unquote, urlsplit, urlunsplit

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
    return urlunsplit((parts.scheme, netloc, parts.path, redact_query(parts.query), parts.fragment))


_QUERY_SECRET = re.compile(r"((?:^|[?&])(?:key|api[_-]?key|token|access_token)=)[^&#\s\"]*", re.I)


def redact_query(text: str) -> str:
    """Values of key-like query parameters (``key=``, ``api_key=``, ``token=``...) hidden, in a query string or in a
    line containing URLs (an access log line)."""
    return _QUERY_SECRET.sub(rf"\1{_MASK}", text)


def redact_text(text: str, secrets: list[str] | tuple[str, ...]) -> str:
    """Replace each known secret (of four characters or more) appearing in ``text``."""
    for s in secrets:
        if s and len(s) >= 4:
            text = text.replace(s, _MASK)
    return text


def split_credentials(url: str) -> tuple[str, str | None]:
    """``url`` without its ``user:password@`` part, and that part as an HTTP Basic ``Authorization`` value.

    Credentials never stay in a URL that is shown, logged (httpx's request line) or used as a key; they travel as
    the header, the same on the sync and async transports.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return url, None
    if "@" not in parts.netloc:
        return url, None
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    token = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode("ascii")
    return urlunsplit((parts.scheme, hostport, parts.path, parts.query, parts.fragment)), f"Basic {token}"


class _SocksAuthFilter(logging.Filter):
    """httpcore logs its SOCKS handshake at DEBUG with the credentials as bytes (``auth=(b'user', b'pass')``, sync
    and async alike); they are cut from the record before any handler sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.msg
        if isinstance(msg, str) and " auth=(" in msg:
            record.msg = msg[: msg.index(" auth=(")] + f" auth={_MASK}"
        return True


def guard_library_logs() -> None:
    """Scrub secrets at the source, for every program using polychat (not only the gateway): a filter on the
    loggers of the libraries underneath that would log credentials. Idempotent."""
    socks = logging.getLogger("httpcore.socks")
    if not any(isinstance(f, _SocksAuthFilter) for f in socks.filters):
        socks.addFilter(_SocksAuthFilter())
