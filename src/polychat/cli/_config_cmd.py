"""``polychat config show|path``: where the config file is looked up, and the effective config (TOML or JSON)
with secrets hidden — including the small TOML writer that prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING, Any

from ._errors import EXIT_OK
from ._options import _load_config
from ._parser import add_actions, add_command
from ._term import _dim

if TYPE_CHECKING:
    from ..config import Config

_CONFIG_EPILOG = """\
examples:
  polychat config path               where the config file is looked up
  polychat config show               the effective config, API keys and proxy passwords hidden
  polychat config show --json

The file is found at --config PATH, else $POLYCHAT_CONFIG, else $XDG_CONFIG_HOME/polychat/config.toml
(~/.config/polychat/config.toml). A minimal one:

  [providers.work]
  type = "openai"                       # any OpenAI-compatible server
  base_url = "http://127.0.0.1:8080/v1"
  api_key_env = "WORK_KEY"              # the NAME of the variable holding the key
  models = ["gpt-4o-mini"]

  [routes.fast]                         # polychat chat --model fast ...
  chain = ["work:gpt-4o-mini", "local"] # try work, fall back to the embedded model

  [defaults]
  model = "fast"
"""


def register_config(sub: Any) -> None:
    p = add_command(
        sub,
        "config",
        help="show the effective config, or where it is read from",
        description="Inspect the polychat config file.",
        epilog=_CONFIG_EPILOG,
    )
    actions = add_actions(p)
    show = add_command(
        actions,
        "show",
        help="print the effective config (secrets hidden)",
        description="Print the effective config as TOML (or JSON), with API keys and proxy passwords hidden.",
        handler=cmd_config_show,
    )
    show.add_argument("--json", action="store_true", help="print JSON instead of TOML")
    add_command(
        actions,
        "path",
        help="print where the config file is looked up",
        description="Print the path of the config file polychat reads (it may not exist yet).",
        handler=cmd_config_path,
    )


def cmd_config_path(args: argparse.Namespace) -> int:
    from ..config import CONFIG_ENV, config_location

    location, how = config_location(args.config)
    sys.stdout.write(f"{location}\n")
    why = {"--config": "from --config", CONFIG_ENV: f"from ${CONFIG_ENV}", "default": "the default location"}[how]
    state = "exists" if location.is_file() else "does not exist: polychat runs with built-in defaults"
    if how != "default" and not location.is_file():
        state = "does not exist: polychat will stop with an error"
    sys.stderr.write(_dim(f"({why}; {state})", sys.stderr) + "\n")
    return EXIT_OK


def cmd_config_show(args: argparse.Namespace) -> int:
    from .._redact import redact_url
    from ..config import config_location

    config = _load_config(args)
    data = config.redacted()
    if args.json:
        sys.stdout.write(json.dumps({"path": config.path, **data}, indent=2) + "\n")
        return EXIT_OK
    out: list[str] = []
    if config.path:
        out.append(f"# polychat config: {config.path}")
    else:
        out.append(f"# no config file at {config_location(args.config)[0]}: built-in defaults")
    out.append("#")
    out.extend(f"# {line}" for line in _effective(config))
    for var in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy", "all_proxy"):
        if os.environ.get(var):
            out.append(f"# proxy from the environment: {var}={redact_url(os.environ[var])}")
    body = to_toml(data)
    sys.stdout.write("\n".join(out) + ("\n\n" + body if body else "\n"))
    return EXIT_OK


def _effective(config: Config) -> list[str]:
    """The settings a chat would run with, each with where it comes from (config file, environment, built in)."""
    from .. import _constants as C
    from .._failover import answer_timeout
    from ._chat import DEFAULT_MAX_TOKENS

    here = f"from {os.path.basename(config.path)}" if config.path else ""

    def source(configured: object) -> str:
        return here if configured is not None else "built in"

    rows: list[tuple[str, str, str]] = []
    if config.default_model is not None:
        rows.append(("model", config.default_model, here))
    else:
        rows.append(("model", "each provider's default model", "built in"))
    if config.default_provider is not None:
        # a chat without --provider goes there: the default chain would only mislead
        rows.append(("provider", config.default_provider, f"{here}; --provider overrides it"))
    else:
        chain = [m.name for m in config.default_chain().members()]
        why = "providers whose keys are set" if "Local" not in chain or len(chain) > 1 else "no key set: offline"
        rows.append(("default chain", " → ".join(chain), f"{why}; see: polychat providers"))
    if config.fallback is not None:
        rows.append(("fallback", config.fallback, here))
    timeout = f"{config.timeout:g}s per read" if config.timeout is not None else f"{C.READ_TIMEOUT:g}s per read"
    rows.append(("timeout", f"{timeout}, {C.CONNECT_TIMEOUT:g}s to connect", source(config.timeout)))
    for key in ("first_token_timeout", "idle_timeout", "deadline", "hedge_after"):
        value = config.client_kwargs().get(key)
        rows.append((key, f"{value:g}s" if value is not None else "none", source(value)))
    answer = config.client_kwargs().get("response_timeout")
    limit = answer_timeout(answer, config.client_kwargs().get("first_token_timeout"))
    why = f"non-stream, per attempt; {C.RESPONSE_TIMEOUT_FACTOR:g} × first_token_timeout, else {C.RESPONSE_TIMEOUT:g}s"
    rows.append(("response_timeout", f"{limit:g}s", here if answer is not None else why))
    retries = config.max_retries if config.max_retries is not None else C.DEFAULT_MAX_RETRIES
    rows.append(("max_retries", str(retries), source(config.max_retries)))
    rows.append(("chat --max-tokens", str(DEFAULT_MAX_TOKENS), "built in; 0 or none: no limit"))
    width = max(len(k) for k, _, _ in rows)
    return [f"{k.ljust(width)}  {v}" + (f"  ({w})" if w else "") for k, v, w in rows]


def to_toml(data: dict[str, Any]) -> str:
    """A small TOML writer for plain config data (tables, strings, numbers, booleans, lists)."""
    lines: list[str] = []

    def key(k: str) -> str:
        return k if k and all(c.isalnum() or c in "_-" for c in k) else json.dumps(k)

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{key(k)} = {value(x)}" for k, x in v.items()) + " }"
        return json.dumps(str(v), ensure_ascii=False)

    def table(path: list[str], t: dict[str, Any]) -> None:
        # Dicts become [sub.tables], except settings whose value is itself a table (proxy): those stay inline.
        scalars = [(k, v) for k, v in t.items() if not isinstance(v, dict) or k in _INLINE_TABLES]
        subtables = [(k, v) for k, v in t.items() if isinstance(v, dict) and k not in _INLINE_TABLES]
        if path and (scalars or not subtables):
            if lines:
                lines.append("")
            lines.append("[" + ".".join(key(p) for p in path) + "]")
        for k, v in scalars:
            lines.append(f"{key(k)} = {value(v)}")
        for k, v in subtables:
            table([*path, k], v)

    table([], data)
    return "\n".join(lines) + ("\n" if lines else "")


_INLINE_TABLES = frozenset({"proxy"})
