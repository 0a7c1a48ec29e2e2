"""Checking a parsed config file: types, unknown keys, names, references between tables — each error naming
the file, the line and the dotted key (:func:`find_line` recovers lines, which tomllib does not give).
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from typing import Any

from .._failover import FailoverPolicy
from .._proxy import ProxyConfig, parse_proxy
from .._redact import redact_url
from ..errors import ConfigError, ConfigFileError
from ._types import (
    _BUILTINS,
    _DEFAULTS_KEYS,
    _GATEWAY_KEY_KEYS,
    _HTTP_KEYS,
    _ROUTE_KEYS,
    _SERVER_KEYS,
    _TOP_KEYS,
    REDIS_FAILURE_MODES,
    GatewayKeySpec,
    ProviderSpec,
    ProviderType,
    RouteSpec,
    provider_type,
    provider_types,
)

_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


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

    def connection(self, key: str, value: Any, dotted: tuple[str, ...], out: dict[str, Any]) -> bool:
        """``timeout`` and ``proxy``, which ``[defaults]`` and a provider take alike, checked into ``out``; False
        for any other key."""
        if key == "timeout":
            out[key] = self.seconds(value, dotted)
        elif key == "proxy":
            out["proxy_config"] = self.proxy(value, dotted)
            out[key] = value
        else:
            return False
        return True

    def proxy(self, value: Any, dotted: tuple[str, ...]) -> ProxyConfig | None:
        if value is True:
            raise self.error(dotted, "must be a proxy URL, a table {http, https, all, no_proxy}, or false")
        try:
            return parse_proxy(value, "proxy")
        except ConfigError as e:
            raise self.error(dotted, str(e).removeprefix("proxy: ")) from None

    def policy(self, table: Mapping[str, Any], dotted: tuple[str, ...]) -> FailoverPolicy:
        """The failover switches ``table`` sets (its other keys are checked elsewhere)."""
        return FailoverPolicy.checked(table, lambda key, bad: self.error((*dotted, key), bad))

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


def _check_server(doc: dict[str, Any], c: _Checker) -> dict[str, Any]:
    """``[server]``: the gateway's settings (see ``polychat serve --help``); keys like providers' keys."""
    table = c.table(doc.get("server", {}), ("server",))
    c.keys(table, _SERVER_KEYS, ("server",))
    out: dict[str, Any] = {}
    for key, value in table.items():
        where = ("server", key)
        if key in ("api_keys_env", "metrics_key_env"):
            out[key] = c.string(value, where)
        elif key in ("api_keys", "cors_origins", "allowed_hosts"):
            out[key] = list(c.strings(value, where))
        elif key in ("allow_plaintext_key", "otel"):
            out[key] = c.boolean(value, where)
        elif key in ("max_body_bytes", "max_connections", "max_header_bytes"):
            out[key] = c.count(value, where)
            if out[key] < 1:
                raise c.error(where, "must be a whole number >= 1")
        elif key in ("shutdown_timeout", "header_timeout"):
            out[key] = c.seconds(value, where)
        elif key == "redis_url":
            url = c.string(value, where)
            if not re.match(r"^(redis|rediss|unix)://", url):
                raise c.error(where, f"must be a redis://, rediss:// or unix:// URL, got {redact_url(url)!r}")
            out[key] = url
        elif key == "redis_failure":
            mode = c.string(value, where)
            if mode not in REDIS_FAILURE_MODES:
                raise c.error(where, f"must be one of {', '.join(map(repr, REDIS_FAILURE_MODES))}, got {mode!r}")
            out[key] = mode
        elif key == "keys":
            out[key] = _check_gateway_keys(value, c)
    if out.get("api_keys") and not out.get("allow_plaintext_key"):
        raise c.error(
            ("server", "api_keys"),
            "gateway keys in the config file are refused: put them in an environment variable and write "
            'api_keys_env = "POLYCHAT_GATEWAY_KEYS" (or set allow_plaintext_key = true)',
        )
    return out


def _check_gateway_keys(value: Any, c: _Checker) -> dict[str, GatewayKeySpec]:
    """``[server.keys.NAME]`` tables: each key's token comes from an environment variable, never from the file."""
    base = ("server", "keys")
    out: dict[str, GatewayKeySpec] = {}
    for name, raw in c.table(value, base).items():
        where = (*base, name)
        c.name(name, where, "key")
        table = c.table(raw, where)
        c.keys(table, _GATEWAY_KEY_KEYS, where)
        if "key_env" not in table:
            raise c.error(
                where, "missing key 'key_env' (the NAME of the variable holding the token, e.g. \"TEAM_A_KEY\")"
            )
        env = _key_env_name(table["key_env"], (*where, "key_env"), c, holding="token", like="TEAM_A_KEY")
        limits: dict[str, int] = {}
        for limit in ("requests_per_minute", "tokens_per_minute", "budget_tokens"):
            if limit in table:
                n = c.count(table[limit], (*where, limit))
                if n < 1:
                    raise c.error((*where, limit), "must be a whole number >= 1 (leave it out for no limit)")
                limits[limit] = n
        models = c.strings(table["models"], (*where, "models")) if "models" in table else None
        out[name] = GatewayKeySpec(name=name, key_env=env, models=models, **limits)
    return out


