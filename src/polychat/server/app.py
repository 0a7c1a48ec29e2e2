"""The gateway's ASGI app: Starlette for routing, the static page and the small endpoints; the chat endpoint is
plain ASGI (:mod:`._chat`).

Why Starlette and not FastAPI (measured in-process, one request through the app, 2-core machine): the same chat
handler costs 10.7 µs behind a Starlette route as a plain ASGI endpoint (15 µs with Starlette's Request/Response),
45 µs behind FastAPI, 63 µs with a pydantic request model — and importing FastAPI + uvicorn takes 250 ms and 43 MB
against 125 ms and 28 MB. Over HTTP both are far under the 1.5 ms budget (uvicorn's HTTP handling dominates at
~0.4 ms per round trip), but FastAPI buys nothing here: validation is polychat's own, and no OpenAPI schema is
wanted.

Endpoints: ``POST /v1/chat/completions``, ``GET /v1/models`` (and ``/v1/models/{id}``), ``GET /health``,
``GET /metrics`` (Prometheus text), ``GET /`` (the chat page) and ``GET /static/{name}`` (its script and
stylesheet, and the vendored marked + DOMPurify that render its markdown).

``create_app()`` builds the app from :class:`ServerSettings` (or, as a uvicorn factory for ``--workers``, from the
settings the parent put in the environment).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .._redact import redact_query, redact_text
from ..config import Config, load_config
from . import _connlimits
from ._chat import ChatEndpoint
from ._count_tokens import count_tokens
from ._endpoint import scan_headers, send_error
from ._errors import HTTPError, make_error
from ._gateway import Gateway
from ._messages import MessagesEndpoint
from ._otel import TraceLayer
from ._responses import ResponsesEndpoint
from ._settings import ServerSettings, gateway_keys, merge_config, metrics_key, named_keys

__all__ = ["app_from_env", "create_app"]

log = logging.getLogger("polychat.server")

STATIC_DIR = Path(__file__).parent / "static"
_STATIC_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    # vendored, unmodified but for the source-map comment (licences beside them: LICENSE.*.txt)
    "marked.umd.js": "text/javascript; charset=utf-8",
    "purify.min.js": "text/javascript; charset=utf-8",
    "LICENSE.marked.txt": "text/plain; charset=utf-8",
    "LICENSE.dompurify.txt": "text/plain; charset=utf-8",
}
#: The page loads only its own script and stylesheet and talks only to this server; model output is never HTML.
_PAGE_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cache-control": "no-cache",
}
_JSON_HEADERS = {"x-content-type-options": "nosniff", "cache-control": "no-store"}


class _Static:
    """The page's three files, read once; served with an ETag and the page's security headers."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, str, str]] = {}
        for name, media_type in _STATIC_TYPES.items():
            data = (STATIC_DIR / name).read_bytes()
            self.files[name] = (data, media_type, '"' + hashlib.sha256(data).hexdigest()[:16] + '"')

    def response(self, request: Request, name: str) -> Response:
        entry = self.files.get(name)
        if entry is None:
            return Response(b"Not Found", status_code=404, media_type="text/plain")
        data, media_type, etag = entry
        headers = {**_PAGE_HEADERS, "etag": etag}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(data, media_type=media_type, headers=headers)


def _json(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        body, status_code=status, media_type="application/json", headers={**_JSON_HEADERS, **(headers or {})}
    )


class _HostGuard:
    """Outermost layer: refuses requests whose ``Host`` is not a loopback (or allowed) name when no keys are set."""

    def __init__(self, app: Any, gateway: Gateway) -> None:
        self.app = app
        self.gw = self.gateway = gateway

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self.gw.allowed_hosts is not None:
            host = next((v for k, v in scope["headers"] if k == b"host"), None)
            if not self.gw.host_ok(host):
                self.gw.metrics.rejected.inc(("host",))
                err = make_error(
                    421,
                    "Invalid Host header: this gateway answers only to loopback names (see --allowed-host).",
                    code="invalid_host",
                )
                await send_error(send, err, close=True)
                return
        await self.app(scope, receive, send)


