"""Failover: chains of providers tried per the failover contract (see :mod:`polychat.routing.plan`)."""

from .._failover import FailoverPolicy
from ..errors import EmptyResponseError
from .breaker import DEFAULT_BREAKER, BreakerStore, CircuitBreaker, InMemoryBreakerStore
from .breaker_redis import RedisBreakerStore, share_breakers
from .plan import FailoverPlan, backoff_delay
from .retry import IterListProvider, RetryProvider

__all__ = [
    "DEFAULT_BREAKER",
    "BreakerStore",
    "CircuitBreaker",
    "EmptyResponseError",
    "FailoverPlan",
    "FailoverPolicy",
    "InMemoryBreakerStore",
    "IterListProvider",
    "RedisBreakerStore",
    "RetryProvider",
    "backoff_delay",
    "share_breakers",
]
