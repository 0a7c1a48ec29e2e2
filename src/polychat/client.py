"""Client and AsyncClient: the OpenAI-shaped front door.

``client.chat.completions.create(...)`` validates the call, picks the provider (the call's, else the client's,
else the default chain), and hands the request to it; ``client.models.list()`` asks the same provider. Sync and
async share everything but the last call: the request building and routing live below this module.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, overload

from . import _constants as C
from ._context import CallContext
from ._failover import FailoverPolicy
from ._http import TransportPool, make_timeout
from ._proxy import parse_proxy
from ._record import CallRecord
from ._redact import mask_secret
from ._request import ChatRequest, build_request
from ._responses import AsyncResponses, Responses
from ._streams import _END, AsyncStream, Stream
from .errors import ConfigError
from .providers.base import Provider, as_provider
from .routing.breaker import BreakerStore, CircuitBreaker
from .routing.retry import RetryProvider, default_chain
from .types import ChatCompletion, ChatCompletionChunk, ModelList

if TYPE_CHECKING:
    import httpx

    from .config import Config
    from .routing.breaker_redis import RedisBreakerStore

__all__ = ["AsyncClient", "AsyncStream", "Client", "Stream"]


#: What ``provider=`` takes: a provider instance (a RetryProvider chain is one), or a class built from the environment.
ProviderArg = Provider | type[Provider]
#: ``messages=``: OpenAI-style message dicts.
Messages = Sequence[Mapping[str, Any]]


def _finished(record: CallRecord, result: ChatCompletion) -> ChatCompletion:
    result.attempts = record.attempts
    record.finish(result)
    return result


def _load_config(config: str | os.PathLike[str] | Config | Literal[False] | None) -> Config | None:
    """``config=``: None (no config file), a path, or a :class:`polychat.config.Config`."""
    if config is None or config is False:
        return None
    from .config import Config, load_config

    if isinstance(config, Config):
        return config
    return load_config(config)


def _client_breaker(store: BreakerStore | str | None) -> tuple[CircuitBreaker | None, RedisBreakerStore | None]:
    """The client's own circuit breaker for ``breaker_store`` (None: the chains' own, by default the process-wide
    one), and the store the client made from a Redis URL — its to close."""
    if store is None:
        return None, None
    if isinstance(store, str):
        from .routing.breaker_redis import RedisBreakerStore

        own = RedisBreakerStore(store)
        return CircuitBreaker(own), own
    if not callable(getattr(store, "get", None)) or not callable(getattr(store, "update", None)):
        raise ConfigError(
            "breaker_store must be a BreakerStore (get and update methods) or a redis:// URL, "
            f"not {type(store).__name__}"
        )
    return CircuitBreaker(store), None


class _BaseClient:
    """What Client and AsyncClient share: the arguments (documented on :class:`Client`) and the call set-up."""

    def __init__(
        self,
        provider: ProviderArg | None = None,
        proxies: str | Mapping[str, Any] | Literal[False] | None = None,
        api_key: str | dict[str, str] | None = None,
        base_url: str | None = None,
        timeout: float | httpx.Timeout | None = None,
        max_retries: int | None = None,
        *,
        trust_env: bool = True,
        proxy: str | Mapping[str, Any] | Literal[False] | None = None,
        first_token_timeout: float | None = None,
        idle_timeout: float | None = None,
        response_timeout: float | None = None,
        deadline: float | None = None,
        hedge_after: float | None = None,
        resume: bool | None = None,
        allow_empty: bool | None = None,
        config: str | os.PathLike[str] | Config | Literal[False] | None = None,
        breaker_store: BreakerStore | str | None = None,
    ) -> None:
        self.failover = FailoverPolicy.checked(
            {
                "first_token_timeout": first_token_timeout,
                "idle_timeout": idle_timeout,
                "response_timeout": response_timeout,
                "deadline": deadline,
                "hedge_after": hedge_after,
                "resume": resume,
                "allow_empty": allow_empty,
            }
        )
        if proxies is not None and proxy is not None:
            raise ConfigError("pass either proxies= or proxy=, not both (they are the same setting)")
        proxy_setting: object = proxies if proxies is not None else proxy
        self.config = _load_config(config)
        if self.config is not None:
            # The config file's [defaults] fill in what the caller left unset.
            self.failover = self.failover.merged(self.config.failover)
            if proxy_setting is None:
                proxy_setting = self.config.proxy
            if timeout is None:
                timeout = self.config.timeout
            if max_retries is None:
                max_retries = self.config.max_retries
        if max_retries is not None and (
            isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0
        ):
            raise ConfigError(f"max_retries must be a whole number >= 0, got {max_retries!r}")
        if api_key is not None and not isinstance(api_key, (str, dict)):
            raise ConfigError("api_key must be a string, or a dict of provider name to key")
        self.api_key = api_key
        self.base_url = base_url
        self.max_retries = max_retries
        self.proxy = parse_proxy(proxy_setting, "proxies")
        self.timeout = make_timeout(timeout) if timeout is not None else None
        self._pool = TransportPool(trust_env=trust_env)
        self.breaker, self._own_store = _client_breaker(breaker_store)
        self.provider = self._resolve(provider) if provider is not None else None
        self._explicit_provider = self.provider
        self._attach_namespaces()

    def _attach_namespaces(self) -> None:
        """Set ``chat`` and ``models`` (sync or async flavour)."""
        raise NotImplementedError

    def _resolve(self, provider: Any) -> Provider:
        """A provider with this client's key and URL applied to class-given members, and retries around it."""
        p = as_provider(provider, api_key=self.api_key, base_url=self.base_url)
        if isinstance(p, RetryProvider):
            return p
        retries = C.DEFAULT_MAX_RETRIES if self.max_retries is None else self.max_retries
        # A bare provider has nothing to fail over to: its empty answer is an answer, unless the client says not.
        allow_empty = True if self.failover.allow_empty is None else None
        return RetryProvider([p], max_retries=retries, allow_empty=allow_empty, name=p.name)

    def _default_provider(self) -> Provider:
        if self.provider is None:
            if self.config is not None and self.api_key is None and self.base_url is None:
                chain = self.config.default_chain()  # with the config's [defaults] fallback, if any
            else:
                chain = default_chain(api_key=self.api_key, base_url=self.base_url)
            self.provider = self._resolve(chain)
        return self.provider

    def _config_models(self, provider: Any) -> ModelList | None:
        """With a config and no provider: the models the config can serve — the gateway's ``/v1/models``."""
        if provider is not None or self.config is None or self._explicit_provider is not None:
            return None
        return ModelList(data=list(self.config.model_list()))

    def _prepare(
        self, model: Any, messages: Any, stream: Any, kwargs: dict[str, Any]
    ) -> tuple[ChatRequest, Provider, CallContext]:
        request, options = build_request(model, messages, stream, kwargs)
        if options.provider is not None:
            provider = self._resolve(options.provider)
        elif self.config is not None and self._explicit_provider is None:
            # The config may claim the model: a route alias, "provider:model", or a model a provider lists.
            routed, routed_model = self.config.resolve(request.model or None)
            if routed is not None:
                provider = self._resolve(routed)
                request = request.with_model(routed_model)
            else:
                provider = self._default_provider()
        else:
            provider = self._default_provider()
        ctx = CallContext(
            pool=self._pool,
            client_proxy=self.proxy,
            call_proxy=parse_proxy(options.proxy, "proxy"),
            client_timeout=self.timeout,
            call_timeout=make_timeout(options.timeout) if options.timeout is not None else None,
            failover=options.failover,
            client_failover=self.failover,
            record=CallRecord(request),
            breaker=self.breaker,
        )
        return request, provider, ctx

    def _models_context(self, provider: Any) -> tuple[Provider, CallContext]:
        p = self._resolve(provider) if provider is not None else self._default_provider()
        return p, CallContext(pool=self._pool, client_proxy=self.proxy, client_timeout=self.timeout)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(provider={self.provider!r}, proxies={self.proxy!r}, "
            f"api_key={mask_secret(self.api_key) if not isinstance(self.api_key, dict) else '{...}'})"
        )