def _check(doc: dict[str, Any], c: _Checker) -> tuple[dict[str, Any], dict[str, ProviderSpec], dict[str, RouteSpec]]:
    c.keys(doc, _TOP_KEYS, ())
    defaults = _check_defaults(doc, c)
    raw_providers = c.table(doc.get("providers", {}), ("providers",))
    providers = {name: _check_provider(name, raw, c) for name, raw in raw_providers.items()}
    known = {**_BUILTINS, **providers}
    raw_routes = c.table(doc.get("routes", {}), ("routes",))
    routes = {name: _check_route(name, raw, known, c) for name, raw in raw_routes.items()}
    for key in ("provider", "fallback"):
        chosen: str | None = defaults.get(key)
        if chosen is None:
            continue
        name = chosen.partition(":")[0] if key == "fallback" else chosen  # a fallback may be "provider:model"
        if name not in known and chosen not in routes:
            raise c.error(
                ("defaults", key),
                f"{chosen!r} is neither a provider nor a route (known: {', '.join([*known, *routes])})",
            )
    return defaults, providers, routes


def _check_defaults(doc: dict[str, Any], c: _Checker) -> dict[str, Any]:
    """``[defaults]``, checked."""
    defaults: dict[str, Any] = {}
    raw_defaults = c.table(doc.get("defaults", {}), ("defaults",))
    c.keys(raw_defaults, _DEFAULTS_KEYS, ("defaults",))
    defaults.update(c.policy(raw_defaults, ("defaults",)).set_values())
    for key, value in raw_defaults.items():
        where: tuple[str, ...] = ("defaults", key)
        if c.connection(key, value, where, defaults):
            continue
        if key in ("model", "provider", "fallback"):
            defaults[key] = c.string(value, where)
        elif key == "max_retries":
            defaults[key] = c.count(value, where)
    return defaults


def _check_provider(name: str, raw: Any, c: _Checker) -> ProviderSpec:
    """``[providers.NAME]``, checked."""
    base = ("providers", name)
    c.name(name, base, "provider")
    table = c.table(raw, base)
    ptype_name, ptype = _provider_type(table, base, c)
    for key in table:
        if key not in ptype.keys and key in _HTTP_KEYS:
            raise c.error((*base, key), f"not used by providers of type {ptype_name!r}")
    c.keys(table, ptype.keys, base)
    fields: dict[str, Any] = {"name": name, "type": ptype_name}
    for key, value in table.items():
        where = (*base, key)
        if c.connection(key, value, where, fields):
            continue
        if key in ("base_url", "default_model", "api_key"):
            fields[key] = c.string(value, where)
        elif key == "api_key_env":
            fields[key] = _key_env_name(value, where, c)
        elif key == "allow_plaintext_key":
            fields[key] = c.boolean(value, where)
        elif key == "models":
            fields[key] = c.strings(value, where)
        elif key in ptype.options:
            fields.setdefault("options", {})[key] = _provider_option(ptype.options[key], value, where, c)
    if "base_url" in fields:
        url = fields["base_url"]
        if not re.match(r"^https?://[^/\s]+", url):
            raise c.error((*base, "base_url"), f"must be an http:// or https:// URL, got {redact_url(url)!r}")
    if "api_key" in fields:
        _check_plaintext_key(name, fields, c)
    return ProviderSpec(**fields)