def _install_log_scrubbing(secrets: list[str]) -> None:
    """Secrets never reach a log line: a filter on every handler that polychat's and uvicorn's records pass (known
    secrets, and the value of any key-like query parameter, so a wrong key in ``?api_key=`` is not logged either)."""

    def clean(text: str) -> str:
        return redact_query(redact_text(text, secrets))

    class _Scrub(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            if record.name == "uvicorn.access" and isinstance(record.args, tuple):
                # uvicorn's access formatter unpacks the arguments (client, method, path, version, status): clean
                # them one by one instead of flattening the record.
                record.args = tuple(clean(a) if isinstance(a, str) else a for a in record.args)
                return True
            try:
                message = record.getMessage()
            except Exception:  # pragma: no cover - a broken record is the logging module's to report
                return True
            record.msg, record.args = clean(message), None
            if record.exc_info and not record.exc_text:
                record.exc_text = redact_text(logging.Formatter().formatException(record.exc_info), secrets)
            return True

    polychat_log = logging.getLogger("polychat")
    if not polychat_log.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        polychat_log.addHandler(handler)
        polychat_log.propagate = False
        if polychat_log.level == logging.NOTSET:
            polychat_log.setLevel(logging.WARNING)
    for name in ("", "polychat", "uvicorn", "uvicorn.error", "uvicorn.access"):
        for h in logging.getLogger(name).handlers:
            if not any(type(f).__name__ == "_Scrub" for f in h.filters):
                h.addFilter(_Scrub())


def create_app(settings: ServerSettings | None = None, config: Config | None = None) -> Any:
    """The gateway as an ASGI app. ``settings`` default to those in the environment (see :func:`app_from_env`);
    ``config`` defaults to :func:`polychat.config.load_config` of ``settings.config_path``."""
    settings = settings or ServerSettings.from_env()
    config = config if config is not None else load_config(settings.config_path)
    settings = merge_config(settings, config)
    gw = Gateway(settings, config, gateway_keys(config), named_keys(config), metrics_key(config))
    _install_log_scrubbing(list(gw.scrub.secrets))
    _connlimits.configure(
        _connlimits.Limits(settings.max_connections, settings.header_timeout, settings.max_header_bytes),
        lambda reason: gw.metrics.rejected.inc((reason,)),
    )
    tracer_provider = None
    if settings.otel:
        from ._otel import configure

        tracer_provider = configure()
    app = Starlette(routes=_Routes(gw).routes(), middleware=_cors(gw), lifespan=_lifespan(gw, tracer_provider))
    app.state.gateway = gw
    return _HostGuard(TraceLayer(app), gw)


class _Routes:
    """Every path: the protocol endpoints, and the small ones (models, health, metrics, the page) as Starlette
    handlers over the gateway."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.static = _Static()

    def routes(self) -> list[Route]:
        gw = self.gw
        return [
            Route("/v1/chat/completions", ChatEndpoint(gw)),
            Route("/v1/messages", MessagesEndpoint(gw)),
            Route("/v1/messages/count_tokens", self.count_tokens, methods=["POST"]),
            Route("/v1/responses", ResponsesEndpoint(gw)),
            Route("/v1/models", self.models),
            Route("/v1/models/{model:path}", self.model_detail),
            Route("/health", self.health),
            Route("/metrics", self.metrics),
            Route("/", self.index),
            Route("/static/{name}", self.static_file),
            Route("/v1/{rest:path}", self.not_found, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
        ]

    async def models(self, request: Request) -> Response:
        err = self._check(request)
        if err is not None:
            return err
        return _json(self.gw.models_body)

    async def model_detail(self, request: Request) -> Response:
        err = self._check(request)
        if err is not None:
            return err
        model_id = request.path_params["model"]
        for m in self.gw.models:
            if m["id"] == model_id:
                import msgspec

                return _json(msgspec.json.encode(m))
        body = make_error(404, f"The model '{model_id}' does not exist.", param="model", code="model_not_found").body
        return _json(body, 404)

    async def health(self, request: Request) -> Response:
        if self.gw.draining:
            return _json(b'{"status":"draining"}', 503)
        return _json(b'{"status":"ok"}')

    async def metrics(self, request: Request) -> Response:
        host, origin, authorization = _credentials(request)
        view = self.gw.metrics_view(host, origin, authorization)
        if isinstance(view, HTTPError):
            return _error_response(view)
        return Response(
            await self.gw.render_metrics(view),
            media_type="text/plain; version=0.0.4; charset=utf-8",
            headers={"cache-control": "no-store"},
        )

    async def count_tokens(self, request: Request) -> Response:
        return await count_tokens(self.gw, request)

    async def index(self, request: Request) -> Response:
        return self.static.response(request, "index.html")

    async def static_file(self, request: Request) -> Response:
        return self.static.response(request, request.path_params["name"])

    async def not_found(self, request: Request) -> Response:
        err = make_error(404, f"Unknown endpoint: {request.method} {request.url.path}", code="unknown_url")
        return _json(err.body, 404)

    def _check(self, request: Request) -> Response | None:
        err = self.gw.check_api(*_credentials(request))
        return None if err is None else _error_response(err)


def _credentials(request: Request) -> tuple[bytes | None, bytes | None, bytes | None]:
    """The Host and Origin headers, and the key presented as ``Authorization`` (or ``x-api-key``)."""
    host, origin, authorization, _ = scan_headers(request.scope["headers"])
    return host, origin, authorization


def _error_response(err: HTTPError) -> Response:
    return Response(
        err.body,
        status_code=err.status,
        media_type="application/json",
        headers={**_JSON_HEADERS, **{k.decode(): v.decode() for k, v in err.headers}},
    )


def _cors(gw: Gateway) -> list[Middleware]:
    """CORS for the configured origins only (none: no CORS layer, so browsers keep other sites out)."""
    if not gw.cors_origins:
        return []
    return [
        Middleware(
            CORSMiddleware,
            allow_origins=sorted(gw.cors_origins),
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["authorization", "content-type", "x-api-key", "anthropic-version", "anthropic-beta"],
            expose_headers=["x-polychat-provider", "x-polychat-attempts", "x-polychat-dropped"],
            max_age=600,
        )
    ]


def _lifespan(gw: Gateway, tracer_provider: Any) -> Callable[[Starlette], contextlib.AbstractAsyncContextManager[None]]:
    """Start-up (log scrubbing again, signal hooks) and shutdown (close the gateway, flush the traces)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Again now: uvicorn configures logging after the app is built in a single process, replacing the handlers
        # the filters were on (with --workers, the app is built after).
        _install_log_scrubbing(list(gw.scrub.secrets))
        gw.install_signal_hooks(asyncio.get_running_loop())
        try:
            yield
        finally:
            await gw.aclose()
            if tracer_provider is not None:
                tracer_provider.force_flush()

    return lifespan


def app_from_env() -> Any:
    """uvicorn factory for worker processes: settings from ``POLYCHAT_SERVE_SETTINGS``."""
    return create_app(ServerSettings.from_env())
