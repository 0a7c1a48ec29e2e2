"""Per-key limits of the gateway: model allowlists, requests and tokens per minute, token budgets — exact.

Why reservations: a limit checked before the call and counted after it lets every concurrent request through
while the counter still looks low (LiteLLM's overspent budgets). Here a request first *reserves* its worst case —
an upper bound of its prompt plus ``max_tokens`` (times ``n``) — in one atomic step that checks every limit of its
key; after the call the reservation is *settled* to the real usage the upstream reported (or kept whole when no
usage came back, e.g. a stream the client abandoned), or *refunded* when nothing was served. Concurrent requests
can therefore never overshoot, across any number of workers and replicas sharing the same backend.

* The prompt bound counts UTF-8 bytes: byte-level BPE tokenizers never make more tokens than bytes, and the JSON
  framing pays for chat-template tokens. It is generous; settling gives the difference back at once.
* A key with a token limit and a request without ``max_tokens`` gets ``max_tokens`` set to what it reserved
  (:data:`DEFAULT_COMPLETION_RESERVE`, or less when the limit is smaller): the upstream then cannot exceed it.
* Windows slide (the last 60 s, not calendar minutes), so no boundary lets twice the limit through.

Backends: :class:`polychat.server._limits_memory.MemoryLimits` (one process; what ``--workers N`` without Redis
gets: N separate counters) and :class:`polychat.server._limits_redis.RedisLimits` (Lua scripts, one round trip
per step, shared by every process on the same Redis). A request costs one round trip on its path: its settlement
rides on the key's next reservation (see :class:`Limiter`). Both implement :class:`LimitBackend`; the tests run the
same cases against each.

:class:`Limiter` is the front the endpoints call (:meth:`Limiter.admit` before a model call, then
:meth:`Admission.finish`); any route that serves a model goes through it, so limits cover all of them.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from ..config._types import GatewayKeySpec
from ._limits_backend import (
    ADMITTED,
    LEASE_MS,
    WINDOW_MS,
    BackendUnavailable,
    KeyUsage,
    LimitBackend,
    Settlement,
    Verdict,
)
from ._settlements import SettlementQueue

__all__ = [  # the backend contract is re-exported: callers of the limits need one import
    "ADMITTED",
    "DEFAULT_COMPLETION_RESERVE",
    "LEASE_MS",
    "WINDOW_MS",
    "Admission",
    "BackendUnavailable",
    "KeyUsage",
    "LimitBackend",
    "Limiter",
    "Refusal",
    "Settlement",
    "Verdict",
    "prompt_bound",
    "refusal",
]

log = logging.getLogger("polychat.server")

#: ``max_tokens`` given to requests of token-limited keys that did not set one (their reservation).
DEFAULT_COMPLETION_RESERVE = 4096
#: Retry-After (seconds) sent when a budget is spent: it will not come back unless the operator raises it.
BUDGET_RETRY_AFTER = 3600
_encode = msgspec.json.encode


# -- the request side ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    """A request a limit refused: the HTTP status, OpenAI-style ``code`` and ``type``, a message, and the
    ``Retry-After`` seconds (None: none sent) — formatted by each endpoint in its client's protocol."""

    status: int
    code: str
    message: str
    type: str = "rate_limit_error"
    retry_after: int | None = None
    #: False when waiting will not help (the openai client then does not retry: ``x-should-retry: false``).
    retryable: bool = True


def prompt_bound(messages: Any, kwargs: Mapping[str, Any]) -> int:
    """An upper bound of the prompt's tokens: the UTF-8 bytes of the messages (and tools) as JSON."""
    size = len(_encode(messages))
    for name in ("tools", "functions", "response_format"):
        value = kwargs.get(name)
        if value is not None:
            size += len(_encode(value))
    return size


def _completion_cap(kwargs: Mapping[str, Any]) -> int | None:
    for name in ("max_completion_tokens", "max_tokens"):
        value = kwargs.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


