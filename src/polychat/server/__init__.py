"""The OpenAI-compatible gateway (``polychat serve``) and its static chat page.

``import polychat.server`` is cheap: Starlette and uvicorn load only when an app is built or served. Pieces:

* :mod:`.app` — ``create_app()``: the Starlette app (routes, static page, health, metrics, models) and its lifespan;
* :mod:`._chat` — ``POST /v1/chat/completions``, the hot path, a plain ASGI endpoint;
* :mod:`._settings` — :class:`ServerSettings` and the bind-safety rule; :mod:`._auth` — gateway API keys;
* :mod:`._limits` — named keys' allowlists and exact limits (in the process), :mod:`._limits_redis` — the same in
  Redis, shared by workers and replicas;
* :mod:`._errors` — polychat exceptions → HTTP status + OpenAI error body; :mod:`._sse` — SSE frames;
* :mod:`._metrics` — Prometheus text exposition, hand-written; :mod:`.cli` — the ``serve`` subcommand.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["ServerSettings", "create_app"]

if TYPE_CHECKING:
    from ._settings import ServerSettings
    from .app import create_app


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "ServerSettings":
        from ._settings import ServerSettings

        return ServerSettings
    raise AttributeError(f"module 'polychat.server' has no attribute {name!r}")
