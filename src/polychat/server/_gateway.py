"""The gateway's state, shared by every endpoint of one worker: config, client, keys, metrics, in-flight calls.

Routing: a request's ``model`` is resolved by :meth:`polychat.config.Config.resolve` — a route alias gives its
provider chain (with its failover policy), ``provider:model`` or a listed model gives that provider, anything else
goes to ``[defaults] provider`` or the default chain (remote providers whose credentials are set, then the embedded
model). Only providers the server's config (and the two built-ins) define can be reached: a client picks among
them by model name and never supplies a URL, key or proxy.

Shutdown: on SIGTERM/SIGINT the gateway drains — new chat requests get 503, in-flight ones get
``shutdown_timeout`` seconds to finish, then each is stopped: a stream ends with an error frame, a request still
waiting for its answer gets a 503. The signal hook wraps uvicorn's own handler, so this works with ``--workers``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from ..client import AsyncClient
from ..config import Config
from ..config._types import GatewayKeySpec
from ._auth import DENIED, KeyRing
from ._errors import HTTPError, Scrubber, make_error
from ._limits import Admission, Limiter, Refusal
from ._limits_memory import MemoryLimits
from ._metrics import Metrics, breaker_rows
from ._settings import ServerSettings, is_loopback

if TYPE_CHECKING:
    from ..errors import Attempt
    from ..providers.base import Provider

log = logging.getLogger("polychat.server")

#: The route label of requests whose model is not a name the config knows (keeps metric series bounded).
OTHER = "other"


class Call:
    """One chat request in flight: the task serving it and, once stopped by us, why."""

    __slots__ = ("done", "reason", "task")

    def __init__(self, task: asyncio.Task[Any] | None) -> None:
        self.task = task
        self.reason: str | None = None
        self.done = False

    def stop(self, reason: str) -> None:
        """Cancel the serving task (``reason``: "disconnect" or "shutdown"), unless it has finished."""
        if self.done or self.reason is not None or self.task is None:
            return
        self.reason = reason
        self.task.cancel()


class Gateway:
    """Everything the endpoints share. Built by :func:`polychat.server.app.create_app`."""

    def __init__(
        self,
        settings: ServerSettings,
        config: Config,
        keys: list[str],
        named: dict[str, GatewayKeySpec] | None = None,
        metrics_token: str | None = None,
    ) -> None:
        self.settings = settings
        self.config = config
        named = named or {}
        self.keys = KeyRing(keys, named)
        # With Redis, the breakers every worker and replica share; the client closes that store with itself.
        self.client = AsyncClient(**config.client_kwargs(), breaker_store=settings.redis_url or None)
        self.metrics = Metrics()
        #: ``[server] metrics_key_env``: the one key that sees every named key's usage on ``/metrics``.
        self.metrics_keys = KeyRing([metrics_token]) if metrics_token else None
        secrets = [*config.secrets(), *keys, *named, *([metrics_token] if metrics_token else [])]
        self.scrub = Scrubber([*secrets, *_url_secrets(settings.redis_url)])
        self.limiter = Limiter(
            {s.name: s for s in named.values()}, _limit_backend(settings), failure=settings.redis_failure
        )
        self.draining = False
        self.inflight: set[Call] = set()
        self.models = [msgspec.to_builtins(m) for m in config.model_list()]
        self.models_body = msgspec.json.encode({"object": "list", "data": self.models})
        self.known_models = frozenset(m["id"] for m in self.models) | frozenset(config.routes)
        allowed = {h.lower() for h in settings.allowed_hosts}
        #: Host-header names accepted besides loopback ones; None: any (keys are set, or --insecure on a public bind).
        self.allowed_hosts: frozenset[str] | None = (
            None if (self.keys or not is_loopback(settings.host)) else frozenset(allowed | {settings.host.lower()})
        )
        self.cors_origins = frozenset(o.rstrip("/") for o in settings.cors_origins)
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- request checks --------------------------------------------------------------------------------------

    def host_ok(self, host: bytes | None) -> bool:
        """DNS-rebinding guard: without keys, only loopback (or explicitly allowed) names may be in ``Host``."""
        if self.allowed_hosts is None:
            return True
        if not host:
            return False
        name = host.decode("latin-1").lower()
        if name.startswith("["):
            name = name[: name.find("]") + 1]
        else:
            name = name.rsplit(":", 1)[0] if name.count(":") == 1 else name
        return is_loopback(name) or name in self.allowed_hosts

    def check_api(self, host: bytes | None, origin: bytes | None, authorization: bytes | None) -> HTTPError | None:
        """Origin (cross-site requests from browsers) and key checks for ``/v1/*`` and ``/metrics``."""
        refused = self._origin_refusal(host, origin)
        if refused is not None:
            return refused
        if not self.keys.check(authorization):
            self.metrics.rejected.inc(("unauthorized",))
            message = (
                "Incorrect API key provided."
                if authorization
                else "You didn't provide an API key. Send it as 'Authorization: Bearer YOUR_KEY'."
            )
            return make_error(
                401, message, code="invalid_api_key", headers=[(b"www-authenticate", b'Bearer realm="polychat"')]
            )
        return None

    def _origin_refusal(self, host: bytes | None, origin: bytes | None) -> HTTPError | None:
        if origin is None or self._origin_ok(origin, host):
            return None
        self.metrics.rejected.inc(("origin",))
        return make_error(
            403,
            f"Cross-origin request from {origin.decode('latin-1')} refused: allow it with --cors-origin",
            type="permission_error",
            code="origin_not_allowed",
        )

    def metrics_view(
        self, host: bytes | None, origin: bytes | None, authorization: bytes | None
    ) -> HTTPError | frozenset[str] | None:
        """Which named keys' usage ``/metrics`` shows this caller: every key (None) to the metrics key
        (``[server] metrics_key_env``); to any other accepted key only its own (a plain key: none) — one team's
        usage is not another's business. The gateway's own figures are everyone's."""
        if self.metrics_keys is not None and self.metrics_keys.check(authorization):
            return self._origin_refusal(host, origin)
        refused = self.check_api(host, origin, authorization)
        if refused is not None:
            return refused
        spec = self.keys.match(authorization)
        return frozenset([spec.name]) if isinstance(spec, GatewayKeySpec) else frozenset()

    async def admit(
        self, authorization: bytes | None, model: Any, messages: Any, kwargs: dict[str, Any]
    ) -> Admission | Refusal | None:
        """The shared hook of every route that serves a model, after :meth:`check_api` passed: the presented key's
        allowlist and limits. An :class:`Admission` must be finished when the answer is over; a
        :class:`Refusal` is to be sent in the route's protocol (:func:`refusal_error` for OpenAI's); None: the
        key has nothing to account."""
        spec = self.keys.match(authorization)
        if spec is None or spec is DENIED:
            return None
        verdict = await self.limiter.admit(spec, model, messages, kwargs)
        if isinstance(verdict, Refusal):
            self.metrics.rejected.inc((verdict.code,))
        return verdict

    def _origin_ok(self, origin: bytes, host: bytes | None) -> bool:
        value = origin.decode("latin-1").rstrip("/")
        if value in self.cors_origins or "*" in self.cors_origins:
            return True
        if host is None or value == "null":
            return False
        _, sep, netloc = value.partition("://")
        if not sep:
            return False
        h = host.decode("latin-1").lower()
        netloc = netloc.lower()
        if netloc == h:
            return True
        # default ports: an Origin never carries :80 / :443, a Host header may
        scheme = value.partition("://")[0].lower()
        default = {"http": ":80", "https": ":443"}.get(scheme)
        return default is not None and (netloc + default == h or netloc == h + default)

    # -- routing and labels ------------------------------------------------------------------------------------

    def route(self, model: Any) -> tuple[Provider | None, Any]:
        """The provider (None: the default chain) and the model to ask it for."""
        if not isinstance(model, str):
            return None, model  # create() rejects it with the library's message
        provider, routed = self.config.resolve(model)
        return (provider if provider is not None else self.config.default_chain()), routed

    def unknown_model(self, model: Any, err: HTTPError) -> HTTPError:
        """The 404 for a model nobody here serves, listing this gateway's models (not only one provider's)."""
        listed = [m["id"] for m in self.models]
        shown = ", ".join(listed[:20]) + (f" and {len(listed) - 20} more" if len(listed) > 20 else "")
        message = (
            f"The model {model!r} does not exist on this gateway, or its provider refused it. "
            f"Models served here (GET /v1/models): {shown or 'none'}."
        )
        return make_error(404, message, param="model", code="model_not_found", headers=err.headers)

    def route_label(self, model: Any) -> str:
        return model if isinstance(model, str) and model in self.known_models else OTHER

    def first_choice(self, provider: Provider | None) -> str | None:
        """Name of the provider a request tries first (None when unknowable, e.g. a shuffled chain)."""
        p = provider if provider is not None else self.client.provider
        if p is None or getattr(p, "shuffle", False):
            return None
        members = p.members()
        return members[0].name if members else None

    # -- attempts: response header and metrics -------------------------------------------------------------------

    @staticmethod
    def attempts_header(attempts: list[Attempt], answering: str | None = None) -> tuple[bytes, bytes]:
        """``x-polychat-attempts``: every provider attempt of the call, in order, as ``provider=outcome``
        (``failed:ErrorClass[:status]`` for failures); ``answering`` (a stream still running) is added as ``ok``.
        Provider names come from the server's config, never from the client."""
        parts = []
        for a in attempts:
            what = a.outcome
            if a.error is not None:
                what += ":" + a.error_class + (f":{a.status_code}" if a.status_code is not None else "")
            if a.kind != "attempt":
                what += f" ({a.kind})"
            parts.append(f"{a.provider}={what}")
        if answering is not None:
            parts.append(f"{answering}=ok")
        return b"x-polychat-attempts", ", ".join(parts).encode("latin-1", "replace")

    def observe_attempts(self, attempts: list[Attempt]) -> None:
        """Count a finished call's attempts (successful calls too: a failover that worked is still a failure)."""
        m = self.metrics
        for a in attempts:
            m.attempts.inc((a.provider, a.outcome))
            if a.error is not None:
                m.failed_attempts.inc((a.provider, a.error_class))
            if a.ttft is not None:
                m.attempt_ttft.observe((a.provider,), a.ttft)

    def observe_usage(self, provider: str, usage: Any) -> None:
        if usage is None:
            return
        self.metrics.tokens.inc((provider, "input"), usage.prompt_tokens or 0)
        self.metrics.tokens.inc((provider, "output"), usage.completion_tokens or 0)

    # -- metrics --------------------------------------------------------------------------------------------------

    async def render_metrics(self, keys: frozenset[str] | None = None) -> str:
        """The exposition text, with the usage rows of the named ``keys`` only (None: every key)."""
        from ..routing.breaker import DEFAULT_BREAKER

        breaker = self.client.breaker or DEFAULT_BREAKER
        names = self._breaker_names()
        store = breaker.store
        items = store.items() if hasattr(store, "items") else []

        def name_of(key: str) -> str:
            return names.get(key) or self.scrub.client(key)

        usage = await self.limiter.usage_rows(keys)
        return self.metrics.render(breaker_rows(items, name_of, breaker.state), usage)

    def _breaker_names(self) -> dict[str, str]:
        out: dict[str, str] = {}
        providers: list[Provider] = []
        for name in self.config.specs:
            if self.config.unavailable(name) is not None:
                continue
            try:
                providers.append(self.config.provider(name))
            except Exception:  # a provider that cannot be built has no breaker either
                continue
        if self.client.provider is not None:
            providers.extend(self.client.provider.members())
        for p in providers:
            for m in p.members():
                out.setdefault(m.breaker_key, m.name)
        return out

    # -- shutdown -------------------------------------------------------------------------------------------------

    def install_signal_hooks(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start draining on SIGTERM/SIGINT, then let the server's own handler run (main thread only)."""
        self._loop = loop
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(sig)
            if not callable(previous):
                continue

            def handler(signum: int, frame: Any, previous: Callable[[int, Any], Any] = previous) -> None:
                loop.call_soon_threadsafe(self.begin_drain)
                previous(signum, frame)

            signal.signal(sig, handler)

    def begin_drain(self) -> None:
        if self.draining:
            return
        self.draining = True
        self.metrics.draining.set((), 1)
        timeout = self.settings.shutdown_timeout
        if self.inflight:
            log.warning(
                "polychat: shutting down; %d request(s) in flight get up to %.1fs to finish",
                len(self.inflight),
                timeout,
            )
        loop = self._loop or asyncio.get_running_loop()
        loop.call_later(timeout, self.stop_inflight)

    def stop_inflight(self) -> None:
        for call in list(self.inflight):
            call.stop("shutdown")

    async def aclose(self) -> None:
        await self.limiter.aclose(self.settings.shutdown_timeout)
        await self.client.close()


def refusal_error(refusal: Refusal) -> HTTPError:
    """A limit's refusal as OpenAI's error answer (429 with ``Retry-After``, 403, 503)."""
    headers: list[tuple[bytes, bytes]] = []
    if refusal.retry_after is not None:
        headers.append((b"retry-after", str(refusal.retry_after).encode()))
    if not refusal.retryable:
        headers.append((b"x-should-retry", b"false"))
    return make_error(refusal.status, refusal.message, type=refusal.type, code=refusal.code, headers=headers)


def _limit_backend(settings: ServerSettings) -> Any:
    if settings.redis_url:
        from ._limits_redis import RedisLimits

        return RedisLimits.from_url(settings.redis_url)
    return MemoryLimits()


def _url_secrets(url: str | None) -> list[str]:
    from ..config._config import url_passwords

    return url_passwords(url) if url else []
