"""What one call needs besides the request: connection pools, the proxy and timeout in force, call options.

Settings are resolved most specific first: the call's, then the provider's, then the client's, then (for proxies)
the environment variables that httpx reads when nothing explicit is set.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
from msgspec import Struct
from msgspec.structs import replace

from ._failover import UNSET, FailoverPolicy
from ._http import TransportPool, make_timeout
from ._proxy import ProxyConfig

if TYPE_CHECKING:
    from ._record import CallRecord
    from ._timeouts import Watch
    from .providers.base import Provider
    from .routing.breaker import CircuitBreaker


class CallContext(Struct, frozen=True):
    pool: TransportPool
    client_proxy: ProxyConfig | None = None
    call_proxy: ProxyConfig | None = None
    client_timeout: httpx.Timeout | None = None
    call_timeout: httpx.Timeout | None = None
    #: Failover switches the call set, and the client's defaults (a chain's own sit between the two).
    failover: FailoverPolicy = UNSET
    client_failover: FailoverPolicy = UNSET
    #: The deadlines of the current attempt, set by the failover engine (None when a provider is called directly).
    watch: Watch | None = None
    #: What the call did (attempts, spans); the outermost failover chain reports to it.
    record: CallRecord | None = None
    #: The client's circuit breaker (``Client(breaker_store=...)``), for chains that did not choose their own.
    breaker: CircuitBreaker | None = None

    def proxy_for(self, provider: Provider) -> ProxyConfig | None:
        if self.call_proxy is not None:
            return self.call_proxy
        own: ProxyConfig | None = getattr(provider, "proxy", None)
        return own if own is not None else self.client_proxy

    def timeout_for(self, provider: Provider) -> httpx.Timeout:
        if self.call_timeout is not None:
            return self.call_timeout
        own: httpx.Timeout | None = getattr(provider, "timeout", None)
        if own is not None:
            return own
        return self.client_timeout or make_timeout(None)

    def for_attempt(self, watch: Watch | None) -> CallContext:
        # A chain nested inside this attempt must not report to the call's record: the attempt already does.
        return replace(self, watch=watch, record=None)

    def for_provider(self) -> CallContext:
        return self if self.record is None else replace(self, record=None)
