"""HTTPProvider: a remote protocol written as pure functions, sent by one shared I/O shell per flavour.

A subclass says how to build the wire request and how to read the answer (whole body, or a stream parser fed raw
bytes); it never touches sockets. The shells in :mod:`polychat._async.http` (and their sync twins, generated from
them) are the only I/O, so timeouts, proxies, error mapping and connection release behave the same for every
protocol.
"""

from __future__ import annotations

import functools
import hashlib
import os
from abc import abstractmethod
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypedDict

import httpx

from .._async import http as _async_http
from .._http import ResponseHead, WireRequest, error_from_response, make_timeout, proxy_status_error
from .._proxy import ProxyConfig, parse_proxy
from .._redact import mask_secret, redact_url, split_credentials
from .._shapes import header_problem
from .._sync import http as _sync_http
from ..errors import ConfigError, MissingAPIKeyError
from .base import Provider

if TYPE_CHECKING:
    from .._context import CallContext
    from .._request import ChatRequest
    from ..errors import APIError
    from ..types import ChatCompletion, ChatCompletionChunk, Model


class HTTPProviderOptions(TypedDict, total=False):
    """The settings every HTTP provider takes (see :class:`HTTPProvider`). A subclass with settings of its own
    takes those by name and the rest as ``**options: Unpack[HTTPProviderOptions]``, so its signature stays typed
    without repeating these."""

    api_key: str | None
    base_url: str | None
    proxy: Any
    timeout: float | httpx.Timeout | None
    name: str | None
    default_model: str | None
    headers: dict[str, str] | None


class StreamParser(Protocol):
    """Turns raw response bytes into chunks.

    ``feed`` returns the chunks completed by ``data``; an error found after good chunks in the same read is
    raised by the next call, so nothing the provider said is lost. ``finish()`` runs at the end of the body,
    yields what was left and raises if the stream was cut short.
    """

    def feed(self, data: bytes) -> list[ChatCompletionChunk]: ...

    def finish(self) -> Iterable[ChatCompletionChunk]: ...


