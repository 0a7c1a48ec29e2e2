"""What ``--config`` and ``--proxy`` / ``--no-proxy`` turn into, with every secret they bring noted for scrubbing.

Shared by the subcommands (``polychat serve`` too), so each loads the config the same way.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from typing import TYPE_CHECKING, Any

from ._term import _secrets

if TYPE_CHECKING:
    from ..config import Config


def _load_config(args: argparse.Namespace) -> Config:
    from ..config import load_config

    config = load_config(getattr(args, "config", None))
    _secrets.extend(config.secrets())
    _secrets.extend(_env_proxy_passwords())
    return config


def _env_proxy_passwords() -> list[str]:
    from urllib.parse import unquote, urlsplit

    out: list[str] = []
    for var in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy", "all_proxy"):
        with contextlib.suppress(ValueError):
            password = urlsplit(os.environ.get(var, "")).password
            if password:
                out += [password, unquote(password)]
    return out


def _parse_proxy_option(args: argparse.Namespace) -> Any:
    """``--proxy URL`` / ``--no-proxy`` as a per-call proxy (it wins over the config's), or None."""
    from .._proxy import parse_proxy
    from ..config import proxy_passwords

    if getattr(args, "no_proxy", False):
        return False
    if getattr(args, "proxy", None) is None:
        return None
    proxy = parse_proxy(args.proxy, "--proxy")
    _secrets.extend(proxy_passwords(proxy))
    return proxy
