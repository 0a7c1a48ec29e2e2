"""What one call needs besides the request: connection pools, the proxy and timeout in force, call options.

Settings are resolved most specific first: the call's, then the provider's, then the client's, then (for proxies)
the environment variables that httpx reads when nothing explicit is set.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
from msgspec import Struct, field
from msgspec.structs import replace

from ._http import TransportPool, make_timeout
from ._proxy import ProxyConfig

if TYPE_CHECKING:
    from ._record import CallRecord
    from ._timeouts import Watch
    from .providers.base import Provider


class CallContext(Struct, frozen=True):
    pool: TransportPool
    client_proxy: ProxyConfig | None = None
    call_proxy: ProxyConfig | None = None
    client_timeout: httpx.Timeout | None = None
    call_timeout: httpx.Timeout | None = None
    options: dict[str, Any] = field(default_factory=dict)
    #: Failover defaults set on the client (first_token_timeout, idle_timeout, deadline, hedge_after, resume...).
    client_policy: dict[str, Any] = field(default_factory=dict)
    #: The deadlines of the current attempt, set by the failover engine (None when a provider is called directly).
    watch: Watch | None = None
    #: What the call did (attempts, spans); the outermost failover chain reports to it.
    record: CallRecord | None = None

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

    def sync_http(self, provider: Provider) -> httpx.Client:
        return self.pool.sync_client(self.proxy_for(provider))

    def with_options(self, **options: Any) -> CallContext:
        return replace(self, options={**self.options, **options})

    def for_attempt(self, watch: Watch | None) -> CallContext:
        # A chain nested inside this attempt must not report to the call's record: the attempt already does.
        return replace(self, watch=watch, record=None)

    def for_provider(self) -> CallContext:
        return self if self.record is None else replace(self, record=None)
