"""The exception tree, in one place.

Names follow the official ``openai`` package so that ``except`` clauses carry over::

    PolychatError
    ├── InvalidRequestError (also ValueError)   bad input, raised before anything is sent
    ├── ConfigError (also ValueError)           a bad proxy, provider or config setting
    │   ├── ConfigFileError                     a config file problem (``.path``, ``.line``, ``.key``)
    │   └── PluginError                         a provider plugin is installed but cannot be used
    └── APIError                                something went wrong talking to a provider
        ├── APIStatusError                      the provider answered with an error status or error frame
        │   ├── BadRequestError                 400
        │   │   └── UnsupportedParameterError   a provider can't honour a parameter (also InvalidRequestError)
        │   ├── AuthenticationError             401
        │   ├── PermissionDeniedError           403
        │   ├── NotFoundError                   404
        │   ├── ConflictError                   409
        │   ├── UnprocessableEntityError        422
        │   ├── RateLimitError                  429
        │   └── InternalServerError             >= 500
        ├── APIConnectionError                  no usable answer: refused, reset, proxy failure, bad stream
        │   └── APITimeoutError                 a timeout fired
        ├── MissingAPIKeyError                  the provider needs a key and has none; nothing was sent
        ├── EmptyResponseError                  a 200 answer with no content (failover treats it as a failure)
        ├── StreamInterruptedError              a stream failed after content was yielded (``.partial``)
        └── AllProvidersFailedError             every provider of a chain failed (``.attempts``)

:func:`status_error` maps an HTTP status and error body to the right class; it is the only place that does.
:func:`error_frame` does the same for an ``{"error": ...}`` object inside a 200 answer or stream.
Messages never contain secrets: URLs pass through :func:`polychat._redact.redact_url` before they are shown.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AllProvidersFailedError",
    "Attempt",
    "AuthenticationError",
    "BadRequestError",
    "ConfigError",
    "ConfigFileError",
    "ConflictError",
    "EmptyResponseError",
    "InternalServerError",
    "InvalidRequestError",
    "MissingAPIKeyError",
    "NotFoundError",
    "PermissionDeniedError",
    "PluginError",
    "PolychatError",
    "RateLimitError",
    "StreamInterruptedError",
    "UnprocessableEntityError",
    "UnsupportedParameterError",
    "error_frame",
    "status_error",
]


class PolychatError(Exception):
    """Root of every exception polychat raises on purpose."""


class InvalidRequestError(PolychatError, ValueError):
    """The call's arguments are wrong; nothing was sent. ``.param`` names the offending field."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class ConfigError(PolychatError, ValueError):
    """A client, provider, proxy or config-file setting is wrong; raised when it is given, not at first use."""


class ConfigFileError(ConfigError):
    """A config file problem; ``path``, ``line`` (1-based, or None when it could not be found) and ``key``
    (dotted, e.g. ``providers.work.base_url``) say where."""

    def __init__(self, message: str, *, path: str | None, line: int | None = None, key: str | None = None) -> None:
        where = path or "<config>"
        if line is not None:
            where += f":{line}"
        super().__init__(f"{where}: {key + ': ' if key else ''}{message}")
        self.path = path
        self.line = line
        self.key = key


class PluginError(ConfigError):
    """A provider plugin is installed but cannot be used (import failure, or not a Provider class)."""


class APIError(PolychatError):
    """A provider could not give an answer.

    Attributes: ``message``, ``provider`` (name of the provider, or None), ``body`` (the decoded error body,
    or None), ``code``, ``param`` and ``type`` from an OpenAI-style error body when there is one, and
    ``attempts``: every try a failover chain made before raising this error (empty when no chain was involved).
    """

    #: Whether trying again (on this provider, after a pause) may succeed. Refined per class and per instance.
    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        body: object | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.body = body
        self.attempts: list[Attempt] = []
        err = body.get("error") if isinstance(body, Mapping) else None
        if not isinstance(err, Mapping):
            err = body if isinstance(body, Mapping) else {}
        self.code: Any = err.get("code")
        self.param: Any = err.get("param")
        self.type: Any = err.get("type")
        if retryable is not None:
            self.retryable = retryable

    def __str__(self) -> str:
        if self.provider:
            return f"{self.message} (provider: {self.provider})"
        return self.message


