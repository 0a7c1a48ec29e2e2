"""The config file's vocabulary: provider types (:data:`PROVIDER_TYPES`, one row each), the keys each table
allows, the checked forms of providers and routes.

Kept apart so the checker and :class:`~polychat.config.Config` share one table (tests add rows to it). The
provider types are the registry's providers (:func:`polychat.providers.registry.targets`), not a second list.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._constants import DEFAULT_OPENAI_MODEL
from .._failover import SWITCHES, UNSET, FailoverPolicy
from .._proxy import ProxyConfig

if TYPE_CHECKING:
    from ..providers.base import Provider


@dataclass(frozen=True)
class ProviderType:
    """One provider type of the config file: the class (``"module:Class"``, imported on first use), the keys a
    provider of this type may set, whether it is an HTTP provider, and ``options``: keys handed to the constructor
    as they are, each with its kind (``"str"``, ``"path"``, ``"count"``)."""

    target: str
    keys: frozenset[str]
    http: bool = False
    options: Mapping[str, str] = field(default_factory=dict)
    #: Set for an installed provider plugin: its class comes from the entry point, not from ``target``.
    plugin: bool = False

    def load(self, type_name: str) -> type[Provider]:
        """The provider class (imported now). ImportError propagates; a broken plugin raises PluginError."""
        if self.plugin:
            from ..providers import plugins

            return plugins.load(type_name)
        module_name, _, cls_name = self.target.partition(":")
        cls: type[Provider] = getattr(importlib.import_module(module_name), cls_name)
        return cls

    @property
    def key_env(self) -> str | None:
        """For HTTP types, the variable the official service's key is read from (None when it needs none)."""
        if not self.http or self.plugin:
            return None  # a plugin's class may inherit OpenAI's variable: never send that key elsewhere
        from ..providers.http import HTTPProvider
        from ..providers.registry import load

        cls = load(self.target)
        return cls.official_key_env() if issubclass(cls, HTTPProvider) else None


_HTTP_KEYS = frozenset(
    {"type", "models", "default_model", "base_url", "api_key_env", "api_key", "allow_plaintext_key", "proxy", "timeout"}
)
_LOCAL_OPTIONS = {"model_path": "path", "model_id": "str", "n_ctx": "count", "n_threads": "count"}
#: The one built-in provider that is not spoken to over HTTP, and what a config file may set for it.
_LOCAL = ProviderType("polychat.providers.local:Local", frozenset({"type", *_LOCAL_OPTIONS}), options=_LOCAL_OPTIONS)


def _provider_types() -> dict[str, ProviderType]:
    from ..providers.registry import targets

    return {
        name: _LOCAL if target == _LOCAL.target else ProviderType(target, _HTTP_KEYS, http=True)
        for name, target in targets().items()
    }


#: Config ``type`` → provider type: every provider of :mod:`polychat.providers.registry`.
PROVIDER_TYPES: dict[str, ProviderType] = _provider_types()


def provider_type(name: str) -> ProviderType | None:
    """The row for config ``type = name``: a built-in row, else an installed provider plugin's (the entry point's
    name, as :mod:`polychat.providers.plugins` promises), else None. A plugin is imported here, when a config names
    it: whether it takes the HTTP keys (``base_url``, ``api_key_env``...) is a fact of its class."""
    row = PROVIDER_TYPES.get(name)
    if row is not None:
        return row
    from ..providers import plugins

    ep = plugins.available().get(name)
    if ep is None:
        return None
    cls = plugins.load(name)
    http = bool(getattr(cls, "accepts_api_key", False))
    return ProviderType(ep.value, _HTTP_KEYS if http else frozenset({"type"}), http=http, plugin=True)


def provider_types() -> list[str]:
    """Every name ``type =`` accepts: the built-in rows, then installed plugins."""
    from ..providers import plugins

    return [*PROVIDER_TYPES, *(n for n in plugins.available() if n not in PROVIDER_TYPES)]


