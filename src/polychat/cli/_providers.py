"""``polychat providers [--check]``: what is known and configured, as a table or JSON; ``--check`` sends each
configured provider a one-token request.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import time
from typing import TYPE_CHECKING, Any

from ._errors import EXIT_FAILURE, EXIT_OK
from ._options import _load_config
from ._parser import add_command
from ._term import _color, _log, _scrub, _status

if TYPE_CHECKING:
    from ..client import Client
    from ..config import Config
    from ..config._types import ProviderSpec

_PROVIDERS_EPILOG = """\
examples:
  polychat providers                 what is known and configured (sends nothing)
  polychat providers --check         also send each configured provider a one-token request
                                     (exit code 1 when a check fails)
  polychat providers --json          machine-readable

Built in: "openai" (configured by OPENAI_API_KEY / OPENAI_BASE_URL) and "local" (the embedded model, offline).
Others come from [providers.NAME] and [routes.NAME] in the config file (see: polychat config path).
"""


def register_providers(sub: Any) -> None:
    p = add_command(
        sub,
        "providers",
        help="list providers and routes; --check probes them",
        description="List every known provider and route: type, whether it is configured, models, capabilities.",
        epilog=_PROVIDERS_EPILOG,
        handler=cmd_providers,
    )
    p.add_argument("--check", action="store_true", help="send each configured provider a tiny request (1 token)")
    p.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS", help="timeout per check (default 30)")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")


def _provider_rows(config: Config) -> list[dict[str, Any]]:
    """One row a provider (built-in presets only once their key is set) and one a route, as ``--json`` prints
    them."""
    from ..config._types import _ALWAYS_LISTED

    rows: list[dict[str, Any]] = []
    for name, spec in config.specs.items():
        reason = config.unavailable(name)
        if spec.builtin and reason is not None and name not in _ALWAYS_LISTED:
            continue  # one of the many built-in presets (groq, mistral...): listed once its key is set
        rows.append(_provider_row(config, name, spec, reason))
    for name, route in config.routes.items():
        reason = config.unavailable(name)
        rows.append(
            {
                "name": name,
                "type": "route",
                "builtin": False,
                "configured": reason is None,
                "reason": reason,
                "models": [f"{p}:{m}" if m else p for p, m in route.chain],
                "default_model": None,
                "capabilities": [],
            }
        )
    return rows


def _provider_row(config: Config, name: str, spec: ProviderSpec, reason: str | None) -> dict[str, Any]:
    """A provider's row: its models (declared, else its class's, else the default model of an instance built
    but not used) and capabilities; a class that cannot be loaded makes it unconfigured, saying why."""
    from ..errors import ConfigError

    caps: list[str] = []
    models = list(spec.models)
    try:
        cls = config.provider_class(name)
    except ConfigError as e:
        reason = reason or str(e)
    else:
        capabilities = cls.capabilities
        caps = [field for field in capabilities.__struct_fields__ if getattr(capabilities, field) is True]
        if not models:
            models = list(getattr(cls, "models", ()) or ())
        if not models and reason is None:
            with contextlib.suppress(Exception):  # built, not used: cheap, sends nothing
                default = config.provider(name).default_model
                models = [default] if default else []
    return {
        "name": name,
        "type": spec.type,
        "builtin": spec.builtin,
        "configured": reason is None,
        "reason": reason,
        "models": models,
        "default_model": spec.effective_default_model,
        "capabilities": caps,
    }


def _probe(client: Client, provider: Any, model: str, timeout: float) -> None:
    """The one-token request: one provider, no failover, no retries."""
    from ..errors import InvalidRequestError

    if not model and not provider.default_model:
        listed = client.models.list(provider=provider)
        if not listed.data:
            raise InvalidRequestError("no default model, and the server lists none", param="model")
        model = listed.data[0].id
    client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Say OK."}],
        max_tokens=1,
        provider=provider,
        timeout=timeout,
        deadline=timeout,
        allow_empty=True,
    )


def _check_one(config: Config, client: Client, name: str, timeout: float) -> dict[str, Any]:
    """Probe a provider — or each member of a route, so that a failing primary shows even when a fallback would
    have answered."""
    from ..errors import APIError, ConfigError, InvalidRequestError

    t0 = time.monotonic()
    failures: list[str] = []
    try:
        provider, model = config.resolve(None, name)
        assert provider is not None
        members = provider.members() if name in config.routes else [provider]
        for member in members:
            try:
                _probe(client, member, model if member is provider else "", timeout)
            except (APIError, InvalidRequestError) as e:
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                failures.append(f"{member.name}: {first}" if member is not provider else first)
    except ConfigError as e:
        failures.append(str(e).strip().splitlines()[0])
    seconds = round(time.monotonic() - t0, 3)
    return {"ok": not failures, "seconds": seconds, "error": _scrub("; ".join(failures)) if failures else None}


def cmd_providers(args: argparse.Namespace) -> int:
    config = _load_config(args)
    rows = _provider_rows(config)
    failed = _check_all(config, rows, args) if args.check else False
    if args.json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
    else:
        _print_table(rows, checked=args.check)
    return EXIT_FAILURE if failed else EXIT_OK


def _check_all(config: Config, rows: list[dict[str, Any]], args: argparse.Namespace) -> bool:
    """``--check``: probe each configured row, storing the outcome in its ``check`` (None: skipped); True if one
    failed."""
    from ..client import Client

    failed = False
    kwargs = {**config.client_kwargs(), "max_retries": 0}
    if not args.debug:
        _log.setLevel(logging.ERROR)  # failover chatter: each check's outcome is reported below
    with Client(**kwargs) as client:
        for row in rows:
            if not row["configured"]:
                row["check"] = None
                continue
            _status.show(f"checking {row['name']}…")
            row["check"] = _check_one(config, client, row["name"], args.timeout)
            _status.clear()
            failed = failed or not row["check"]["ok"]
    return failed


def _print_table(rows: list[dict[str, Any]], *, checked: bool) -> None:
    """The rows as aligned columns (colored on a terminal), then the error of each failed check."""
    color = _color(sys.stdout)

    def paint(text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if color else text

    table = [_cells(row, checked) for row in rows]
    header = ["NAME", "TYPE", "STATUS", *(["CHECK"] if checked else []), "MODELS", "CAPABILITIES"]
    widths = [max(len(header[i]), *(len(r[i][0]) for r in table)) for i in range(len(header))]
    out = sys.stdout
    out.write("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip() + "\n")
    for cells in table:
        parts = []
        for i, (text, code) in enumerate(cells):
            padded = text if i == len(cells) - 1 else text.ljust(widths[i])
            parts.append(paint(padded, code) if code else padded)
        out.write("  ".join(parts).rstrip() + "\n")
    errors = [(row["name"], row["check"]["error"]) for row in rows if row.get("check") and not row["check"]["ok"]]
    if errors:
        out.write("\nfailed checks:\n")
        for name, message in errors:
            out.write(f"  {name}: {message}\n")


def _cells(row: dict[str, Any], checked: bool) -> list[tuple[str, str]]:
    """One row's cells, each with its color code ("" for none)."""
    kind = row["type"] + (" (built in)" if row["builtin"] else "")
    status = ("ready", "32") if row["configured"] else (f"not configured: {row['reason']}", "33")
    cells = [(row["name"], ""), (kind, ""), status]
    if checked:
        check = row.get("check")
        if check is None:
            cells.append(("skipped", "2"))
        elif check["ok"]:
            cells.append((f"ok {check['seconds']:.2f}s", "32"))
        else:
            cells.append((f"FAILED {check['seconds']:.2f}s", "31"))
    models = row["models"]
    sep = " → " if row["type"] == "route" else ", "
    cells.append((sep.join(models) if models else "-", ""))
    cells.append((", ".join(row["capabilities"]) or "-", "2"))
    return cells
