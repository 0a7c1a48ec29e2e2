"""Gateway settings, and the rule that keeps a fresh install from being an open relay.

Safe by default: the gateway binds 127.0.0.1; binding any other address needs gateway API keys
(``POLYCHAT_API_KEYS``, comma-separated, or a ``[server]`` table in the config once the config supports one) or an
explicit ``--insecure``. With no keys, requests must also name a loopback host in their ``Host`` header (DNS
rebinding: a web page whose domain resolves to 127.0.0.1 would otherwise be "same origin" with the gateway).

Settings travel to ``--workers`` processes as JSON in an environment variable; keys never do (each worker reads them
from the environment and the config itself), and neither does the Redis URL, which may hold a password (it travels
in ``POLYCHAT_REDIS_URL``).
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from .._redis import REDIS_URL_ENV
from ..errors import ConfigError

if TYPE_CHECKING:
    from ..config._types import GatewayKeySpec

#: Environment variable with the gateway's API keys, comma-separated.
KEYS_ENV = "POLYCHAT_API_KEYS"
#: Environment variable carrying :class:`ServerSettings` to worker processes (JSON, no secrets).
SETTINGS_ENV = "POLYCHAT_SERVE_SETTINGS"

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
#: Request bodies above this are refused with 413: 4 MiB holds a long conversation or a few inline images.
DEFAULT_MAX_BODY = 4 * 1024 * 1024
#: Seconds in-flight requests get to finish after SIGTERM before they end with an error (streams: an error frame).
DEFAULT_SHUTDOWN_TIMEOUT = 10.0

#: Connection limits (see :mod:`polychat.server._connlimits` for why and how they act).
DEFAULT_MAX_CONNECTIONS = 1000
DEFAULT_HEADER_TIMEOUT = 15.0
DEFAULT_MAX_HEADER_BYTES = 64 * 1024

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})


class UnsafeBindError(Exception):
    """Refusing to listen on a non-loopback address without gateway API keys (and without ``--insecure``)."""


@dataclass
class ServerSettings:
    """How ``polychat serve`` runs. Every field has a safe default."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    #: Config file (None: ``POLYCHAT_CONFIG``, then the default location; see :func:`polychat.config.load_config`).
    config_path: str | None = None
    workers: int = 1
    #: Allow a non-loopback bind without API keys.
    insecure: bool = False
    max_body_bytes: int = DEFAULT_MAX_BODY
    #: Browser origins allowed to call the API cross-origin (CORS); empty: none.
    cors_origins: list[str] = field(default_factory=list)
    #: Extra names accepted in the ``Host`` header when no keys are set (loopback names always are).
    allowed_hosts: list[str] = field(default_factory=list)
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT
    #: Connections kept at once; beyond it the one waiting longest for its request headers is closed.
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    #: Seconds a connection gets to send a request's headers (also ends idle keep-alive connections).
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    #: Largest request line + headers, in bytes (431 above it).
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    access_log: bool = True
    debug: bool = False
    #: Export OpenTelemetry traces over OTLP, configured from the standard OTEL_* environment variables.
    otel: bool = False
    #: Shared state (breakers, limits, usage) in Redis; None: everything stays in this process.
    redis_url: str | None = field(default=None, repr=False)
    #: While Redis is unreachable, limited keys are refused ("closed") or pass unaccounted until it is back ("open").
    redis_failure: str = "closed"

    def to_env(self) -> str:
        data = asdict(self)
        del data["redis_url"]  # may hold a password: workers read POLYCHAT_REDIS_URL
        return json.dumps(data)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServerSettings:
        raw = (environ if environ is not None else os.environ).get(SETTINGS_ENV)
        if not raw:
            return cls()
        data = json.loads(raw)
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a bind address or a Host-header name, without port) only reaches this machine."""
    h = host.strip().lower().strip("[]")
    if h in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def check_bind(host: str, *, have_keys: bool, insecure: bool) -> None:
    """Raise :class:`UnsafeBindError` unless binding ``host`` is safe (loopback, keys configured, or insecure)."""
    if is_loopback(host) or have_keys or insecure:
        return
    raise UnsafeBindError(
        f"refusing to listen on {host} without API keys: anyone who can reach this address could use your "
        f"providers and keys. Set gateway keys ({KEYS_ENV}=key1,key2, or named keys [server.keys.NAME] in the config; "
        "clients send 'Authorization: Bearer KEY'), "
        "or pass --insecure to serve without them, or bind 127.0.0.1"
    )


def parse_keys(value: str | None) -> list[str]:
    """Comma-separated keys, whitespace trimmed, empties dropped."""
    return [k.strip() for k in (value or "").split(",") if k.strip()]


def config_server_table(config: Any) -> Mapping[str, Any]:
    """The config's ``[server]`` table when the config supports one (``config.server``), else empty."""
    table = getattr(config, "server", None)
    return table if isinstance(table, Mapping) else {}