def _provider_type(table: Mapping[str, Any], base: tuple[str, ...], c: _Checker) -> tuple[str, ProviderType]:
    """A provider's ``type``: its name and row (a built-in type or an installed plugin); an unknown name gets a
    did-you-mean and the list of known types."""
    if "type" not in table:
        raise c.error(base, f"missing key 'type' (one of: {', '.join(provider_types())})")
    ptype_name = c.string(table["type"], (*base, "type"))
    try:
        ptype = provider_type(ptype_name)
    except ConfigError as e:  # an installed plugin that cannot be loaded
        raise c.error((*base, "type"), str(e)) from e
    if ptype is None:
        types = provider_types()
        hint = difflib.get_close_matches(ptype_name, types, n=1)
        also = f"; did you mean {hint[0]!r}?" if hint else ""
        raise c.error((*base, "type"), f"unknown provider type {ptype_name!r}{also} (known: {', '.join(types)})")
    return ptype_name, ptype


def _key_env_name(
    value: Any, where: tuple[str, ...], c: _Checker, *, holding: str = "key", like: str = "WORK_API_KEY"
) -> str:
    """``api_key_env`` / ``key_env``: the name of a variable. Anything else (a pasted secret) is refused without
    echoing it."""
    env = c.string(value, where)
    if not _ENV_NAME_RE.match(env):
        raise c.error(
            where,
            f"must be the NAME of an environment variable holding the {holding} (like {like}), "
            f"not the {holding} itself",
        )
    return env


def _provider_option(kind: str, value: Any, where: tuple[str, ...], c: _Checker) -> Any:
    """A key handed to the provider's constructor as it is, checked by its kind (see :class:`ProviderType`)."""
    if kind == "count":
        option: Any = c.count(value, where)
        if option < 1:
            raise c.error(where, "must be a whole number >= 1")
        return option
    option = c.string(value, where)
    return os.path.expanduser(option) if kind == "path" else option


def _check_plaintext_key(name: str, fields: Mapping[str, Any], c: _Checker) -> None:
    """An ``api_key`` written in the file: refused unless ``allow_plaintext_key`` says the user means it (the
    error suggests the variable to use instead), and never beside ``api_key_env``."""
    where = ("providers", name, "api_key")
    if not fields.get("allow_plaintext_key"):
        env_name = re.sub(r"[^A-Z0-9]", "_", name.upper()) + "_API_KEY"
        raise c.error(
            where,
            f"an API key in the config file is refused: put it in an environment variable and write "
            f'api_key_env = "{env_name}" (the variable\'s name), or, if you really want the key in '
            f"this file, add allow_plaintext_key = true",
        )
    if "api_key_env" in fields:
        raise c.error(where, "set either api_key_env or api_key, not both")


def _check_route(name: str, raw: Any, known: Mapping[str, ProviderSpec], c: _Checker) -> RouteSpec:
    """``[routes.NAME]``, checked against the providers ``known`` (declared and built in)."""
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
                f"{entry!r} names provider {pname!r}, which is not declared; {also}known providers: {', '.join(known)}",
            )
        target = known[pname]
        # (built-in providers' classes have default models of their own)
        if not model and target.type != "local" and not target.builtin and not target.effective_default_model:
            raise c.error(
                (*base, "chain"),
                f"{entry!r}: provider {pname!r} has no default model; write '{pname}:MODEL'",
            )
        chain.append((pname, model))
    return RouteSpec(
        name=name,
        chain=tuple(chain),
        max_retries=c.count(table["max_retries"], (*base, "max_retries")) if "max_retries" in table else None,
        shuffle=c.boolean(table["shuffle"], (*base, "shuffle")) if "shuffle" in table else False,
        policy=c.policy(table, base),
    )
