"""Third-party providers as plugins: entry points of the group ``polychat.providers``, loaded lazily.

A package declares its provider in its own ``pyproject.toml``::

    [project.entry-points."polychat.providers"]
    acme = "acme_polychat:AcmeChat"

The entry point's name is the provider's name (``registry.provider("acme")``, a config file's ``type = "acme"``);
its object must be a :class:`~polychat.providers.base.Provider` subclass. Discovery reads installed packages'
metadata only when a name is looked up (never at ``import polychat``), and a plugin's module is imported only when
that plugin is used. A plugin that fails to import, or is not a provider class, raises :class:`PluginError` naming
the plugin, the entry point and the distribution, with the original exception as its cause. Names of built-in
providers cannot be taken over by a plugin; when two distributions claim one name, the first found is used and a
warning is logged.
"""

from __future__ import annotations

import logging
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING

from ..errors import ConfigError, PluginError

if TYPE_CHECKING:
    from .base import Provider

GROUP = "polychat.providers"
log = logging.getLogger("polychat")

_cache: dict[str, EntryPoint] | None = None
_loaded: dict[str, type[Provider]] = {}


def available(*, refresh: bool = False) -> dict[str, EntryPoint]:
    """Installed provider plugins by name (entry points, not yet imported). Cached; ``refresh`` rereads."""
    global _cache
    if _cache is None or refresh:
        found: dict[str, EntryPoint] = {}
        for ep in entry_points(group=GROUP):
            if ep.name in found:
                log.warning(
                    "polychat: provider plugin name %r is claimed twice (%s and %s); using the first",
                    ep.name,
                    found[ep.name].value,
                    ep.value,
                )
                continue
            found[ep.name] = ep
        _cache = found
        if refresh:
            _loaded.clear()
    return _cache


def _origin(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    name = getattr(dist, "name", None) or getattr(getattr(dist, "metadata", None), "get", lambda _k: None)("Name")
    return f"entry point {ep.value!r}" + (f" of distribution {name!r}" if name else "")


def load(name: str) -> type[Provider]:
    """The provider class of plugin ``name``, imported on first use."""
    from .base import Provider

    cls = _loaded.get(name)
    if cls is not None:
        return cls
    ep = available().get(name)
    if ep is None:
        raise ConfigError(f"no provider plugin named {name!r} is installed (entry point group {GROUP!r})")
    try:
        obj = ep.load()
    except Exception as e:
        raise PluginError(f"provider plugin {name!r} ({_origin(ep)}) failed to load: {type(e).__name__}: {e}") from e
    if not (isinstance(obj, type) and issubclass(obj, Provider)):
        raise PluginError(f"provider plugin {name!r} ({_origin(ep)}) is {obj!r}, not a polychat Provider subclass")
    _loaded[name] = obj
    return obj