# -- sync ------------------------------------------------------------------------------------------------------


class Completions:
    def __init__(self, client: Client) -> None:
        self._client = client

    @overload
    def create(
        self, model: str, messages: Messages, stream: Literal[False] = False, **kwargs: Any
    ) -> ChatCompletion: ...
    @overload
    def create(
        self, model: str, messages: Messages, stream: Literal[True], **kwargs: Any
    ) -> Stream[ChatCompletionChunk]: ...
    @overload
    def create(
        self, model: str, messages: Messages, stream: bool, **kwargs: Any
    ) -> ChatCompletion | Stream[ChatCompletionChunk]: ...

    def create(
        self, model: str, messages: Messages, stream: bool = False, **kwargs: Any
    ) -> ChatCompletion | Stream[ChatCompletionChunk]:
        """Ask for a chat completion; with ``stream=True`` get a :class:`Stream` of chunks.

        Takes the OpenAI request parameters (``temperature``, ``max_tokens``, ``tools``, ...), the escape hatches
        ``extra_body`` / ``extra_headers`` / ``extra_query``, and per-call ``provider=``, ``proxy=``, ``timeout=``
        and ``allow_empty=``. Anything else is an :class:`~polychat.errors.InvalidRequestError`.
        """
        request, provider, ctx = self._client._prepare(model, messages, stream, kwargs)
        record = ctx.record
        assert record is not None
        try:
            if not stream:
                return _finished(record, provider.complete(request, ctx))
            chunks = provider.stream(request, ctx)
            first = next(chunks, _END)
        except BaseException as e:
            record.finish(error=e)
            raise
        return Stream(chunks, first, record)