_ids = itertools.count()
_ID_PREFIX = f"{os.getpid():x}-{time.time_ns():x}-"


def _new_id() -> str:
    return f"{_ID_PREFIX}{next(_ids):x}"


class Admission:
    """A request let through. An endpoint calls :meth:`prepare_stream` before a streamed call, passes each chunk
    through :meth:`count` and, when it carries usage, :meth:`observe` (or sets :attr:`usage` from a completion),
    and calls :meth:`finish` when the request is over, however it ends (in a ``finally``)."""

    __slots__ = (
        "_done",
        "_ended",
        "_own_usage",
        "_streamed",
        "choices",
        "limiter",
        "offline",
        "prompt",
        "reserved",
        "rid",
        "spec",
        "usage",
    )

    def __init__(
        self,
        limiter: Limiter,
        spec: GatewayKeySpec,
        rid: str,
        reserved: int,
        offline: bool,
        *,
        prompt: int = 0,
        choices: int = 1,
    ) -> None:
        self.limiter = limiter
        self.spec = spec
        self.rid = rid
        self.reserved = reserved
        #: Admitted without the backend (it was down, ``redis_failure = "open"``): usage is recorded later.
        self.offline = offline
        #: The prompt's part of the reservation (its bound, see :func:`prompt_bound`) and the answers asked for.
        self.prompt = prompt
        self.choices = choices
        #: The usage the upstream reported (OpenAI's usage object); None: unknown, see :meth:`finish`.
        self.usage: Any = None
        self._own_usage = False
        self._done = False
        self._streamed = 0  # chunks of the stream that carried an answer's token
        self._ended = 0  # answers of the stream that finished (a finish_reason came)

    def prepare_stream(self, kwargs: dict[str, Any]) -> None:
        """Ask the upstream for the stream's usage (``stream_options.include_usage``), to settle with the real count;
        the usage chunk is then the gateway's, not the client's (:meth:`observe` drops it), unless the client
        asked for it too."""
        if self.reserved <= 0:
            return
        options = kwargs.get("stream_options")
        if options is None or (isinstance(options, dict) and not options.get("include_usage")):
            kwargs["stream_options"] = {**(options or {}), "include_usage": True}
            self._own_usage = True

    def observe(self, chunk: Any) -> Any:
        """Note a stream chunk's usage; returns the chunk to send (None: it was only the gateway's usage)."""
        usage = getattr(chunk, "usage", None)
        if usage is None:
            return chunk
        self.usage = usage
        if not self._own_usage:
            return chunk
        if not chunk.choices:
            return None
        return msgspec.structs.replace(chunk, usage=None)

    def count(self, chunk: Any) -> None:
        """Note a stream chunk: the tokens it carries and the answers it ends. Used when the upstream reports no
        usage though asked (llama.cpp's Python server): OpenAI-compatible servers stream one token per chunk."""
        for choice in chunk.choices:
            delta = choice.delta
            if delta.content or delta.tool_calls or delta.refusal:
                self._streamed += 1
            if choice.finish_reason is not None:
                self._ended += 1

    def finish(self, usage: Any = None, *, served: bool = True) -> None:
        """Settle with ``usage`` (default: :attr:`usage`), or refund when nothing was ``served``. Without usage, a
        stream whose answers all finished is charged its prompt's bound plus the tokens it streamed (at most what
        was reserved); anything else (a stream cut short, whose upstream may have generated more than arrived) is
        charged its whole reservation. Runs in the background: never blocks or fails the request."""
        if self._done:
            return
        self._done = True
        usage = usage if usage is not None else self.usage
        if not served:
            tokens = prompt = completion = 0
        elif usage is not None and isinstance(getattr(usage, "total_tokens", None), int):
            prompt = int(getattr(usage, "prompt_tokens", 0) or 0)
            completion = int(getattr(usage, "completion_tokens", 0) or 0)
            tokens = int(usage.total_tokens) or prompt + completion
        elif self.reserved > 0 and self._ended >= self.choices:
            prompt = self.prompt
            completion = min(self._streamed, self.reserved - prompt)
            tokens = prompt + completion
        else:
            tokens, prompt, completion = self.reserved, 0, 0
        self.limiter._settle(self, tokens, prompt, completion, served)