_TOP_KEYS = ("defaults", "providers", "routes", "server")
_SERVER_KEYS = (
    "api_keys_env",
    "api_keys",
    "allow_plaintext_key",
    "cors_origins",
    "allowed_hosts",
    "max_body_bytes",
    "shutdown_timeout",
    "max_connections",
    "header_timeout",
    "max_header_bytes",
    "otel",
    "redis_url",
    "redis_failure",
    "metrics_key_env",
    "keys",
)
#: ``[server.keys.NAME]``: a named gateway key and its limits.
_GATEWAY_KEY_KEYS = ("key_env", "models", "requests_per_minute", "tokens_per_minute", "budget_tokens")
#: ``[server] redis_failure``: what limits do while Redis is unreachable.
REDIS_FAILURE_MODES = ("closed", "open")
_POLICY_KEYS = SWITCHES
_DEFAULTS_KEYS = ("model", "provider", "fallback", "timeout", "proxy", "max_retries", *_POLICY_KEYS)
_ROUTE_KEYS = ("chain", "max_retries", "shuffle", *_POLICY_KEYS)


@dataclass(frozen=True)
class ProviderSpec:
    """A provider as the config describes it (built-ins included, with ``builtin=True``)."""

    name: str
    type: str
    base_url: str | None = None
    api_key_env: str | None = None
    api_key: str | None = field(default=None, repr=False)
    allow_plaintext_key: bool = False
    proxy: Any = None  # as written (URL, table or False), for display; ``proxy_config`` is the parsed form
    proxy_config: ProxyConfig | None = None
    timeout: float | None = None
    models: tuple[str, ...] = ()
    default_model: str | None = None
    builtin: bool = False
    #: Type-specific constructor arguments (e.g. a local model's ``model_path``).
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def key_env(self) -> str | None:
        """The environment variable the key is read from: ``api_key_env``, else the official service's variable
        when no ``base_url`` is set (a custom server gets no key unless one is named)."""
        if self.api_key_env:
            return self.api_key_env
        ptype = provider_type(self.type)
        assert ptype is not None, self.type  # checked when the config was read
        if ptype.http and not self.base_url and not self.api_key:
            return ptype.key_env
        return None

    @property
    def effective_default_model(self) -> str | None:
        return self.default_model or (self.models[0] if self.models else None)


@dataclass(frozen=True)
class RouteSpec:
    """A model alias: ``chain`` of (provider, model) pairs, model ``""`` meaning the provider's default."""

    name: str
    chain: tuple[tuple[str, str], ...]
    max_retries: int | None = None
    shuffle: bool = False
    #: Failover settings of this chain.
    policy: FailoverPolicy = UNSET


@dataclass(frozen=True)
class GatewayKeySpec:
    """A named gateway key (``[server.keys.NAME]``): the variable holding the bearer token, the models it may use
    (None: every model) and its limits (None: unlimited)."""

    name: str
    key_env: str
    models: tuple[str, ...] | None = None
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    budget_tokens: int | None = None

    @property
    def limited(self) -> bool:
        return any(v is not None for v in (self.requests_per_minute, self.tokens_per_minute, self.budget_tokens))


#: Providers that exist without being declared: every remote type with a key variable (usable once that variable
#: is set: the same providers, in the same order, as the default chain of
#: :mod:`polychat.providers.defaults`), and the embedded model.
_BUILTINS = {
    **{
        name: ProviderSpec(
            name=name, type=name, builtin=True, default_model=DEFAULT_OPENAI_MODEL if name == "openai" else None
        )
        for name, ptype in PROVIDER_TYPES.items()
        if ptype.http and ptype.key_env
    },
    "local": ProviderSpec(name="local", type="local", builtin=True),
}
#: Built-ins listed even when not configured (the others show up once their key is set).
_ALWAYS_LISTED = ("openai", "anthropic", "gemini", "local")
