"""``polychat keys usage``: what each named gateway key (``[server.keys.NAME]``) has used, read from the Redis the
gateway replicas share — the global numbers, whichever replica served the requests.

Without Redis the counters live inside each gateway process; they are then on its ``/metrics`` instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._errors import EXIT_OK, UsageError
from ._options import _load_config
from ._parser import add_actions, add_command

if TYPE_CHECKING:
    from ..config._types import GatewayKeySpec
    from ..server._limits import KeyUsage

_EPILOG = """\
examples:
  polychat keys usage --redis-url redis://127.0.0.1:6379/0
  POLYCHAT_REDIS_URL=redis://127.0.0.1:6379/0 polychat keys usage --json

Columns: requests admitted; prompt, completion and total tokens settled; tokens charged against the budget
(settled usage, plus whole reservations of answers whose usage never came back); tokens reserved by requests in
flight; requests refused, by limit.
"""


def register_keys(sub: Any) -> None:
    p = add_command(
        sub,
        "keys",
        help="usage of the gateway's named keys (shared through Redis)",
        description="Inspect the gateway's named keys ([server.keys.NAME] in the config).",
        epilog=_EPILOG,
    )
    actions = add_actions(p)
    usage = add_command(
        actions,
        "usage",
        help="print each key's usage and limits",
        description="Print each named key's usage, as the gateways sharing one Redis counted it.",
        epilog=_EPILOG,
        handler=cmd_keys_usage,
    )
    usage.add_argument(
        "--redis-url", metavar="URL", help="the gateways' Redis (default: $POLYCHAT_REDIS_URL, else [server] redis_url)"
    )
    usage.add_argument("--json", action="store_true", help="print JSON instead of a table")


def cmd_keys_usage(args: argparse.Namespace) -> int:
    from .._redis import REDIS_URL_ENV, url_from_env

    config = _load_config(args)
    keys = config.server.get("keys", {})
    if not keys:
        raise UsageError("the config names no gateway keys: add [server.keys.NAME] tables (see the README)")
    url = args.redis_url or url_from_env() or config.server.get("redis_url")
    if not url:
        raise UsageError(
            f"no Redis to read from: give --redis-url or {REDIS_URL_ENV} (without Redis each gateway process "
            "counts on its own; see its /metrics)"
        )
    from ..config._config import url_passwords
    from ._term import _secrets

    _secrets.extend(url_passwords(url))
    rows = _read_usage(url, keys)
    if args.json:
        sys.stdout.write(json.dumps([_usage_object(spec, u) for spec, u in rows], indent=2) + "\n")
    else:
        sys.stdout.write(_usage_table(rows))
    return EXIT_OK


def _read_usage(url: str, keys: Mapping[str, GatewayKeySpec]) -> list[tuple[GatewayKeySpec, KeyUsage]]:
    """Each key's usage as the gateways sharing the Redis at ``url`` counted it; a Redis that cannot be read is an
    :class:`~polychat.APIConnectionError` naming it (its password left out)."""
    from redis.exceptions import RedisError

    from .._redact import redact_url
    from .._redis import sync_client
    from ..errors import APIConnectionError
    from ..server._limits_redis import usage_from_hash, usage_key

    client = sync_client(url)
    try:
        return [(spec, usage_from_hash(client.hgetall(usage_key(name)))) for name, spec in keys.items()]
    except RedisError as e:
        raise APIConnectionError(f"cannot read usage from Redis at {redact_url(url)}: {e}") from None
    finally:
        client.close()


def _usage_object(spec: GatewayKeySpec, u: KeyUsage) -> dict[str, Any]:
    """One key in ``--json``: its usage beside its limits."""
    return {
        "key": spec.name,
        "requests": u.requests,
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
        "budget_used": u.used,
        "budget_tokens": spec.budget_tokens,
        "reserved": u.reserved,
        "refused": dict(u.refused),
        "requests_per_minute": spec.requests_per_minute,
        "tokens_per_minute": spec.tokens_per_minute,
    }


def _usage_table(rows: list[tuple[GatewayKeySpec, KeyUsage]]) -> str:
    """One line a key, in aligned columns (those the epilog explains)."""
    header = ("key", "requests", "prompt", "completion", "total", "budget used", "reserved", "refused")
    table = [header]
    for spec, u in rows:
        budget = f"{u.used}/{spec.budget_tokens}" if spec.budget_tokens is not None else str(u.used)
        refused = ", ".join(f"{k} {v}" for k, v in sorted(u.refused.items())) or "-"
        table.append(
            (
                spec.name,
                str(u.requests),
                str(u.prompt_tokens),
                str(u.completion_tokens),
                str(u.total_tokens),
                budget,
                str(u.reserved),
                refused,
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    return "".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() + "\n" for row in table
    )
