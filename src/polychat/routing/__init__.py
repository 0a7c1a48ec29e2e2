"""Failover: chains of providers tried per the failover contract (see :mod:`polychat.routing.policy`)."""

from .policy import FailoverPlan, backoff_delay
from .retry import EmptyResponseError, IterListProvider, RetryProvider

__all__ = ["EmptyResponseError", "FailoverPlan", "IterListProvider", "RetryProvider", "backoff_delay"]