class Chat:
    def __init__(self, client: Client) -> None:
        self.completions = Completions(client)


class Models:
    def __init__(self, client: Client) -> None:
        self._client = client

    def list(self, *, provider: ProviderArg | None = None) -> ModelList:
        listed = self._client._config_models(provider)
        if listed is not None:
            return listed
        p, ctx = self._client._models_context(provider)
        return ModelList(data=p.list_models(ctx))


class Client(_BaseClient):
    """A synchronous chat client.

    ``provider``: a provider class or instance, or a :class:`~polychat.RetryProvider` chain; None builds the
    default chain (configured remote providers, then the embedded model). ``proxies``: a URL, a
    ``{'http': ..., 'https': ...}`` dict, or False for a direct connection. ``api_key`` / ``base_url`` apply to
    providers given as classes. ``timeout``: seconds or an ``httpx.Timeout``. ``max_retries``: retries of a
    single provider (default 2; a RetryProvider keeps its own). ``first_token_timeout``, ``idle_timeout``,
    ``deadline``, ``hedge_after``, ``resume`` and ``allow_empty``: failover defaults for every call (see
    :class:`~polychat.FailoverPolicy`); a chain's own settings and a call's arguments take precedence.
    ``trust_env=False`` ignores proxy environment variables. ``config``: a TOML config file (path) or a
    :class:`polychat.config.Config`: its ``[defaults]`` fill in unset arguments, and its routes and providers
    answer the models they claim (see :mod:`polychat.config`). ``breaker_store``: where this client's circuit
    breakers live — a :class:`~polychat.routing.BreakerStore`, or a Redis URL (``redis://[:password@]host:port/db``,
    needs ``polychat[redis]``) so that every process using that Redis sees a provider one of them found down; the
    client then closes the store it made with :meth:`close`. Chains built with their own ``breaker=`` keep it.
    Default: the process-wide breaker.
    """

    chat: Chat
    models: Models

    def _attach_namespaces(self) -> None:
        self.chat = Chat(self)
        self.models = Models(self)
        self.responses = Responses(self)

    def close(self) -> None:
        self._pool.close()
        if self._own_store is not None:
            self._own_store.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


# -- async -----------------------------------------------------------------------------------------------------


class AsyncCompletions:
    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    @overload
    async def create(
        self, model: str, messages: Messages, stream: Literal[False] = False, **kwargs: Any
    ) -> ChatCompletion: ...
    @overload
    async def create(
        self, model: str, messages: Messages, stream: Literal[True], **kwargs: Any
    ) -> AsyncStream[ChatCompletionChunk]: ...
    @overload
    async def create(
        self, model: str, messages: Messages, stream: bool, **kwargs: Any
    ) -> ChatCompletion | AsyncStream[ChatCompletionChunk]: ...

    async def create(
        self, model: str, messages: Messages, stream: bool = False, **kwargs: Any
    ) -> ChatCompletion | AsyncStream[ChatCompletionChunk]:
        """Async :meth:`Completions.create`: ``stream = await create(..., stream=True)``, then ``async for``."""
        request, provider, ctx = self._client._prepare(model, messages, stream, kwargs)
        record = ctx.record
        assert record is not None
        try:
            if not stream:
                return _finished(record, await provider.acomplete(request, ctx))
            chunks = provider.astream(request, ctx)
            first = await anext(chunks, _END)
        except BaseException as e:
            record.finish(error=e)
            raise
        return AsyncStream(chunks, first, record)


class AsyncChat:
    def __init__(self, client: AsyncClient) -> None:
        self.completions = AsyncCompletions(client)


class AsyncModels:
    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def list(self, *, provider: ProviderArg | None = None) -> ModelList:
        listed = self._client._config_models(provider)
        if listed is not None:
            return listed
        p, ctx = self._client._models_context(provider)
        return ModelList(data=await p.alist_models(ctx))


class AsyncClient(_BaseClient):
    """The asynchronous client; the same arguments as :class:`Client`, awaited methods."""

    chat: AsyncChat
    models: AsyncModels

    def _attach_namespaces(self) -> None:
        self.chat = AsyncChat(self)
        self.models = AsyncModels(self)
        self.responses = AsyncResponses(self)

    async def close(self) -> None:
        await self._pool.aclose()
        if self._own_store is not None:
            await self._own_store.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
