"""PinnedModel: a provider that always asks its inner provider for one fixed model.

Config routes use it so that a model alias maps onto real models: with ``[routes.fast] chain = ["work:gpt-4o-mini",
"local"]`` a request for ``model="fast"`` reaches ``work`` as ``gpt-4o-mini`` and ``local`` as its own default model
(a pinned empty model means "the provider's default"). Everything else — name, capabilities, members, circuit
breaker, per-provider timeouts, the ``.provider`` on answers — is the inner provider's, so failover errors and
the CLI name the real provider.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

from ..providers.base import Provider

if TYPE_CHECKING:
    from .._context import CallContext
    from .._request import ChatRequest
    from ..types import ChatCompletion, ChatCompletionChunk, Model


class PinnedModel(Provider):
    """``inner`` with ``request.model`` replaced by ``model`` on every call (``""``: the inner's default model)."""

    def __init__(self, inner: Provider, model: str) -> None:
        super().__init__(name=inner.name, default_model=model or inner.default_model)
        self.inner = inner
        self.model = model
        self.capabilities = inner.capabilities
        self.models = (model,) if model else inner.models

    @property
    def breaker_key(self) -> str:
        # The same endpoint, pinned or not, is one circuit.
        return self.inner.breaker_key

    def __getattr__(self, name: str) -> Any:
        # Per-provider settings the failover engine looks up (first_token_timeout, idle_timeout, proxy, ...).
        if name == "inner" or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.inner, name)

    def _pin(self, request: ChatRequest) -> ChatRequest:
        return request if request.model == self.model else request.with_model(self.model)

    def complete(self, request: ChatRequest, ctx: CallContext) -> ChatCompletion:
        return self.inner.complete(self._pin(request), ctx)

    def stream(self, request: ChatRequest, ctx: CallContext) -> Iterator[ChatCompletionChunk]:
        # Returned as is (not re-yielded) so that closing it closes the inner stream at once.
        return self.inner.stream(self._pin(request), ctx)

    async def acomplete(self, request: ChatRequest, ctx: CallContext) -> ChatCompletion:
        return await self.inner.acomplete(self._pin(request), ctx)

    def astream(self, request: ChatRequest, ctx: CallContext) -> AsyncIterator[ChatCompletionChunk]:
        return self.inner.astream(self._pin(request), ctx)

    def list_models(self, ctx: CallContext) -> list[Model]:
        return self.inner.list_models(ctx)

    async def alist_models(self, ctx: CallContext) -> list[Model]:
        return await self.inner.alist_models(ctx)

    def bind(self, *, api_key: Any = None, base_url: str | None = None) -> Provider:
        bound = self.inner.bind(api_key=api_key, base_url=base_url)
        return self if bound is self.inner else PinnedModel(bound, self.model)

    def members(self) -> list[Provider]:
        return self.inner.members()

    def describe(self) -> dict[str, Any]:
        return {**self.inner.describe(), "model": self.model or None}

    def __repr__(self) -> str:
        return f"PinnedModel({self.inner!r}, model={self.model!r})"
