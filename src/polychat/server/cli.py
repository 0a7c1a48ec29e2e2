"""``polychat serve``: run the OpenAI-compatible gateway and the chat page (registered in :mod:`polychat.cli`).

Importing this module is cheap (argparse only); Starlette and uvicorn load when the command runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Any

from .._redis import REDIS_URL_ENV
from ._settings import (
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_HOST,
    DEFAULT_MAX_BODY,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_HEADER_BYTES,
    DEFAULT_PORT,
    DEFAULT_SHUTDOWN_TIMEOUT,
    KEYS_ENV,
    SETTINGS_ENV,
    ServerSettings,
    UnsafeBindError,
    check_bind,
    gateway_keys,
    merge_config,
    metrics_key,
    named_keys,
)

if TYPE_CHECKING:
    from ..config import Config

_EPILOG = f"""\
examples:
  polychat serve                                   http://127.0.0.1:{DEFAULT_PORT}/ (chat page) and /v1 (API)
  polychat serve --config gateway.toml --port 9000
  {KEYS_ENV}=k1,k2 polychat serve --host 0.0.0.0   public: clients send 'Authorization: Bearer k1'

Clients: any OpenAI client with base_url=http://127.0.0.1:{DEFAULT_PORT}/v1; "model" picks a route alias, a model
from the config, or "provider:model"; with no config, the embedded model answers. The response header
x-polychat-provider names the provider that answered.