class HTTPProvider(Provider):
    """Base for providers spoken to over HTTP. ``proxy`` and ``timeout`` override the client's for this provider.

    A subclass says where its service lives and how it authenticates with class attributes; this class does the
    rest once for all of them: ``api_key`` defaults to the first of :attr:`api_key_envs` that is set, ``base_url``
    to :meth:`env_base_url`, then :attr:`default_base_url`; :meth:`check_ready` refuses to send to the official
    endpoint without a key when :attr:`key_required`; ``_base_headers`` holds JSON content type, the headers of
    :meth:`auth_headers` and the caller's ``headers``.
    """

    api_key: str | None
    base_url: str
    accepts_api_key = True
    accepts_base_url = True
    #: Environment variables holding the API key, tried in order (empty: the service takes no key).
    api_key_envs: ClassVar[tuple[str, ...]] = ()
    #: Environment variable holding the base URL ("": none).
    base_url_env: ClassVar[str] = ""
    #: The official endpoint.
    default_base_url: ClassVar[str] = ""
    #: Whether the official endpoint needs a key (a custom ``base_url`` never does: it may be a local server).
    key_required: ClassVar[bool] = True

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        proxy: Any = None,
        timeout: float | httpx.Timeout | None = None,
        name: str | None = None,
        default_model: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(name=name, default_model=default_model)
        self.headers = dict(headers or {})
        for header, value in self.headers.items():
            problem = header_problem(header, value)
            if problem:
                raise ConfigError(f"{self.name}: headers: {problem}")
        self.api_key = api_key if api_key is not None else self.env_api_key()
        url = (base_url or self.env_base_url() or self.default_base_url).rstrip("/")
        self.base_url, basic = split_credentials(url)
        if basic is not None:
            if self.api_key or any(h.lower() == "authorization" for h in self.headers):
                raise ConfigError(
                    f"{self.name}: base_url {redact_url(url)!r} has a user name and password, and an "
                    "api_key (given, or read from the environment) or an Authorization header too; both would be "
                    "the Authorization header — pass one"
                )
            self.headers["authorization"] = basic  # HTTP Basic, as the URL asked, on every transport alike
        self.proxy: ProxyConfig | None = parse_proxy(proxy, f"{self.name} proxy")
        self.timeout: httpx.Timeout | None = make_timeout(timeout) if timeout is not None else None
        self._base_headers = {"content-type": "application/json", **self.auth_headers(), **self.headers}

    # -- where the service is and how it authenticates -------------------------------------------------------------

    @classmethod
    def env_api_key(cls) -> str | None:
        """The key from the environment: the first of :attr:`api_key_envs` that is set."""
        return next((os.environ[k] for k in cls.api_key_envs if os.environ.get(k)), None)

    @classmethod
    def env_base_url(cls) -> str | None:
        """The base URL from the environment (:attr:`base_url_env`), or None."""
        return os.environ.get(cls.base_url_env) or None if cls.base_url_env else None

    @classmethod
    def official_key_env(cls) -> str | None:
        """The variable the official service's key is read from when one is needed (for docs and config files)."""
        return cls.api_key_envs[0] if cls.key_required and cls.api_key_envs else None

    def auth_headers(self) -> dict[str, str]:
        """The headers carrying ``self.api_key`` (none without a key). Default: a bearer token."""
        return {"authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    @functools.cached_property
    def breaker_key(self) -> str:
        # Two keys on one URL are two endpoints (one may be rate limited, the other not); the key itself is hashed.
        secret = self.api_key or self.headers.get("authorization")
        fingerprint = hashlib.sha256(secret.encode()).hexdigest()[:12] if secret else "-"
        return f"{type(self).__name__}:{self.base_url}:{fingerprint}"

    # -- protocol hooks (pure) -------------------------------------------------------------------------------------

    @abstractmethod
    def chat_request(self, request: ChatRequest, *, stream: bool) -> WireRequest: ...

    @abstractmethod
    def parse_completion(self, body: bytes, request: ChatRequest) -> ChatCompletion: ...

    @abstractmethod
    def stream_parser(self, request: ChatRequest) -> StreamParser: ...

    def models_request(self) -> WireRequest | None:
        return None

    def parse_models(self, body: bytes) -> list[Model]:
        return []

    def error_for(self, status: int, headers: Mapping[str, str], body: bytes) -> APIError:
        return error_from_response(status, headers, body, self.name)

    def response_error(self, resp: ResponseHead, body: bytes, ctx: CallContext, url: str) -> APIError:
        """The error for a failed response; one a forward proxy produced is named as the proxy's."""
        return proxy_status_error(resp, ctx.proxy_for(self), url, self.name) or self.error_for(
            resp.status_code, resp.headers, body
        )

    def check_ready(self) -> None:
        """Raise before sending when the provider cannot work: no API key for an official endpoint that needs one."""
        if self.key_required and not self.api_key and self.base_url == self.default_base_url.rstrip("/"):
            where = " or ".join(self.api_key_envs)
            also = f", or set base_url (or {self.base_url_env}) to a compatible server" if self.base_url_env else ""
            raise MissingAPIKeyError(
                f"No API key for {self.name} ({self.base_url}): set {where} or pass api_key=...{also}",
                provider=self.name,
                retryable=False,
            )

    # -- the calls: the shells in polychat._async.http, and their generated sync twins in polychat._sync.http ------

    def complete(self, request: ChatRequest, ctx: CallContext) -> ChatCompletion:
        return _sync_http.complete(self, request, ctx)

    def stream(self, request: ChatRequest, ctx: CallContext) -> Iterator[ChatCompletionChunk]:
        return _sync_http.stream(self, request, ctx)

    def list_models(self, ctx: CallContext) -> list[Model]:
        return _sync_http.list_models(self, ctx)

    async def acomplete(self, request: ChatRequest, ctx: CallContext) -> ChatCompletion:
        return await _async_http.complete(self, request, ctx)

    def astream(self, request: ChatRequest, ctx: CallContext) -> AsyncIterator[ChatCompletionChunk]:
        return _async_http.stream(self, request, ctx)

    async def alist_models(self, ctx: CallContext) -> list[Model]:
        return await _async_http.list_models(self, ctx)

    async def _asend(self, wire: WireRequest, ctx: CallContext) -> bytes:
        """Send a request of the provider's own (Anthropic's token count) and read the whole answer."""
        return await _async_http.send(self, wire, ctx)

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "base_url": self.base_url,
            "proxy": self.proxy.describe() if self.proxy else None,
        }

    def __repr__(self) -> str:
        proxy = f", proxy={self.proxy!r}" if self.proxy else ""
        key = mask_secret(self.api_key)
        return f"{type(self).__name__}(name={self.name!r}, base_url={self.base_url!r}, api_key={key}{proxy})"