def gateway_keys(config: Any, environ: Mapping[str, str] | None = None) -> list[str]:
    """Gateway API keys: ``POLYCHAT_API_KEYS``, plus ``[server] api_keys`` / ``api_keys_env`` when the config has
    them."""
    env = environ if environ is not None else os.environ
    keys = parse_keys(env.get(KEYS_ENV))
    table = config_server_table(config)
    listed = table.get("api_keys")
    if isinstance(listed, (list, tuple)):
        keys.extend(str(k) for k in listed if k)
    env_name = table.get("api_keys_env")
    if isinstance(env_name, str) and env_name:
        keys.extend(parse_keys(env.get(env_name)))
    return list(dict.fromkeys(keys))


class KeyEnvError(ConfigError):
    """A named gateway key's variable is not set."""


def metrics_key(config: Any, environ: Mapping[str, str] | None = None) -> str | None:
    """The token of ``[server] metrics_key_env`` (None: not configured). Raises :class:`KeyEnvError` when the
    variable is unset or empty."""
    env_name = config_server_table(config).get("metrics_key_env")
    if not env_name:
        return None
    token = (environ if environ is not None else os.environ).get(env_name, "").strip()
    if not token:
        raise KeyEnvError(
            f"[server] metrics_key_env: the environment variable {env_name} is not set; set it to the bearer token "
            "that may read every key's usage on /metrics"
        )
    return token


def named_keys(config: Any, environ: Mapping[str, str] | None = None) -> dict[str, GatewayKeySpec]:
    """``[server.keys.NAME]`` keys: token (from each key's variable) → its spec. Raises :class:`KeyEnvError` when a
    variable is unset or empty, or two keys share a token."""
    env = environ if environ is not None else os.environ
    specs = config_server_table(config).get("keys", {})
    out: dict[str, GatewayKeySpec] = {}
    for spec in specs.values():
        token = env.get(spec.key_env, "").strip()
        if not token:
            raise KeyEnvError(
                f"gateway key {spec.name!r}: the environment variable {spec.key_env} (its key_env) is not set; "
                "set it to the bearer token clients of this key send"
            )
        if token in out:
            raise KeyEnvError(f"gateway keys {out[token].name!r} and {spec.name!r} have the same token")
        out[token] = spec
    return out


def merge_config(settings: ServerSettings, config: Any, environ: Mapping[str, str] | None = None) -> ServerSettings:
    """Fill settings the command line left at their defaults from the environment and the config's ``[server]``
    table, if any."""
    env = environ if environ is not None else os.environ
    table = config_server_table(config)
    if settings.redis_url is None:
        settings.redis_url = env.get(REDIS_URL_ENV) or table.get("redis_url") or None
    if isinstance(table.get("redis_failure"), str):
        settings.redis_failure = table["redis_failure"]
    if not table:
        return settings
    if not settings.cors_origins and isinstance(table.get("cors_origins"), (list, tuple)):
        settings.cors_origins = [str(o) for o in table["cors_origins"]]
    if not settings.allowed_hosts and isinstance(table.get("allowed_hosts"), (list, tuple)):
        settings.allowed_hosts = [str(h) for h in table["allowed_hosts"]]
    if settings.max_body_bytes == DEFAULT_MAX_BODY and isinstance(table.get("max_body_bytes"), int):
        settings.max_body_bytes = int(table["max_body_bytes"])
    if not settings.otel and table.get("otel") is True:
        settings.otel = True
    if settings.shutdown_timeout == DEFAULT_SHUTDOWN_TIMEOUT and isinstance(
        table.get("shutdown_timeout"), (int, float)
    ):
        settings.shutdown_timeout = float(table["shutdown_timeout"])
    if settings.max_connections == DEFAULT_MAX_CONNECTIONS and isinstance(table.get("max_connections"), int):
        settings.max_connections = int(table["max_connections"])
    if settings.header_timeout == DEFAULT_HEADER_TIMEOUT and isinstance(table.get("header_timeout"), (int, float)):
        settings.header_timeout = float(table["header_timeout"])
    if settings.max_header_bytes == DEFAULT_MAX_HEADER_BYTES and isinstance(table.get("max_header_bytes"), int):
        settings.max_header_bytes = int(table["max_header_bytes"])
    return settings