Tracing: --otel (or [server] otel = true) exports OpenTelemetry spans over OTLP to OTEL_EXPORTER_OTLP_ENDPOINT
(default http://localhost:4318); a caller's traceparent header becomes the parent of the request's spans.

Several workers or replicas: give them one Redis (--redis-url) and they share circuit breakers, the limits of
named keys ([server.keys.NAME] in the config) and usage; without it each process counts on its own.

Safe by default: binds 127.0.0.1; any other address needs API keys ({KEYS_ENV}) or --insecure. Clients cannot
choose upstream URLs, keys or proxies. Endpoints: POST /v1/chat/completions, GET /v1/models, GET /health,
GET /metrics (Prometheus), GET / (chat page). SIGTERM drains: in-flight requests get --shutdown-timeout seconds.
"""


def register(sub: Any) -> None:
    from ..cli._parser import add_command

    p = add_command(
        sub,
        "serve",
        help="run the OpenAI-compatible gateway and the chat page",
        description="Serve an OpenAI-compatible API (with failover over the configured providers) and a chat page.",
        epilog=_EPILOG,
        handler=cmd_serve,
    )
    _listening_options(p)
    _security_options(p)
    _connection_options(p)
    _operation_options(p)


def _listening_options(p: argparse.ArgumentParser) -> None:
    """Where the gateway binds, and how many processes serve it."""
    g = p.add_argument_group("listening")
    g.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default: {DEFAULT_HOST})")
    g.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default: {DEFAULT_PORT})")
    g.add_argument("--workers", type=int, default=1, metavar="N", help="worker processes (default: 1)")


def _security_options(p: argparse.ArgumentParser) -> None:
    """Who may call the gateway, from where, and with how large a body."""
    g = p.add_argument_group("security")
    g.add_argument("--insecure", action="store_true", help=f"allow a non-loopback --host without API keys ({KEYS_ENV})")
    g.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="a browser origin allowed to call the API cross-origin, e.g. https://app.example.com (repeatable)",
    )
    g.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a Host-header name accepted besides loopback names when no keys are set (repeatable)",
    )
    g.add_argument(
        "--max-body-size",
        type=int,
        default=DEFAULT_MAX_BODY,
        metavar="BYTES",
        help=f"largest request body accepted (default: {DEFAULT_MAX_BODY})",
    )


def _connection_options(p: argparse.ArgumentParser) -> None:
    """Bounds on connections, so clients that hold them open cannot starve the others."""
    g = p.add_argument_group("connection limits (against clients that hold connections without finishing a request)")
    g.add_argument(
        "--max-connections",
        type=int,
        default=DEFAULT_MAX_CONNECTIONS,
        metavar="N",
        help="connections kept at once per worker; beyond it the one waiting longest for its request headers is "
        f"closed (default: {DEFAULT_MAX_CONNECTIONS}; the open-file limit is raised to fit)",
    )
    g.add_argument(
        "--header-timeout",
        type=float,
        default=DEFAULT_HEADER_TIMEOUT,
        metavar="SECONDS",
        help="time a connection gets to send a request's headers, idle keep-alive included; then 408 and close "
        f"(default: {DEFAULT_HEADER_TIMEOUT:g})",
    )
    g.add_argument(
        "--max-header-size",
        type=int,
        default=DEFAULT_MAX_HEADER_BYTES,
        metavar="BYTES",
        help=f"largest request line + headers; above it 431 and close (default: {DEFAULT_MAX_HEADER_BYTES})",
    )


def _operation_options(p: argparse.ArgumentParser) -> None:
    """Shutdown, logging, tracing, and the state shared with other workers or replicas."""
    g = p.add_argument_group("operation")
    g.add_argument(
        "--shutdown-timeout",
        type=float,
        default=DEFAULT_SHUTDOWN_TIMEOUT,
        metavar="SECONDS",
        help=f"on SIGTERM, time in-flight requests get to finish (default: {DEFAULT_SHUTDOWN_TIMEOUT:g})",
    )
    g.add_argument("--no-access-log", action="store_true", help="do not log a line per request")
    g.add_argument(
        "--otel",
        action="store_true",
        help="export OpenTelemetry traces over OTLP, configured by the standard OTEL_* variables "
        "(OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_SERVICE_NAME...); needs pip install 'polychat[otel]'",
    )
    g = p.add_argument_group("shared state (several workers or replicas)")
    g.add_argument(
        "--redis-url",
        metavar="URL",
        help="share circuit breakers, key limits and usage through Redis, e.g. redis://127.0.0.1:6379/0 "
        "(default: $POLYCHAT_REDIS_URL, else [server] redis_url; none: each process keeps its own)",
    )


def settings_from_args(args: argparse.Namespace) -> ServerSettings:
    from ..cli import UsageError

    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be between 0 and 65535, got {args.port}")
    if args.workers < 1:
        raise UsageError(f"--workers must be at least 1, got {args.workers}")
    if args.max_body_size < 1:
        raise UsageError(f"--max-body-size must be at least 1, got {args.max_body_size}")
    if args.max_connections < 1:
        raise UsageError(f"--max-connections must be at least 1, got {args.max_connections}")
    if not args.header_timeout > 0:
        raise UsageError(f"--header-timeout must be > 0 seconds, got {args.header_timeout}")
    if args.max_header_size < 1024:
        raise UsageError(f"--max-header-size must be at least 1024 bytes, got {args.max_header_size}")
    if args.shutdown_timeout < 0:
        raise UsageError(f"--shutdown-timeout must be >= 0, got {args.shutdown_timeout}")
    if args.redis_url is not None:
        from .._redis import check_url
        from ..errors import ConfigError

        try:
            check_url(args.redis_url)
        except ConfigError as e:
            raise UsageError(f"--redis-url: {e}") from None
    for origin in args.cors_origin:
        if origin != "*" and "://" not in origin:
            raise UsageError(f"--cors-origin takes an origin such as https://app.example.com, got {origin!r}")
    return ServerSettings(
        host=args.host,
        port=args.port,
        config_path=args.config,
        workers=args.workers,
        insecure=args.insecure,
        max_body_bytes=args.max_body_size,
        cors_origins=list(args.cors_origin),
        allowed_hosts=list(args.allowed_host),
        shutdown_timeout=args.shutdown_timeout,
        max_connections=args.max_connections,
        header_timeout=args.header_timeout,
        max_header_bytes=args.max_header_size,
        access_log=not args.no_access_log,
        debug=bool(args.debug),
        otel=bool(args.otel),
        redis_url=args.redis_url or None,
    )


def cmd_serve(args: argparse.Namespace) -> int:
    """Check what a user can get wrong (config, keys, bind address, OTLP) before serving anything, bind, say where
    the gateway is, and run it."""
    from ..cli import EXIT_USAGE, UsageError, _load_config
    from ..errors import ConfigError

    settings = settings_from_args(args)
    config = _load_config(args)  # a config error stops us here, with the CLI's message (exit 2)
    settings = merge_config(settings, config)
    keys = gateway_keys(config)
    try:
        named = named_keys(config)
        metrics_key(config)
        check_bind(settings.host, have_keys=bool(keys or named), insecure=settings.insecure)
    except (UnsafeBindError, ConfigError) as e:
        raise UsageError(str(e)) from None
    try:
        import uvicorn  # noqa: F401 - only whether it is installed, before binding
    except ImportError:
        sys.stderr.write("polychat: error: the gateway needs Starlette and uvicorn: pip install 'polychat[server]'\n")
        return EXIT_USAGE

    from ._connlimits import fit_file_limit

    settings.max_connections = fit_file_limit(settings.max_connections)
    # Bind here, so the banner shows the real port (``--port 0`` picks a free one) and a taken port is one line.
    sock = _bind(settings.host, settings.port)
    port = sock.getsockname()[1]
    if settings.otel:
        from ._otel import OtelUnavailableError, exporter_class

        try:
            exporter_class()  # fail here, with a clear message, rather than in each worker
        except OtelUnavailableError as e:
            raise UsageError(str(e)) from None
    sys.stderr.write(_banner(settings, config, port, auth=len(keys) + len(named)))
    sys.stderr.flush()
    return _run(settings, config, sock, port)


def _banner(settings: ServerSettings, config: Config, port: int, *, auth: int) -> str:
    """The line ``serve`` prints first: where the page and the API are, then what a reader should know (auth,
    shared state, the config file, tracing)."""
    shown = f"[{settings.host}]" if ":" in settings.host else settings.host
    notes = [f"auth: {'on, ' + str(auth) + ' key(s)' if auth else 'off'}"]
    if settings.redis_url:
        from .._redact import redact_url

        notes.append(f"shared state: {redact_url(settings.redis_url)} (redis_failure = {settings.redis_failure})")
    elif settings.workers > 1:
        notes.append(f"no Redis: each of the {settings.workers} workers keeps its own breakers, limits and usage")
    # Named keys ([server.keys.NAME]) guard the gateway as plain ones do: only no key at all is insecure.
    if not auth and settings.insecure and not _loopback(settings.host):
        notes.append("INSECURE: no API keys on a public address")
    notes.append(f"config: {config.path or 'none'}")
    if settings.otel:
        notes.append("traces: OTLP")
    return f"polychat gateway: chat page http://{shown}:{port}/  API http://{shown}:{port}/v1  ({'; '.join(notes)})\n"


def _run(settings: ServerSettings, config: Config, sock: Any, port: int) -> int:
    """Serve until stopped: in this process on the socket bound already, or in ``--workers`` processes that build
    the app from the settings handed over in the environment."""
    import uvicorn

    from ..cli import EXIT_OK

    common: dict[str, Any] = {
        "host": settings.host,
        "port": port,
        "log_level": "debug" if settings.debug else "info",
        "access_log": settings.access_log,
        "server_header": False,
        "proxy_headers": False,
        "lifespan": "on",
        "http": "polychat.server._protocol:GuardedHTTPProtocol",  # the connection limits, in every worker
        # Backstop only: the app itself ends in-flight requests after shutdown_timeout (see _gateway.begin_drain).
        "timeout_graceful_shutdown": settings.shutdown_timeout + 5.0,
    }
    if settings.workers > 1:
        os.environ[SETTINGS_ENV] = settings.to_env()
        if settings.redis_url:
            os.environ[REDIS_URL_ENV] = settings.redis_url  # not in the settings JSON: it may hold a password
        # uvicorn binds for its workers itself: hand it the port (a real one, even for --port 0) and let go of ours.
        sock.close()
        uvicorn.run("polychat.server.app:app_from_env", factory=True, workers=settings.workers, **common)
        return EXIT_OK
    from .app import create_app

    app = create_app(settings, config)
    server = uvicorn.Server(uvicorn.Config(app, **common))
    server.run(sockets=[sock])
    if not server.started:
        return 1
    return EXIT_OK


def _bind(host: str, port: int) -> Any:
    """A listening socket on ``host:port`` (uvicorn's own options: SO_REUSEADDR, IPv6 when the host is one)."""
    import socket

    from ..cli import UsageError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise UsageError(
            f"cannot listen on {host}:{port}: {e.strerror or e} (pick another --port, or 0 for any free one)"
        ) from None
    sock.set_inheritable(True)
    return sock


def _loopback(host: str) -> bool:
    from ._settings import is_loopback

    return is_loopback(host)
