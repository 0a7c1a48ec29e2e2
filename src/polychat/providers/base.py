"""The provider interface: what every provider — remote, local or a failover chain — offers the client.

A provider turns a normalised :class:`~polychat._request.ChatRequest` into an answer. Four entry points, sync and
async, non-stream and stream; the client and the failover engine only ever call these. Remote protocols don't
implement them by hand: they subclass :class:`polychat.providers.http.HTTPProvider` and write pure functions
(build the wire request, parse the answer), and one thin I/O shell per flavour does the rest.

:class:`Capabilities` lets the router and the gateway decide without try-and-see.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import msgspec

from ..errors import UnsupportedParameterError

if TYPE_CHECKING:
    from .._context import CallContext
    from .._request import ChatRequest
    from ..types import ChatCompletion, ChatCompletionChunk, Model


class Capabilities(msgspec.Struct, frozen=True, kw_only=True):
    """What a provider can do. Flags are facts about the protocol, not about a particular model."""

    streaming: bool = True
    tools: bool = False
    vision: bool = False
    json_mode: bool = False
    system_role: bool = True
    #: Continues a partial assistant message given as the last message (used to resume interrupted streams).
    prefill: bool = False
    #: Runs without the network (the embedded model).
    offline: bool = False
    #: A client protocol it speaks natively ("anthropic"): a request that came in that protocol is sent as the
    #: client wrote it (see :class:`polychat._request.NativeRequest`).
    native_protocol: str | None = None


class Provider(ABC):
    """Base class of every provider.

    ``name`` is the instance's label (default: the class name): it is what ``.provider`` on responses says and
    what failover errors list, so give two instances of one class different names.
    """

    # Set on a provider class (class attributes, so they can be read without building one); a chain or a pinned
    # model sets its own from the providers it wraps when it is built.
    #: What this provider can do.
    capabilities: Capabilities = Capabilities()
    #: Models this provider is known to serve (informational; empty means "ask the server").
    models: tuple[str, ...] = ()

    name: str
    #: The model asked for when a request leaves ``model`` empty.
    default_model: str | None = None

    def __init__(self, *, name: str | None = None, default_model: str | None = None) -> None:
        self.name = name or type(self).__name__
        if default_model is not None:
            self.default_model = default_model

    # -- the interface -------------------------------------------------------------------------------------------

    @abstractmethod
    def complete(self, request: ChatRequest, ctx: CallContext) -> ChatCompletion: ...

    @abstractmethod
    def stream(self, request: ChatRequest, ctx: CallContext) -> Iterator[ChatCompletionChunk]:
        """A generator of chunks; closing it early must release the connection (or stop generation)."""

    @abstractmethod
    async def acomplete(self, request: ChatRequest, ctx: CallContext) -> ChatCompletion: ...

    @abstractmethod
    def astream(self, request: ChatRequest, ctx: CallContext) -> AsyncIterator[ChatCompletionChunk]: ...

    def list_models(self, ctx: CallContext) -> list[Model]:
        from ..types import Model

        return [Model(id=m, owned_by=self.name) for m in self.models]

    async def alist_models(self, ctx: CallContext) -> list[Model]:
        return self.list_models(ctx)

    # -- helpers -------------------------------------------------------------------------------------------------

    def resolve_model(self, model: str) -> str:
        """The model to ask for: ``model``, or this provider's default when ``model`` is empty."""
        if model:
            return model
        if self.default_model:
            return self.default_model
        # Also a 400 for failover chains: another provider of the chain may have a default model.
        raise UnsupportedParameterError(
            f"Invalid argument model: it is empty and provider {self.name} has no default model; "
            "pass model='...' or give the provider default_model=...",
            param="model",
            provider=self.name,
        )

    def bind(self, *, api_key: Any = None, base_url: str | None = None) -> Provider:
        """This provider with client-level defaults applied where the user left them open.

        Only providers given as *classes* take the client's ``api_key`` / ``base_url``; an instance keeps what it
        was built with. Chains rebind their members.
        """
        return self

    @property
    def breaker_key(self) -> str:
        """Identity of the endpoint for circuit breaking: instances that reach the same place share it."""
        return f"{type(self).__name__}:{self.name}"

    def members(self) -> list[Provider]:
        """The concrete providers behind this one (itself, for a plain provider)."""
        return [self]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "type": type(self).__name__}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def _key_for(cls: type[Provider], api_key: Any) -> Any:
    if isinstance(api_key, dict):
        for k in (cls.__name__.lower(), getattr(cls, "key_name", "")):
            if k and k in api_key:
                return api_key[k]
        return None
    return api_key


def as_provider(p: Any, *, api_key: Any = None, base_url: str | None = None) -> Provider:
    """Accept a provider instance, or a class instantiated with the given defaults and the environment."""
    if isinstance(p, Provider):
        return p.bind(api_key=api_key, base_url=base_url) if (api_key or base_url) else p
    if isinstance(p, type) and issubclass(p, Provider):
        kwargs: dict[str, Any] = {}
        key = _key_for(p, api_key)
        if key is not None and getattr(p, "accepts_api_key", False):
            kwargs["api_key"] = key
        if base_url is not None and getattr(p, "accepts_base_url", False):
            kwargs["base_url"] = base_url
        return p(**kwargs)
    from ..errors import ConfigError

    raise ConfigError(f"provider must be a Provider class or instance, got {p!r}")