class APIStatusError(APIError):
    """The provider answered with an error: an HTTP status >= 400, or an error frame in a 200 stream.

    ``status_code``, ``headers`` (response headers, a plain dict with lower-case names), ``request_id``
    (``x-request-id`` or the like) and ``retry_after`` (seconds the provider asked us to wait, or None).
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        provider: str | None = None,
        body: object | None = None,
        headers: Mapping[str, str] | None = None,
        retry_after: float | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message, provider=provider, body=body, retryable=retryable)
        self.status_code = status_code
        self.headers: dict[str, str] = dict(headers or {})
        self.request_id: str | None = (
            self.headers.get("x-request-id") or self.headers.get("request-id") or self.headers.get("cf-ray")
        )
        self.retry_after = retry_after

    def __str__(self) -> str:
        base = f"Error code: {self.status_code} - {self.message}"
        if self.provider:
            base += f" (provider: {self.provider})"
        return base


class BadRequestError(APIStatusError):
    """400: the provider rejected the request."""


class UnsupportedParameterError(InvalidRequestError, BadRequestError):
    """A provider cannot honour a parameter (or a message part, or an empty model); raised before anything is sent.

    It is an :class:`InvalidRequestError` (a ``ValueError`` naming ``param``) for direct callers, and a
    ``BadRequestError`` (400, not retryable) for failover chains, which try the next provider as they would after
    a 400 — another provider may accept the request.
    """

    def __init__(self, message: str, *, param: str, provider: str, detail: str | None = None) -> None:
        BadRequestError.__init__(self, message, status_code=400, provider=provider, retryable=False)
        self.param = param
        #: What cannot be honoured, without the advice for Python callers (``drop_unsupported=True``): the
        #: gateway, whose clients cannot pass that switch, words its own advice around it.
        self.detail = detail or message

    def __str__(self) -> str:
        return self.message


class AuthenticationError(APIStatusError):
    """401: missing or wrong API key."""


class PermissionDeniedError(APIStatusError):
    """403: the key may not do this."""


class NotFoundError(APIStatusError):
    """404: unknown model or endpoint."""


class ConflictError(APIStatusError):
    """409."""

    retryable = True


class UnprocessableEntityError(APIStatusError):
    """422."""


class RateLimitError(APIStatusError):
    """429: slow down; ``retry_after`` says for how long when the provider told us."""

    retryable = True


class InternalServerError(APIStatusError):
    """>= 500 (including 529 overloaded): the provider failed."""

    retryable = True


class APIConnectionError(APIError):
    """No usable answer came back: connection refused or reset, DNS, proxy failure, malformed or cut stream."""

    retryable = True

    def __init__(
        self,
        message: str = "Connection error.",
        *,
        provider: str | None = None,
        body: object | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message, provider=provider, body=body, retryable=retryable)


class APITimeoutError(APIConnectionError):
    """A timeout fired: connect, read, first token, idle between chunks, or the overall deadline."""

    def __init__(self, message: str = "Request timed out.", *, provider: str | None = None) -> None:
        super().__init__(message, provider=provider)


class MissingAPIKeyError(APIError):
    """The provider needs an API key and none was given; nothing was sent."""


class EmptyResponseError(APIError):
    """The provider answered 200 with no content and no tool calls (``allow_empty=True`` accepts that)."""


class StreamInterruptedError(APIError):
    """A stream failed after content had been yielded to the caller.

    polychat never splices or repeats text silently: the caller gets ``partial`` (the text yielded so far),
    ``provider`` and ``cause`` (the underlying error, also ``__cause__``).
    """

    def __init__(self, message: str, *, partial: str, provider: str | None, cause: BaseException) -> None:
        super().__init__(message, provider=provider, retryable=False)
        self.partial = partial
        self.cause = cause


class Attempt(msgspec.Struct, frozen=True):
    """One try of one provider, as recorded by a failover chain.

    ``kind``: "attempt", "hedge" (raced against a slow provider) or "resume" (continuing an interrupted stream).
    ``outcome``: "ok" (it answered), "failed" (``error`` says why), "lost" (a hedge race the other side won; it was
    cancelled) or "closed" (the caller stopped the call while it ran). ``ttft``: seconds to its first content
    chunk (streams).
    """

    provider: str
    model: str
    error: BaseException | None
    status_code: int | None
    retryable: bool
    elapsed: float
    kind: str = "attempt"
    outcome: str = ""
    ttft: float | None = None

    def __post_init__(self) -> None:
        if not self.outcome:
            msgspec.structs.force_setattr(self, "outcome", "ok" if self.error is None else "failed")

    @property
    def error_class(self) -> str:
        if self.error is not None:
            return type(self.error).__name__
        return "ok" if self.outcome == "ok" else self.outcome

    def describe(self) -> str:
        if self.error is None:
            what = {"ok": "answered", "lost": "lost the hedge race", "closed": "closed by the caller"}
            first = f", first token after {self.ttft * 1000:.0f} ms" if self.ttft is not None else ""
            return (
                f"{self.provider} (model {self.model!r}): {what.get(self.outcome, self.outcome)}"
                f"{' (' + self.kind + ')' if self.kind != 'attempt' else ''} after {self.elapsed * 1000:.0f} ms{first}"
            )
        status = f" {self.status_code}" if self.status_code is not None else ""
        msg = getattr(self.error, "message", None) or str(self.error)
        kind = "retryable" if self.retryable else "not retryable"
        return (
            f"{self.provider} (model {self.model!r}): {self.error_class}{status}, {kind}, "
            f"after {self.elapsed * 1000:.0f} ms: {msg}"
        )


class AllProvidersFailedError(APIError):
    """Every provider of a failover chain failed; ``attempts`` lists each try in order."""

    def __init__(self, attempts: Sequence[Attempt]) -> None:
        lines = "\n".join(f"  {i}. {a.describe()}" for i, a in enumerate(attempts, 1))
        n = len(attempts)
        super().__init__(f"All providers failed ({n} attempt{'s' if n != 1 else ''}):\n{lines}", retryable=False)
        self.attempts = list(attempts)


_STATUS_CLASSES: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}


def error_class_for_status(status: int) -> type[APIStatusError]:
    if status >= 500:
        return InternalServerError
    return _STATUS_CLASSES.get(status, APIStatusError)


def _message_from_body(body: object, fallback: str) -> str:
    if isinstance(body, Mapping):
        err = body.get("error", body)
        if isinstance(err, Mapping):
            msg = err.get("message") or err.get("detail") or err.get("msg")
            if msg:
                return str(msg)
            return json.dumps(err)[:500]
        if isinstance(err, str) and err:
            return err
        if body.get("message"):
            return str(body["message"])
    if isinstance(body, str) and body.strip():
        return body.strip()[:500]
    return fallback


def status_error(
    status: int,
    body: object,
    *,
    headers: Mapping[str, str] | None = None,
    provider: str | None = None,
    retry_after: float | None = None,
) -> APIStatusError:
    """Build the exception for an HTTP error status (or an in-stream error frame given a status).

    ``body`` is the decoded JSON error body (or raw text). ``x-should-retry`` in ``headers``, when present,
    overrides whether the error is retryable, as the official clients do.
    """
    cls = error_class_for_status(status)
    hdrs = {k.lower(): v for k, v in (headers or {}).items()}
    retryable: bool | None = None
    should = hdrs.get("x-should-retry")
    if should == "true":
        retryable = True
    elif should == "false":
        retryable = False
    elif cls is APIStatusError:
        retryable = status == 408
    message = _message_from_body(body, f"HTTP {status}")
    return cls(
        message,
        status_code=status,
        provider=provider,
        body=body,
        headers=hdrs,
        retry_after=retry_after,
        retryable=retryable,
    )


# In-stream error frames carry no HTTP status; infer one from the error's type or code.
_ERROR_TYPE_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "rate_limit_error": 429,
    "rate_limit_exceeded": 429,
    "insufficient_quota": 429,
    "overloaded_error": 529,
    "server_error": 500,
    "api_error": 500,
}


def error_frame(payload: Any, provider: str) -> APIStatusError:
    """The exception for an ``{"error": ...}`` object found inside a 200 response or stream."""
    err = payload.get("error") if isinstance(payload, dict) else None
    status = 500
    if isinstance(err, dict):
        code = err.get("code")
        if isinstance(code, int) and 400 <= code < 600:
            status = code
        elif isinstance(code, str) and code.isdigit() and 400 <= int(code) < 600:
            status = int(code)
        else:
            status = _ERROR_TYPE_STATUS.get(str(err.get("type") or code or ""), 500)
    return status_error(status, payload, provider=provider)