class Limiter:
    """The limits of every named key, over one backend, with the ``redis_failure`` decision.

    Settling costs the request nothing: :meth:`Admission.finish` queues the settlement
    (:class:`~polychat.server._settlements.SettlementQueue`), and the key's next reservation carries it to the
    backend in the same round trip (the script settles, then reserves); :meth:`aclose` drains the queue."""

    def __init__(self, keys: Mapping[str, GatewayKeySpec], backend: LimitBackend, *, failure: str = "closed") -> None:
        self.keys = dict(keys)
        self.backend = backend
        #: "closed": while the backend is down, limited keys get 503 (nothing passes unaccounted); "open": they
        #: pass, and their usage is recorded when the backend is back.
        self.failure = failure
        self._queue = SettlementQueue(backend, lost=self._lost, back=self._back)
        self.down_since: float | None = None

    async def admit(
        self, spec: GatewayKeySpec | None, model: Any, messages: Any, kwargs: dict[str, Any]
    ) -> Admission | Refusal | None:
        """Check ``spec``'s allowlist and reserve under its limits. None: nothing to account (no named key, or
        one without limits). May set ``kwargs["max_tokens"]`` (see the module docstring)."""
        if spec is None:
            return None
        if spec.models is not None and model not in spec.models:
            shown = model if isinstance(model, str) else type(model).__name__
            return Refusal(
                403,
                "model_not_allowed",
                f"The key '{spec.name}' may not use the model '{shown}'. Allowed: {', '.join(spec.models) or 'none'}.",
                type="permission_error",
                retryable=False,
            )
        if not spec.limited:
            return None
        tokens = prompt = 0
        choices = 1
        if spec.tokens_per_minute is not None or spec.budget_tokens is not None:
            prompt = prompt_bound(messages, kwargs)
            n = kwargs.get("n")
            choices = n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1
            cap = _completion_cap(kwargs)
            if cap is None:
                ceiling = min(x for x in (spec.tokens_per_minute, spec.budget_tokens) if x is not None)
                cap = max(1, min(DEFAULT_COMPLETION_RESERVE, (ceiling - prompt) // choices))
                kwargs["max_tokens"] = cap
            tokens = prompt + cap * choices
        rid = _new_id()
        carried = self._queue.take(spec)
        try:
            verdict = await self.backend.reserve(spec, rid, tokens, carried)
        except BackendUnavailable as e:
            self._queue.sent(spec, carried, applied=False)  # perhaps applied with the reply lost: sent again
            self._lost(e)
            admission = Admission(self, spec, rid, tokens, offline=True, prompt=prompt, choices=choices)
            if self.failure == "open":
                return admission
            admission.finish(served=False)  # the reservation may have been made with only the reply lost: undo it
            return Refusal(
                503,
                "limits_unavailable",
                "Usage limits cannot be checked right now (the gateway's shared store is unreachable); retry shortly.",
                type="server_error",
                retry_after=1,
            )
        except BaseException:
            self._queue.sent(spec, carried, applied=False)
            # Cancelled (the client went away) with the reservation perhaps made: release it. Settling is idempotent
            # and reaches the backend after the reservation, so this is right whether it was made or not.
            self._queue.add(spec, Settlement(rid, 0, 0, 0, tokens), offline=False, served=False)
            raise
        self._queue.sent(spec, carried, applied=True)
        self._back()
        if verdict.ok:
            return Admission(self, spec, rid, tokens, offline=False, prompt=prompt, choices=choices)
        return refusal(spec, verdict, tokens)

    # -- settling, carried by the next reservation or in the background ----------------------------------------

    def _settle(self, admission: Admission, tokens: int, prompt: int, completion: int, served: bool) -> None:
        item = Settlement(admission.rid, tokens, prompt, completion, admission.reserved)
        self._queue.add(admission.spec, item, offline=admission.offline, served=served)

    @property
    def pending(self) -> int:
        """Settlements not yet applied to the backend (nonzero while it is unreachable)."""
        return self._queue.pending

    async def drain(self, timeout: float) -> None:
        """Give queued settlements up to ``timeout`` seconds to reach the backend (on shutdown)."""
        await self._queue.drain(timeout)

    async def aclose(self, timeout: float = 5.0) -> None:
        await self._queue.drain(timeout)
        self._queue.stop()
        await self.backend.aclose()

    async def usage_rows(self, names: frozenset[str] | None = None) -> list[tuple[str, KeyUsage]]:
        """Each named key's usage, for ``/metrics`` (global when the backend is Redis); empty while it is down.
        This process's queued settlements are written first, so what it served is in the figures."""
        if self.down_since is None:
            await self._queue.written(1.0)
        out: list[tuple[str, KeyUsage]] = []
        for name in sorted(self.keys if names is None else self.keys.keys() & names):
            try:
                out.append((name, await self.backend.usage(name)))
            except BackendUnavailable as e:
                self._lost(e)
                return []
        return out

    # -- the shared store's health ------------------------------------------------------------------------------

    def _lost(self, error: BaseException) -> None:
        if self.down_since is None:
            self.down_since = time.monotonic()
            then = "limited keys get 503" if self.failure == "closed" else "limited keys pass; usage is recorded later"
            log.error("polychat: lost the connection to Redis (%s); redis_failure = %s: %s", error, self.failure, then)

    def _back(self) -> None:
        if self.down_since is not None:
            log.warning(
                "polychat: Redis is reachable again after %.1fs; limits are shared again",
                time.monotonic() - self.down_since,
            )
            self.down_since = None


def refusal(spec: GatewayKeySpec, verdict: Verdict, tokens: int) -> Refusal:
    """The 429 (or the too-large refusal) for a verdict that did not admit."""
    retry = None if verdict.retry_ms < 0 else max(1, -(-verdict.retry_ms // 1000))
    name = spec.name
    if verdict.limit == "requests":
        return Refusal(
            429,
            "rate_limit_exceeded",
            f"Rate limit reached for key '{name}': {spec.requests_per_minute} requests per minute. "
            f"Please try again in {retry}s.",
            retry_after=retry,
        )
    if verdict.limit == "tokens":
        return Refusal(
            429,
            "rate_limit_exceeded",
            f"Rate limit reached for key '{name}': {spec.tokens_per_minute} tokens per minute (this request "
            f"reserves {tokens}: its prompt plus max_tokens). Please try again in {retry}s.",
            retry_after=retry,
        )
    if verdict.limit == "too_large":
        limit = min(x for x in (spec.tokens_per_minute, spec.budget_tokens) if x is not None)
        return Refusal(
            429,
            "rate_limit_exceeded",
            f"Request too large for key '{name}': it reserves {tokens} tokens (its prompt plus max_tokens) and the "
            f"key's limit is {limit}. Lower max_tokens or shorten the messages.",
            retryable=False,
            retry_after=BUDGET_RETRY_AFTER,
        )
    in_flight = verdict.retry_ms >= 0
    return Refusal(
        429,
        "budget_exceeded",
        f"The key '{name}' has used its budget of {spec.budget_tokens} tokens"
        + (" (part of it is held by requests in flight; retry shortly)." if in_flight else "."),
        type="insufficient_quota",
        retry_after=retry if in_flight else BUDGET_RETRY_AFTER,
        retryable=in_flight,
    )
