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
    "FailoverPolicy": "._failover",
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
    "UnsupportedParameterError",
    "ConfigError",
    "ConfigFileError",
    "PluginError",
    "APIError",
    "APIStatusError",
    "BadRequestError",
    "UnsupportedParameterError",
    "AuthenticationError",
    "PermissionDeniedError",
    "NotFoundError",
    "ConflictError",
    "UnprocessableEntityError",
    "RateLimitError",
    "MissingAPIKeyError",
    "EmptyResponseError",
    "InternalServerError",
    "APIConnectionError",
    "APITimeoutError",
    "StreamInterruptedError",
    "AllProvidersFailedError",
)
_LAZY.update({name: ".errors" for name in _ERRORS})

__all__ = sorted([*_LAZY, "__version__"])

if TYPE_CHECKING:  # the `X as X` form marks re-exports for type checkers (mypy --strict)
    from . import errors as errors
    from . import providers as providers
    from . import types as types
    from ._create import create as create
    from ._failover import FailoverPolicy as FailoverPolicy
    from .client import AsyncClient as AsyncClient
    from .client import AsyncStream as AsyncStream
    from .client import Client as Client
    from .client import Stream as Stream
    from .errors import AllProvidersFailedError as AllProvidersFailedError
    from .errors import APIConnectionError as APIConnectionError
    from .errors import APIError as APIError
    from .errors import APIStatusError as APIStatusError
    from .errors import APITimeoutError as APITimeoutError
    from .errors import AuthenticationError as AuthenticationError
    from .errors import BadRequestError as BadRequestError
    from .errors import ConfigError as ConfigError
    from .errors import ConfigFileError as ConfigFileError
    from .errors import ConflictError as ConflictError
    from .errors import EmptyResponseError as EmptyResponseError
    from .errors import InternalServerError as InternalServerError
    from .errors import InvalidRequestError as InvalidRequestError
    from .errors import MissingAPIKeyError as MissingAPIKeyError
    from .errors import NotFoundError as NotFoundError
    from .errors import PermissionDeniedError as PermissionDeniedError
    from .errors import PluginError as PluginError
    from .errors import PolychatError as PolychatError
    from .errors import RateLimitError as RateLimitError
    from .errors import StreamInterruptedError as StreamInterruptedError
    from .errors import UnprocessableEntityError as UnprocessableEntityError
    from .errors import UnsupportedParameterError as UnsupportedParameterError
    from .routing.retry import IterListProvider as IterListProvider
    from .routing.retry import RetryProvider as RetryProvider
    from .types import ChatCompletion as ChatCompletion
    from .types import ChatCompletionChunk as ChatCompletionChunk


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
