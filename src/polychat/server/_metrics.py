"""Gateway metrics in the Prometheus text exposition format (0.0.4), written by hand: no prometheus_client.

Everything is updated from the event loop thread of one worker process, so plain dicts suffice (with ``--workers
N`` each worker keeps its own numbers; a scrape sees the worker that answered it). Label values come only from
bounded sets — route aliases and model names from the config, provider names, error class names, status codes —
never from raw client input, so a client cannot blow up the series count.

Families (all prefixed ``polychat_gateway_``): ``requests_total``, ``errors_total``, ``rejected_total``,
``request_duration_seconds`` and ``time_to_first_token_seconds`` (histograms), ``fallback_answers_total``;
per provider attempt, successful requests included: ``attempts_total`` (by outcome), ``failed_attempts_total``
(by error class), ``attempt_time_to_first_token_seconds`` and ``tokens_total`` (input/output); ``in_flight``,
``draining``; ``polychat_breaker_state`` / ``polychat_breaker_failures`` from the circuit breakers; and per named
key (``polychat_key_``): ``requests_total``, ``tokens_total`` (by kind), ``budget_used_tokens``,
``reserved_tokens``, ``refused_total`` (by limit). Breakers and key usage come from the shared store when the
gateway has Redis, so they are global across workers and replicas; the gateway's own families stay per process.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable
from typing import Any

#: Latency buckets (seconds): LLM calls range from milliseconds (errors, cached answers) to minutes.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

Labels = tuple[str, ...]
_INF = 'le="+Inf"'


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: tuple[str, ...], values: Labels, extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=False)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _num(v: float) -> str:
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    return repr(v)


class Counter:
    __slots__ = ("help", "labelnames", "name", "values")
    kind = "counter"

    def __init__(self, name: str, help: str, labelnames: tuple[str, ...]) -> None:
        self.name, self.help, self.labelnames = name, help, labelnames
        self.values: dict[Labels, float] = {}

    def inc(self, labels: Labels, amount: float = 1.0) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + amount

    def render(self, out: list[str]) -> None:
        out.append(f"# HELP {self.name} {self.help}\n# TYPE {self.name} {self.kind}\n")
        for labels, v in sorted(self.values.items()):
            out.append(f"{self.name}{_labels(self.labelnames, labels)} {_num(v)}\n")


class Gauge(Counter):
    __slots__ = ()
    kind = "gauge"

    def set(self, labels: Labels, value: float) -> None:
        self.values[labels] = value


def _snapshot(out: list[str], family: Counter, values: Iterable[tuple[Labels, float]]) -> None:
    """A family read at scrape time (breakers, named keys), rendered like the ones counted as requests go."""
    family.values.update(values)
    family.render(out)


class Histogram:
    __slots__ = ("buckets", "help", "labelnames", "name", "series")

    def __init__(self, name: str, help: str, labelnames: tuple[str, ...], buckets: tuple[float, ...] = BUCKETS) -> None:
        self.name, self.help, self.labelnames, self.buckets = name, help, labelnames, buckets
        # per label set: [counts per bucket (not cumulative)..., +Inf count], sum
        self.series: dict[Labels, tuple[list[int], list[float]]] = {}

    def observe(self, labels: Labels, value: float) -> None:
        s = self.series.get(labels)
        if s is None:
            s = self.series[labels] = ([0] * (len(self.buckets) + 1), [0.0])
        s[0][bisect.bisect_left(self.buckets, value)] += 1
        s[1][0] += value

    def render(self, out: list[str]) -> None:
        out.append(f"# HELP {self.name} {self.help}\n# TYPE {self.name} histogram\n")
        for labels, (counts, total) in sorted(self.series.items()):
            running = 0
            for bound, c in zip(self.buckets, counts, strict=False):
                running += c
                le = 'le="' + format(bound, "g") + '"'
                out.append(f"{self.name}_bucket{_labels(self.labelnames, labels, le)} {running}\n")
            running += counts[-1]
            out.append(f"{self.name}_bucket{_labels(self.labelnames, labels, _INF)} {running}\n")
            out.append(f"{self.name}_sum{_labels(self.labelnames, labels)} {_num(round(total[0], 6))}\n")
            out.append(f"{self.name}_count{_labels(self.labelnames, labels)} {running}\n")


class Metrics:
    """The gateway's metrics; :meth:`render` gives the exposition text."""

    def __init__(self) -> None:
        p = "polychat_gateway_"
        self.requests = Counter(
            p + "requests_total", "Chat completion requests answered, by route, provider, stream and HTTP status.",
            ("route", "provider", "stream", "status"),
        )  # fmt: skip
        self.errors = Counter(
            p + "errors_total", "Chat completion requests that failed, by route, provider and error class.",
            ("route", "provider", "error"),
        )  # fmt: skip
        self.rejected = Counter(
            p + "rejected_total",
            "Requests refused before reaching a provider (unauthorized, too_large, bad_json, invalid, host, origin, "
            "draining, header_timeout, header_too_large, connection_cap; and a named key's rate_limit_exceeded, "
            "budget_exceeded, model_not_allowed, limits_unavailable).",
            ("reason",),
        )
        self.duration = Histogram(
            p + "request_duration_seconds", "Time from the request to the end of the answer.",
            ("route", "provider", "stream"),
        )  # fmt: skip
        self.ttft = Histogram(
            p + "time_to_first_token_seconds", "Time from the request to the first streamed chunk.",
            ("route", "provider"),
        )  # fmt: skip
        self.fallbacks = Counter(
            p + "fallback_answers_total",
            "Answers given by a provider other than the first of the route's chain (a failover happened).",
            ("route", "provider"),
        )
        self.attempts = Counter(
            p + "attempts_total",
            "Provider attempts, by provider and outcome (ok, failed, lost: a hedge the other side won, closed: the "
            "client stopped first), in successful and failed requests alike.",
            ("provider", "outcome"),
        )
        self.failed_attempts = Counter(
            p + "failed_attempts_total",
            "Failed provider attempts, by provider and error class (also those a failover recovered from).",
            ("provider", "error"),
        )
        self.attempt_ttft = Histogram(
            p + "attempt_time_to_first_token_seconds", "Time from the start of a provider attempt to its first "
            "content chunk (streams).", ("provider",),
        )  # fmt: skip
        self.tokens = Counter(
            p + "tokens_total", "Tokens reported by providers in answers, by provider and type (input, output).",
            ("provider", "type"),
        )  # fmt: skip
        self.in_flight = Gauge(p + "in_flight", "Chat completion requests in progress.", ("stream",))
        self.in_flight.set(("true",), 0)
        self.in_flight.set(("false",), 0)
        self.draining = Gauge(p + "draining", "1 while the gateway is shutting down.", ())
        self.draining.set((), 0)

    def render(self, breakers: Iterable[tuple[str, str, int]] = (), keys: Iterable[tuple[str, Any]] = ()) -> str:
        """The exposition text; ``breakers``: (provider, state, consecutive failures) for each known endpoint;
        ``keys``: (name, :class:`~polychat.server._limits.KeyUsage`) for each named key."""
        out: list[str] = []
        for family in (
            self.requests,
            self.errors,
            self.rejected,
            self.duration,
            self.ttft,
            self.fallbacks,
            self.attempts,
            self.failed_attempts,
            self.attempt_ttft,
            self.tokens,
            self.in_flight,
            self.draining,
        ):
            family.render(out)
        rows = list(breakers)
        _snapshot(
            out,
            Gauge(
                "polychat_breaker_state",
                "Circuit breaker state per provider endpoint (1 for the current state).",
                ("provider", "state"),
            ),
            (((provider, s), int(s == state)) for provider, state, _ in rows for s in ("closed", "half-open", "open")),
        )
        _snapshot(
            out,
            Gauge("polychat_breaker_failures", "Consecutive failures counted by the circuit breaker.", ("provider",)),
            (((provider,), failures) for provider, _, failures in rows),
        )
        _render_keys(list(keys), out)
        return "".join(out)


