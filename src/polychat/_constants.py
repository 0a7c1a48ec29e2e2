"""Defaults in one place: timeouts, retry counts, backoff numbers, limits."""

from __future__ import annotations

#: Seconds to establish a connection (TCP + TLS + proxy handshake).
CONNECT_TIMEOUT = 5.0
#: Seconds to wait for any single network read or write (also the longest pause between stream chunks by default).
READ_TIMEOUT = 600.0
POOL_TIMEOUT = 10.0

#: A non-stream attempt in a failover chain has no first token to wait for: the whole answer is its first sign of
#: life. Without ``response_timeout`` it gets this many times the first-token limit (a provider that may take 15 s
#: to start gets 90 s to finish a whole answer)...
RESPONSE_TIMEOUT_FACTOR = 6.0
#: ...or, when no first-token limit is set either, this many seconds: long enough for a long answer from a slow
#: model, short enough that a silent upstream does not hold the call for the 600 s read timeout.
RESPONSE_TIMEOUT = 300.0

#: Retries per provider for retryable errors when a bare provider is used (same default as the openai package).
DEFAULT_MAX_RETRIES = 2
#: RetryProvider's default retries per provider.
RETRY_PROVIDER_MAX_RETRIES = 3

#: Exponential backoff with full jitter: sleep uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**n)).
BACKOFF_BASE = 0.5
BACKOFF_CAP = 8.0
#: Longest Retry-After we are willing to wait on the same provider.
RETRY_AFTER_CAP = 60.0

MAX_CONNECTIONS = 100
MAX_KEEPALIVE_CONNECTIONS = 20
KEEPALIVE_EXPIRY = 30.0

OPENAI_BASE_URL = "https://api.openai.com/v1"

#: What the default chain (and the built-in ``openai`` provider of the config) asks OpenAI for when no model is
#: given.
DEFAULT_OPENAI_MODEL = "gpt-4o-mini"
