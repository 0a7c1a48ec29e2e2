"""polychat exceptions → HTTP status and OpenAI's error body ``{"error": {"message", "type", "param", "code"}}``.

The statuses are chosen so that the official ``openai`` client raises the class a caller would expect:

==========================================  ======  ================================================================
polychat error                              status  why
==========================================  ======  ================================================================
InvalidRequestError                         400     the request is wrong (the library's own validation)
APIStatusError 400/404/409/422/429/5xx       same    the upstream's verdict passes through (429 keeps Retry-After)
APIStatusError 401/403                      502     the *gateway's* upstream credentials failed: not the caller's
                                                    key, so not an AuthenticationError on the caller's side
APITimeoutError                             504     no answer in time
APIConnectionError, EmptyResponseError      502     no usable answer
AllProvidersFailedError                     502     (429 when every attempt was rate limited; 504 when every one
                                                    timed out), the attempts summarised in the message
ConfigError                                 500     the server's configuration is at fault
anything else                               500     logged on the server; the client gets no internals
==========================================  ======  ================================================================

Messages shown to clients never carry secrets: every configured key and proxy password is replaced, and URLs are
cut out entirely (upstream addresses are the operator's business).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import msgspec

from .._redact import redact_text
from ..errors import (
    AllProvidersFailedError,
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    ConfigError,
    InvalidRequestError,
    RateLimitError,
    UnsupportedParameterError,
)

_URL_RE = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>)\]]+")

_DEFAULT_TYPE = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    421: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


class Scrubber:
    """Removes secrets and URLs from text meant for clients (and secrets from log lines)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = tuple(s for s in dict.fromkeys(secrets) if s and len(s) >= 4)

    def logs(self, text: str) -> str:
        return redact_text(text, self.secrets) if self.secrets else text

    def client(self, text: str) -> str:
        return _URL_RE.sub("<upstream>", self.logs(text))


class HTTPError:
    """An error answer: ``status``, the JSON ``body`` and extra ``headers``."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        self.status = status
        self.body = body
        self.headers = headers or []


def error_payload(
    message: str, status: int, *, type: str | None = None, param: Any = None, code: Any = None
) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": type or _DEFAULT_TYPE.get(status, "server_error"),
            "param": param,
            "code": code,
        }
    }


def make_error(
    status: int,
    message: str,
    *,
    type: str | None = None,
    param: Any = None,
    code: Any = None,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> HTTPError:
    body = msgspec.json.encode(error_payload(message, status, type=type, param=param, code=code))
    return HTTPError(status, body, headers)


def _with_provider(message: str, provider: str | None) -> str:
    return f"{message} (provider: {provider})" if provider and f"provider: {provider}" not in message else message


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _retry_after_header(seconds: float | None) -> list[tuple[bytes, bytes]]:
    if seconds is None or seconds < 0:
        return []
    return [(b"retry-after", str(max(1, round(seconds))).encode())]


def from_exception(exc: BaseException, scrub: Scrubber) -> HTTPError:
    """The HTTP answer for an exception raised before any response byte was sent."""
    if isinstance(exc, UnsupportedParameterError):
        # Not the library's advice (drop_unsupported=True is a switch this gateway refuses): the HTTP client's.
        message = (
            f"{exc.detail.rstrip('.')}. Remove '{exc.param}' from the request, or choose a model whose provider "
            "supports it."
        )
        return make_error(400, scrub.client(message), param=exc.param, code="unsupported_parameter")
    if isinstance(exc, InvalidRequestError):
        return make_error(400, scrub.client(exc.message), param=exc.param)
    if isinstance(exc, AllProvidersFailedError):
        return _all_failed(exc, scrub.client(exc.message))
    if isinstance(exc, APIStatusError):
        return _upstream_status(exc, scrub.client(_with_provider(exc.message, exc.provider)))
    if isinstance(exc, APITimeoutError):
        return make_error(
            504, scrub.client(_with_provider(exc.message, exc.provider)), type="upstream_error", code="upstream_timeout"
        )
    if isinstance(exc, (APIConnectionError, APIError)):
        return make_error(
            502, scrub.client(_with_provider(exc.message, exc.provider)), type="upstream_error", code="upstream_error"
        )
    if isinstance(exc, ConfigError):
        return make_error(500, f"The gateway is misconfigured: {scrub.client(str(exc))}", code="config_error")
    return make_error(500, "The gateway had an error while processing your request.", code="internal_error")


def _all_failed(exc: AllProvidersFailedError, message: str) -> HTTPError:
    """A failover that ran out of providers: 429 when every attempt was rate-limited (with the shortest
    Retry-After), 504 when every one timed out, else 502."""
    failures = [a.error for a in exc.attempts if a.error is not None]
    if failures and all(isinstance(e, RateLimitError) for e in failures):
        waits = [e.retry_after for e in failures if isinstance(e, RateLimitError) and e.retry_after]
        return make_error(
            429, message, code="rate_limit_exceeded", headers=_retry_after_header(min(waits) if waits else None)
        )
    if failures and all(isinstance(e, APITimeoutError) for e in failures):
        return make_error(504, message, type="upstream_error", code="upstream_timeout")
    return make_error(502, message, type="upstream_error", code="all_providers_failed")


def _upstream_status(exc: APIStatusError, message: str) -> HTTPError:
    """An upstream's error status passed on, but for its refusal of the gateway's own credentials (a 502: the
    client's key is not the problem) and statuses that are not errors (502)."""
    status = exc.status_code
    if status in (401, 403):
        return make_error(
            502,
            f"The upstream provider refused the gateway's credentials ({status}): {message}",
            type="upstream_error",
            code="upstream_authentication_error",
        )
    if not 400 <= status <= 599:
        status = 502
    headers = _retry_after_header(exc.retry_after) if status == 429 else []
    return make_error(
        status,
        message,
        type=_str_or_none(exc.type),
        param=_str_or_none(exc.param),
        code=exc.code if isinstance(exc.code, (str, int)) else None,
        headers=headers,
    )


def stream_error_frame(exc: BaseException, scrub: Scrubber) -> bytes:
    """The ``data: {"error": ...}`` event for a stream that fails after it started (same body as the HTTP answer)."""
    err = from_exception(exc, scrub)
    return b"data: " + err.body + b"\n\n"