def _render_keys(keys: list[tuple[str, Any]], out: list[str]) -> None:
    if not keys:
        return
    k = ("key",)
    _snapshot(
        out,
        Counter("polychat_key_requests_total", "Requests admitted per named gateway key.", k),
        (((name,), u.requests) for name, u in keys),
    )
    _snapshot(
        out,
        Counter(
            "polychat_key_tokens_total",
            "Tokens settled per named gateway key, by kind (prompt, completion, total).",
            ("key", "kind"),
        ),
        (
            ((name, kind), getattr(u, kind + "_tokens"))
            for name, u in keys
            for kind in ("prompt", "completion", "total")
        ),
    )
    _snapshot(
        out,
        Gauge("polychat_key_budget_used_tokens", "Tokens charged against the key's budget.", k),
        (((name,), u.used) for name, u in keys),
    )
    _snapshot(
        out,
        Gauge("polychat_key_reserved_tokens", "Tokens reserved by the key's requests in flight.", k),
        (((name,), u.reserved) for name, u in keys),
    )
    _snapshot(
        out,
        Counter(
            "polychat_key_refused_total",
            "Requests refused by a limit of the key (requests, tokens, budget, too_large).",
            ("key", "limit"),
        ),
        (((name, limit), count) for name, u in keys for limit, count in u.refused.items()),
    )


def breaker_rows(
    items: Iterable[tuple[str, Any]], name_of: Callable[[str], str], state_of: Callable[[str], str]
) -> list[tuple[str, str, int]]:
    """(provider, state, failures) for each breaker entry; ``name_of`` maps an endpoint key to a safe label."""
    rows = [(name_of(key), state_of(key), int(getattr(st, "failures", 0))) for key, st in items]
    return sorted(rows)
