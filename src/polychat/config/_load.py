"""Finding and reading the config file: where it is looked up, TOML errors with their line, and a warning when
a file holding a key is readable by others.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path

from ..errors import ConfigFileError
from ._config import Config

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

log = logging.getLogger("polychat")

CONFIG_ENV = "POLYCHAT_CONFIG"


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
