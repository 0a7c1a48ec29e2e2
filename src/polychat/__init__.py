"""polychat: one OpenAI-style chat client over many model providers, with failover that keeps calls alive.

``import polychat`` is cheap: names load on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "Client": ".client",
    "AsyncClient": ".client",
    "Stream": ".client",
    "AsyncStream": ".client",
    "create": "._create",
    "RetryProvider": ".routing.retry",
    "IterListProvider": ".routing.retry",
    "ChatCompletion": ".types",
    "ChatCompletionChunk": ".types",
    "errors": ".errors",
    "types": ".types",
    "providers": ".providers",
}
_ERRORS = (
    "PolychatError",
    "InvalidRequestError",
    "ConfigError",
    "APIError",
    "APIStatusError",
    "BadRequestError",
    "AuthenticationError",
    "PermissionDeniedError",
    "NotFoundError",
    "ConflictError",
    "UnprocessableEntityError",
    "RateLimitError",
    "InternalServerError",
    "APIConnectionError",
    "APITimeoutError",
    "StreamInterruptedError",
    "AllProvidersFailedError",
)
_LAZY.update({name: ".errors" for name in _ERRORS})

__all__ = sorted([*_LAZY, "__version__"])

if TYPE_CHECKING:
    from . import errors, providers, types
    from ._create import create
    from .client import AsyncClient, AsyncStream, Client, Stream
    from .errors import *  # noqa: F403
    from .routing.retry import IterListProvider, RetryProvider
    from .types import ChatCompletion, ChatCompletionChunk


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'polychat' has no attribute {name!r}")
    module = import_module(mod, __name__)
    value = module if name in ("errors", "types", "providers") else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
