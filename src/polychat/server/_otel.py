"""The gateway's OpenTelemetry: ``--otel`` sets up OTLP export, and every API request gets a SERVER span.

:func:`configure` installs the SDK's tracer provider with an OTLP exporter configured the standard way, from the
``OTEL_*`` environment variables (``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``,
``..._HEADERS``, ``..._PROTOCOL``: ``http/protobuf`` by default, ``grpc`` when that exporter is installed;
``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER``). Each worker process runs it.

:class:`TraceLayer` wraps the ASGI app: when tracing is on (by ``--otel`` or by an application that embeds the
gateway and configured OpenTelemetry itself) a request to ``/v1/*`` becomes a ``{METHOD} {route}`` SERVER span whose
parent is the caller's ``traceparent`` (W3C Trace Context, via the globally configured propagator); polychat's
``chat {model}`` span and its attempts nest under it. Otherwise the layer is one dict lookup per request.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from .. import _tracing

log = logging.getLogger("polychat.server")

DEFAULT_SERVICE_NAME = "polychat-gateway"


class OtelUnavailableError(Exception):
    """``--otel`` without the OpenTelemetry SDK and OTLP exporter installed."""


def exporter_class() -> Any:
    """The OTLP span exporter the ``OTEL_*`` variables ask for; :class:`OtelUnavailableError` says what is missing."""
    try:
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError as e:
        raise OtelUnavailableError(
            f"--otel needs the OpenTelemetry SDK and OTLP exporter ({e.name} is missing): pip install 'polychat[otel]'"
        ) from None
    protocol = _protocol()
    if protocol not in ("", "grpc", "http/protobuf"):
        raise OtelUnavailableError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported: use http/protobuf or grpc"
        )
    try:
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError as e:
        extra = " opentelemetry-exporter-otlp-proto-grpc" if protocol == "grpc" else ""
        raise OtelUnavailableError(
            f"OTLP over {protocol or 'http/protobuf'} needs {e.name}: pip install 'polychat[otel]'{extra}"
        ) from None
    return OTLPSpanExporter


def _protocol() -> str:
    env = os.environ
    return (env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "").strip()


def configure() -> Any:
    """Install an SDK tracer provider exporting over OTLP; returns it (``force_flush()`` it at exit)."""
    OTLPSpanExporter = exporter_class()
    from opentelemetry import trace
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    protocol = _protocol()
    resource = Resource.create({} if os.environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: DEFAULT_SERVICE_NAME})
    provider: Any = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    current = trace.get_tracer_provider()
    if isinstance(current, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
        trace.set_tracer_provider(provider)
    else:  # the embedding application configured tracing already: keep its provider, add our exporter to it
        add = getattr(current, "add_span_processor", None)
        if add is None:
            raise OtelUnavailableError("a tracer provider is already installed and does not take span processors")
        add(BatchSpanProcessor(OTLPSpanExporter()))
        provider = current
    log.info("polychat: exporting traces over OTLP (%s)", protocol or "http/protobuf")
    return provider


class TraceLayer:
    """Outer ASGI layer: a SERVER span per ``/v1/*`` request, child of the caller's ``traceparent``."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        tracer = _tracing.tracer() if scope["type"] == "http" else None
        path = scope.get("path", "") if tracer is not None else ""
        if tracer is None or not path.startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        from opentelemetry import context, propagate
        from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context

        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        parent = propagate.extract(carrier)
        method = scope.get("method", "GET")
        # A route template, never the raw path (a client could otherwise mint span names without bound).
        route = "/v1/*"
        server = scope.get("server") or (None, None)
        attrs: dict[str, Any] = {"http.request.method": method, "url.path": path, "http.route": route}
        if server[0]:
            attrs["server.address"] = server[0]
            attrs["server.port"] = server[1]
        span = tracer.start_span(f"{method} {route}", context=parent, kind=SpanKind.SERVER, attributes=attrs)
        token = context.attach(set_span_in_context(span, parent))
        status: list[int] = []

        async def send_traced(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
                span.set_attribute("http.response.status_code", message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_traced)
            matched = getattr(scope.get("route"), "path", None)  # Starlette records the route it matched
            if isinstance(matched, str) and matched != "/v1/{rest:path}":
                span.update_name(f"{method} {matched}")
                span.set_attribute("http.route", matched)
        except BaseException as e:
            span.set_attribute("error.type", type(e).__name__)
            span.set_status(Status(StatusCode.ERROR, type(e).__name__))
            raise
        finally:
            if status and status[0] >= 500:
                span.set_attribute("error.type", str(status[0]))
                span.set_status(Status(StatusCode.ERROR))
            context.detach(token)
            span.end()
