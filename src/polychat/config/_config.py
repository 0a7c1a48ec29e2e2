"""The checked config: providers built on first use, routes as failover chains, model resolution, and the
facts callers ask for (client arguments, availability, secrets, a redacted view).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from .._failover import FailoverPolicy
from .._proxy import ProxyConfig
from .._redact import mask_secret, redact_url
from ..errors import ConfigError
from ._check import _check, _check_server, _Checker
from ._types import _BUILTINS, _DEFAULTS_KEYS, ProviderSpec, ProviderType, RouteSpec, provider_type

if TYPE_CHECKING:
    from ..providers.base import Provider
    from ..types import Model

log = logging.getLogger("polychat")


def _openai_chat() -> type[Provider]:
    from ..providers.openai import OpenaiChat

    return OpenaiChat


class Config:
    """A checked config. Build with :func:`load_config`; ``Config({})`` is the empty config.

    Providers are built on first use and cached, so one ``Config`` shares provider (and breaker) state across
    calls; build a new one to pick up changed environment variables.
    """

    def __init__(self, doc: dict[str, Any], *, path: str | None = None, text: str = "") -> None:
        #: The file this config was read from; None when there was none (the empty config).
        self.path = path
        checker = _Checker(path, text)
        defaults, self.declared, self.routes = _check(doc, checker)
        #: The gateway's ``[server]`` table, checked (empty when absent).
        self.server: dict[str, Any] = _check_server(doc, checker)
        self.specs: dict[str, ProviderSpec] = {**_BUILTINS, **self.declared}
        self._defaults = defaults
        self.default_model: str | None = defaults.get("model")
        self.default_provider: str | None = defaults.get("provider")
        #: ``[defaults] fallback``: a provider ("provider:model") or route the default chain ends with, answering
        #: whatever was asked. The only way the default chain substitutes a model the caller did not ask for.
        self.fallback: str | None = defaults.get("fallback")
        self.timeout: float | None = defaults.get("timeout")
        self.max_retries: int | None = defaults.get("max_retries")
        self.proxy: ProxyConfig | None = defaults.get("proxy_config")
        #: The failover switches of ``[defaults]``: a client's defaults (its own arguments win).
        self.failover = FailoverPolicy.checked(defaults)
        self._providers: dict[str, Provider] = {}
        self._routes: dict[str, Provider] = {}
        self._models: list[Model] | None = None
        self._default_chain: Provider | None = None

    # -- building providers --------------------------------------------------------------------------------

    def provider_class(self, name: str) -> type[Provider]:
        """The class of provider ``name`` (imported now; raises ConfigError when it cannot be)."""
        spec = self._spec(name)
        try:
            return self.type_of(spec).load(spec.type)
        except ImportError as e:
            raise ConfigError(f"provider {name!r} (type {spec.type!r}) is not available: {e}") from None

    @staticmethod
    def type_of(spec: ProviderSpec) -> ProviderType:
        """The type row of a checked provider (its type was found when the config was read)."""
        ptype = provider_type(spec.type)
        if ptype is None:
            raise ConfigError(f"provider {spec.name!r}: unknown provider type {spec.type!r}")
        return ptype

    def provider(self, name: str) -> Provider:
        """Provider ``name`` (declared or built in), built on first use."""
        cached = self._providers.get(name)
        if cached is not None:
            return cached
        spec = self._spec(name)
        cls = self.provider_class(name)
        kwargs: dict[str, Any] = {}
        if not spec.builtin:
            kwargs["name"] = spec.name
            kwargs.update(spec.options)
            if spec.effective_default_model:
                kwargs["default_model"] = spec.effective_default_model
            if self.type_of(spec).http:
                # Never None: None would let the class fall back to OPENAI_API_KEY / OPENAI_BASE_URL.
                kwargs["api_key"] = spec.api_key or (os.environ.get(spec.key_env, "") if spec.key_env else "")
                if spec.base_url:
                    kwargs["base_url"] = spec.base_url
                elif issubclass(cls, _openai_chat()):
                    # Never None: None would let it fall back to OPENAI_BASE_URL, meant for the built-in openai.
                    kwargs["base_url"] = getattr(cls, "default_base_url", None)
                # Other protocols read their own variables (ANTHROPIC_BASE_URL, OLLAMA_HOST...) when unset.
                if spec.proxy_config is not None:
                    kwargs["proxy"] = spec.proxy_config
                if spec.timeout is not None:
                    kwargs["timeout"] = spec.timeout
        provider = cls(**kwargs)
        self._providers[name] = provider
        return provider

    def route(self, model: str) -> tuple[Provider, str] | None:
        """The provider for ``model`` and the model to ask it for, or None when the config does not claim it.

        A route alias gives its chain (a :class:`~polychat.RetryProvider` of
        :class:`~polychat.routing.pinned.PinnedModel`, each pinning its model); ``"provider"`` /
        ``"provider:model"`` give that provider (its default model / that model); a model listed in declared
        providers' ``models`` gives that provider, or a chain of them in file order.
        """
        if not model:
            return None
        if model in self.routes:
            cached = self._routes.get(model)
            if cached is None:
                cached = self._routes[model] = self._build_route(self.routes[model])
            return cached, model
        pname, sep, pmodel = model.partition(":")
        if pname in self.specs:
            if sep:
                return self.provider(pname), pmodel
            return self.provider(pname), self.specs[pname].effective_default_model or ""
        owners = [name for name, spec in self.declared.items() if model in spec.models]
        if not owners:
            # The embedded model's name goes to it even when the default chain is remote providers (those, and
            # their own model names, are the default chain's: it ends with the fallback, when one is set).
            owners = [
                m.owned_by
                for m in self.model_list()
                if m.id == model and m.owned_by in _BUILTINS and _BUILTINS[m.owned_by].type == "local"
            ][:1]
        if len(owners) == 1:
            return self.provider(owners[0]), model
        if owners:
            key = f"\0{model}"
            cached = self._routes.get(key)
            if cached is None:
                spec = RouteSpec(name=model, chain=tuple((o, model) for o in owners), max_retries=self.max_retries)
                cached = self._routes[key] = self._build_route(spec)
            return cached, model
        return None

    def resolve(self, model: str | None = None, provider: str | None = None) -> tuple[Provider | None, str]:
        """What a caller asking for ``model`` (None: not given) from ``provider`` (a provider or route name, None:
        not given) gets: ``(provider, model)``, the provider None meaning "the default chain".

        With ``provider`` and no model, that provider's default model is used (``[defaults] model`` is not).
        """
        if provider is not None:
            if provider in self.routes:
                routed = self.route(provider)
                assert routed is not None
                return routed
            if provider not in self.specs:
                raise ConfigError(f"unknown provider {provider!r}; known: {', '.join(self.listed_names())}")
            if model is None:
                model = self.specs[provider].effective_default_model or ""
            return self.provider(provider), model
        wanted = model if model is not None else (self.default_model or "")
        routed = self.route(wanted)
        if routed is not None:
            return routed
        if self.default_provider is not None:
            return self.resolve(wanted or None, self.default_provider)
        return None, wanted

    def default_chain(self) -> Provider:
        """What a call that no route or provider claims goes to: the providers whose credentials are present (the
        embedded model only when there are none), then ``[defaults] fallback`` when set.

        The rule behind it: failing over to another provider is polychat's job; answering with another *model*
        than the one asked for is something the user asks for (a route, or ``fallback``), never a silent default.
        """
        if self._default_chain is None:
            from ..routing.retry import default_chain

            chain = default_chain()
            if self.fallback is not None:
                from ..routing.pinned import PinnedModel
                from ..routing.retry import RetryProvider

                name, sep, pinned = self.fallback.partition(":")
                target, model = self.resolve(None, name)
                assert target is not None
                # A route's members are already pinned; a provider answers with its default (or the named) model.
                last = target.members() if name in self.routes else [PinnedModel(target, pinned if sep else model)]
                chain = RetryProvider([*chain.members(), *last], max_retries=1, name="default")
            self._default_chain = chain
        return self._default_chain

    def model_list(self) -> list[Model]:
        """The models this config can serve (what the gateway's ``/v1/models`` lists): route aliases, then each
        usable provider's models — declared ``models`` and default model, a built-in provider's default model,
        the embedded model's. Nothing is sent anywhere."""
        if self._models is not None:
            return self._models
        from ..types import Model

        try:
            created = int(os.path.getmtime(self.path)) if self.path else 0
        except OSError:
            created = 0
        created = created or int(time.time())  # no file: when this config came to be
        seen: dict[str, Model] = {}

        def add(model_id: str | None, owned_by: str, when: int = created) -> None:
            if model_id and model_id not in seen:
                seen[model_id] = Model(id=model_id, created=when or created, owned_by=owned_by)

        for alias in self.routes:
            add(alias, "polychat")
        for name, spec in self.specs.items():
            if self.unavailable(name) is not None:
                continue
            if self.type_of(spec).http:
                for model_id in spec.models:
                    add(model_id, name)
                default = spec.effective_default_model
                if default is None and spec.builtin:
                    with contextlib.suppress(Exception):  # built, not used: cheap, sends nothing
                        default = self.provider(name).default_model
                add(default, name)
                continue
            try:
                listed = self.provider(name).list_models(None)  # type: ignore[arg-type]  # local: no context needed
            except Exception as e:  # listing must never fail the caller
                log.warning("polychat: cannot list the models of %s: %s", name, e)
                continue
            for entry in listed:
                add(entry.id, name, entry.created)
        self._models = list(seen.values())
        return self._models

    def _build_route(self, spec: RouteSpec) -> Provider:
        from ..routing.pinned import PinnedModel
        from ..routing.retry import RetryProvider

        members: list[Provider] = []
        problems: list[str] = []
        for pname, model in spec.chain:
            try:
                members.append(PinnedModel(self.provider(pname), model))
            except ConfigError as e:  # e.g. the embedded model is not installed: the rest of the chain still works
                problems.append(str(e))
                log.warning("polychat: route %s: skipping %s", spec.name, e)
        if not members:
            raise ConfigError(f"route {spec.name!r}: no provider of its chain is available: {'; '.join(problems)}")
        kwargs: dict[str, Any] = {"shuffle": spec.shuffle, "name": spec.name}
        retries = spec.max_retries if spec.max_retries is not None else self.max_retries
        if retries is not None:
            kwargs["max_retries"] = retries
        return RetryProvider(members, **kwargs, **spec.policy.set_values())

    def _spec(self, name: str) -> ProviderSpec:
        spec = self.specs.get(name)
        if spec is None:
            raise ConfigError(f"unknown provider {name!r}; known: {', '.join(self.listed_names())}")
        return spec

    # -- facts for callers -----------------------------------------------------------------------------------

    def names(self) -> list[str]:
        """Provider names (built-in first, then declared) and route aliases."""
        return [*self.specs, *self.routes]

    def listed_names(self) -> list[str]:
        """What ``polychat providers`` lists: the built-ins that are usable (openai, anthropic, gemini and local
        always), declared providers and routes."""
        from ._types import _ALWAYS_LISTED

        return [
            n
            for n, spec in self.specs.items()
            if not spec.builtin or n in _ALWAYS_LISTED or self.unavailable(n) is None
        ] + list(self.routes)

    def client_kwargs(self) -> dict[str, Any]:
        """``Client(...)`` arguments from ``[defaults]`` (proxies, timeout, max_retries, failover settings), only
        those the config sets."""
        kwargs: dict[str, Any] = self.failover.set_values()
        if self.proxy is not None:
            kwargs["proxies"] = self.proxy
        if self.timeout is not None:
            kwargs["timeout"] = self.timeout
        if self.max_retries is not None:
            kwargs["max_retries"] = self.max_retries
        return kwargs

    def models(self) -> list[str]:
        """Model names this config answers for: route aliases, then the models declared providers list."""
        out = list(self.routes)
        for spec in self.declared.values():
            out.extend(m for m in spec.models if m not in out)
        return out

    def unavailable(self, name: str) -> str | None:
        """Why provider or route ``name`` cannot work as configured (e.g. ``"OPENAI_API_KEY not set"``), or None.

        Cheap: looks at environment variables and installed packages, sends nothing.
        """
        if name in self.routes:
            reasons = [self.unavailable(p) for p, _ in self.routes[name].chain]
            if all(reasons):
                return "none of its providers is configured"
            return None
        spec = self._spec(name)
        if spec.type == "local":
            model_path = spec.options.get("model_path")
            if model_path and not os.path.isfile(model_path):
                return f"no model file at {model_path}"
            from ..providers.local._install import INSTALL_HINT, missing

            gone = missing(need_model=not (model_path or os.environ.get("POLYCHAT_LOCAL_MODEL")))
            return f"{gone} not installed ({INSTALL_HINT})" if gone else None
        if spec.builtin and spec.type == "openai":
            if os.environ.get("OPENAI_API_KEY") or os.environ.get("OPENAI_BASE_URL"):
                return None
            return "OPENAI_API_KEY not set"
        if spec.builtin:
            # The same test as the default chain's (polychat.providers.defaults): the key variable(s), and Azure's
            # endpoint.
            from ..providers.defaults import missing_credentials

            return missing_credentials(spec.type)
        if spec.api_key:
            return None
        env = spec.key_env
        if env and not os.environ.get(env):
            return f"{env} not set"
        return None

    def secrets(self) -> list[str]:
        """Every secret this config can put in a request (keys, proxy passwords), to scrub from messages."""
        out: list[str] = []
        for spec in self.specs.values():
            if spec.api_key:
                out.append(spec.api_key)
            env = spec.key_env
            if env and os.environ.get(env):
                out.append(os.environ[env])
            out.extend(proxy_passwords(spec.proxy_config))
            out.extend(url_passwords(spec.base_url or ""))
        out.extend(proxy_passwords(self.proxy))
        out.extend(self.server.get("api_keys", ()))
        keys_env = self.server.get("api_keys_env")
        if keys_env and os.environ.get(keys_env):
            out.extend(k.strip() for k in os.environ[keys_env].split(","))
        for key in self.server.get("keys", {}).values():
            out.append(os.environ.get(key.key_env, "").strip())
        redis_url = self.server.get("redis_url")
        if redis_url:
            out.extend(url_passwords(redis_url))
        return [s for s in dict.fromkeys(out) if s]

    def redacted(self) -> dict[str, Any]:
        """The effective config as plain data (defaults filled in), with keys and proxy passwords hidden."""
        out: dict[str, Any] = {}
        defaults = {k: self._defaults[k] for k in _DEFAULTS_KEYS if k in self._defaults}
        if "proxy" in defaults:
            defaults["proxy"] = redact_proxy(defaults["proxy"])
        if defaults:
            out["defaults"] = defaults
        if self.declared:
            out["providers"] = {name: _redacted_provider(spec) for name, spec in self.declared.items()}
        if self.routes:
            out["routes"] = {name: self._route_data(route) for name, route in self.routes.items()}
        if self.server:
            out["server"] = _redacted_server(self.server)
        return out

    def _route_data(self, route: RouteSpec) -> dict[str, Any]:
        """A route as plain data, the retries it inherits from ``[defaults]`` filled in."""
        r: dict[str, Any] = {"chain": [f"{p}:{m}" if m else p for p, m in route.chain]}
        retries = route.max_retries if route.max_retries is not None else self.max_retries
        if retries is not None:
            r["max_retries"] = retries
        r["shuffle"] = route.shuffle
        r.update(route.policy.set_values())
        return r

    def __repr__(self) -> str:
        return f"Config(path={self.path!r}, providers={list(self.declared)!r}, routes={list(self.routes)!r})"


def _redacted_provider(spec: ProviderSpec) -> dict[str, Any]:
    """A declared provider as plain data: a key written in the file masked, passwords in URLs hidden."""
    entry: dict[str, Any] = {"type": spec.type}
    if spec.base_url:
        entry["base_url"] = redact_url(spec.base_url)
    if spec.key_env:
        entry["api_key_env"] = spec.key_env
    if spec.api_key:
        entry["api_key"] = mask_secret(spec.api_key)
        entry["allow_plaintext_key"] = True
    if spec.proxy is not None:
        entry["proxy"] = redact_proxy(spec.proxy)
    if spec.timeout is not None:
        entry["timeout"] = spec.timeout
    entry.update(spec.options)
    if spec.models:
        entry["models"] = list(spec.models)
    if spec.effective_default_model:
        entry["default_model"] = spec.effective_default_model
    return entry


def _redacted_server(settings: dict[str, Any]) -> dict[str, Any]:
    """``[server]`` as plain data: gateway keys written in the file masked, the Redis password hidden, each named
    key's limits (its token lives in a variable, only the variable's name is shown)."""
    server = dict(settings)
    if "api_keys" in server:
        server["api_keys"] = [mask_secret(k) for k in server["api_keys"]]
    if "redis_url" in server:
        server["redis_url"] = redact_url(server["redis_url"])
    if "keys" in server:
        server["keys"] = {
            name: {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(spec).items() if v is not None}
            for name, spec in server["keys"].items()
        }
        for entry in server["keys"].values():
            del entry["name"]
    return server


def redact_proxy(value: Any) -> Any:
    """A proxy setting as written (URL, table or false) with passwords hidden."""
    if isinstance(value, str):
        return redact_url(value)
    if isinstance(value, dict):
        return {k: redact_url(v) if isinstance(v, str) and k != "no_proxy" else v for k, v in value.items()}
    return value


def proxy_passwords(proxy: ProxyConfig | None) -> list[str]:
    """The passwords inside a proxy setting, raw and percent-decoded."""
    out: list[str] = []
    for _, url in proxy.routes if proxy is not None else ():
        out.extend(url_passwords(url))
    return out


def url_passwords(url: str) -> list[str]:
    """The password inside a URL (proxy, Redis), raw and percent-decoded; empty when there is none."""
    try:
        password = urlsplit(url).password
    except ValueError:
        return []
    return sorted({password, unquote(password)}) if password else []
