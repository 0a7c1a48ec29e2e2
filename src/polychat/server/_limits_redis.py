"""The limit counters in Redis: every step is one Lua script (one round trip, atomic), shared by every gateway
process and replica that uses the same Redis. The rules are :class:`polychat.server._limits_memory.MemoryLimits`'s.

Keys of a gateway key NAME (one hash tag, so a Redis Cluster keeps them on one shard)::

    polychat:limits:{NAME}:req    sorted set: request id -> admission time (ms), the last minute
    polychat:limits:{NAME}:tok    sorted set: request id -> admission time (ms), the last minute (token limit)
    polychat:limits:{NAME}:amt    hash: request id -> tokens counted in the minute (reserved, then settled)
    polychat:limits:{NAME}:res    hash: request id -> tokens reserved, for requests in flight
    polychat:limits:{NAME}:lease  sorted set: request id -> deadline (ms); past it, the reservation is charged
    polychat:limits:{NAME}:st     hash: window (tokens in the minute), reserved, used (budget), requests,
                                  prompt_tokens, completion_tokens, total_tokens, refused:<limit>
    polychat:limits:{NAME}:done:ID  marker (1 day): a request whose reservation met an outage was resolved once

Time comes from Redis (``TIME``), so replicas with skewed clocks still share one window. Usage that must survive a
Redis restart needs persistence on (``appendonly yes``): see the README's multi-replica section.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from ..config._types import GatewayKeySpec
from ._limits_backend import ADMITTED, LEASE_MS, WINDOW_MS, BackendUnavailable, KeyUsage, Settlement, Verdict
from ._resp import Connection, ReplyError

_PREFIX = "polychat:limits:"
_PARTS = ("req", "tok", "amt", "res", "lease", "st")

# Lua's unary minus makes -0 of 0, which Redis sends as "-0" and HINCRBY refuses: negate as ``0 - x``.
_COMMON = """
local req, tok, amt, res, lease, st = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- settlements: ARGV[first..] in fours (id, tokens, prompt, completion); a reservation already settled (or charged
-- when its lease ended) is left alone, so a batch sent twice counts once
local function settle(first)
  for i = first, #ARGV, 4 do
    local id, tokens = ARGV[i], tonumber(ARGV[i + 1])
    local r = redis.call('HGET', res, id)
    if r then
      redis.call('HDEL', res, id)
      redis.call('ZREM', lease, id)
      redis.call('HINCRBY', st, 'reserved', 0 - tonumber(r))
      redis.call('HINCRBY', st, 'used', tokens)
      local counted = redis.call('HGET', amt, id)
      if counted then
        redis.call('HSET', amt, id, tokens)
        redis.call('HINCRBY', st, 'window', tokens - tonumber(counted))
      end
      redis.call('HINCRBY', st, 'prompt_tokens', tonumber(ARGV[i + 2]))
      redis.call('HINCRBY', st, 'completion_tokens', tonumber(ARGV[i + 3]))
      redis.call('HINCRBY', st, 'total_tokens', tokens)
    end
  end
end
"""

_RESERVE = (
    _COMMON
    + """
local id, est = ARGV[1], tonumber(ARGV[2])
local rpm, tpm, budget = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local window_ms, lease_ms = tonumber(ARGV[6]), tonumber(ARGV[7])
settle(8)  -- earlier requests' settlements ride along: one round trip for both
-- a retried call (its first reply was lost) must not count the request twice, nor refuse what it admitted
if redis.call('HEXISTS', res, id) == 1 then return {1, '', 0} end
-- reservations whose gateway never settled them: charged in full (the upstream may have served them)
local dead = redis.call('ZRANGEBYSCORE', lease, '-inf', now)
for _, rid in ipairs(dead) do
  local r = tonumber(redis.call('HGET', res, rid) or '0')
  redis.call('HDEL', res, rid)
  redis.call('HINCRBY', st, 'reserved', 0 - r)
  redis.call('HINCRBY', st, 'used', r)
end
if #dead > 0 then redis.call('ZREMRANGEBYSCORE', lease, '-inf', now) end
local cutoff = now - window_ms
redis.call('ZREMRANGEBYSCORE', req, '-inf', cutoff)
local old = redis.call('ZRANGEBYSCORE', tok, '-inf', cutoff)
if #old > 0 then
  local freed = 0
  for _, rid in ipairs(old) do
    freed = freed + tonumber(redis.call('HGET', amt, rid) or '0')
    redis.call('HDEL', amt, rid)
  end
  redis.call('ZREMRANGEBYSCORE', tok, '-inf', cutoff)
  redis.call('HINCRBY', st, 'window', 0 - freed)
end
local function refuse(limit, wait)
  redis.call('HINCRBY', st, 'refused:' .. limit, 1)
  return {0, limit, wait}
end
if rpm > 0 then
  local count = redis.call('ZCARD', req)
  if count >= rpm then
    local first = redis.call('ZRANGE', req, count - rpm, count - rpm, 'WITHSCORES')
    return refuse('requests', tonumber(first[2]) + window_ms - now)
  end
end
if tpm > 0 then
  if est > tpm then return refuse('too_large', -1) end
  local window = tonumber(redis.call('HGET', st, 'window') or '0')
  if window + est > tpm then
    local need, freed = window + est - tpm, 0
    local entries = redis.call('ZRANGE', tok, 0, -1, 'WITHSCORES')
    for i = 1, #entries, 2 do
      freed = freed + tonumber(redis.call('HGET', amt, entries[i]) or '0')
      if freed >= need then return refuse('tokens', tonumber(entries[i + 1]) + window_ms - now) end
    end
    return refuse('tokens', window_ms)
  end
end
if budget > 0 then
  if est > budget then return refuse('too_large', -1) end
  local used = tonumber(redis.call('HGET', st, 'used') or '0')
  local reserved = tonumber(redis.call('HGET', st, 'reserved') or '0')
  if used + reserved + est > budget then
    if reserved > 0 then return refuse('budget', 1000) end
    return refuse('budget', -1)
  end
end
redis.call('ZADD', req, now, id)
redis.call('HINCRBY', st, 'requests', 1)
if tpm > 0 then
  redis.call('ZADD', tok, now, id)
  redis.call('HSET', amt, id, est)
  redis.call('HINCRBY', st, 'window', est)
end
redis.call('HSET', res, id, est)
redis.call('HINCRBY', st, 'reserved', est)
redis.call('ZADD', lease, now + lease_ms, id)
return {1, '', 0}
"""
)

_SETTLE = _COMMON + "settle(1)\nreturn 1\n"

_RECORD = (
    _COMMON
    + """
local id, tokens, prompt, completion = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if not redis.call('SET', KEYS[7], '1', 'NX', 'PX', 86400000) then return 0 end
-- the reservation may have been made with only its reply lost: undo it
local r = redis.call('HGET', res, id)
if r then
  redis.call('HDEL', res, id)
  redis.call('ZREM', lease, id)
  redis.call('HINCRBY', st, 'reserved', 0 - tonumber(r))
  redis.call('ZREM', req, id)
  redis.call('HINCRBY', st, 'requests', -1)
  local counted = redis.call('HGET', amt, id)
  if counted then
    redis.call('HDEL', amt, id)
    redis.call('ZREM', tok, id)
    redis.call('HINCRBY', st, 'window', 0 - tonumber(counted))
  end
end
if ARGV[5] ~= '1' then return 1 end
redis.call('HINCRBY', st, 'requests', 1)
redis.call('HINCRBY', st, 'used', tokens)
redis.call('HINCRBY', st, 'prompt_tokens', prompt)
redis.call('HINCRBY', st, 'completion_tokens', completion)
redis.call('HINCRBY', st, 'total_tokens', tokens)
return 1
"""
)


def _keys(name: str) -> list[str]:
    return [f"{_PREFIX}{{{name}}}:{part}" for part in _PARTS]


class _Script:
    __slots__ = ("sha", "text")

    def __init__(self, text: str) -> None:
        self.text = text.encode()
        self.sha = hashlib.sha1(self.text).hexdigest().encode()


_RESERVE_SCRIPT, _SETTLE_SCRIPT, _RECORD_SCRIPT = _Script(_RESERVE), _Script(_SETTLE), _Script(_RECORD)


class RedisLimits:
    """:class:`~polychat.server._limits_backend.LimitBackend` over one lean pipelined connection
    (:mod:`polychat.server._resp`); connection and timeout errors become :class:`BackendUnavailable` (the
    :class:`Limiter` applies ``redis_failure``)."""

    def __init__(self, url: str) -> None:
        self._conn = Connection(url)

    @classmethod
    def from_url(cls, url: str) -> RedisLimits:
        return cls(url)

    async def _run(self, script: _Script, keys: list[str], args: list[Any]) -> Any:
        try:
            try:
                return await self._conn.call(b"EVALSHA", script.sha, len(keys), *keys, *args)
            except ReplyError as e:
                if not str(e).startswith("NOSCRIPT"):
                    raise
            # First use on this Redis (or it restarted without its script cache): load, then run.
            await self._conn.call(b"SCRIPT", b"LOAD", script.text)
            return await self._conn.call(b"EVALSHA", script.sha, len(keys), *keys, *args)
        except OSError as e:  # ConnectionError, TimeoutError
            raise BackendUnavailable(_describe(e)) from None

    async def reserve(self, spec: GatewayKeySpec, rid: str, tokens: int, settle: Sequence[Settlement] = ()) -> Verdict:
        args: list[Any] = [
            rid,
            tokens,
            spec.requests_per_minute or 0,
            spec.tokens_per_minute or 0,
            spec.budget_tokens or 0,
            WINDOW_MS,
            LEASE_MS,
        ]
        for item in settle:
            args += item
        ok, limit, wait = await self._run(_RESERVE_SCRIPT, _keys(spec.name), args)
        if ok:
            return ADMITTED
        return Verdict(False, limit.decode() if isinstance(limit, bytes) else str(limit), int(wait))

    async def settle(self, spec: GatewayKeySpec, settlements: Sequence[Settlement]) -> None:
        args: list[Any] = []
        for item in settlements:
            args += item
        await self._run(_SETTLE_SCRIPT, _keys(spec.name), args)

    async def record(
        self, spec: GatewayKeySpec, rid: str, tokens: int, prompt: int, completion: int, served: bool
    ) -> None:
        keys = [*_keys(spec.name), f"{_PREFIX}{{{spec.name}}}:done:{rid}"]
        await self._run(_RECORD_SCRIPT, keys, [rid, tokens, prompt, completion, 1 if served else 0])

    async def usage(self, name: str) -> KeyUsage:
        try:
            flat = await self._conn.call(b"HGETALL", _keys(name)[-1])
        except OSError as e:
            raise BackendUnavailable(_describe(e)) from None
        return usage_from_hash(dict(zip(flat[::2], flat[1::2], strict=True)))

    async def aclose(self) -> None:
        await self._conn.aclose()


def usage_from_hash(raw: dict[Any, Any]) -> KeyUsage:
    """A key's ``st`` hash as :class:`KeyUsage`."""
    values = {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}
    return KeyUsage(
        requests=values.get("requests", 0),
        prompt_tokens=values.get("prompt_tokens", 0),
        completion_tokens=values.get("completion_tokens", 0),
        total_tokens=values.get("total_tokens", 0),
        used=values.get("used", 0),
        reserved=values.get("reserved", 0),
        refused={k.removeprefix("refused:"): v for k, v in values.items() if k.startswith("refused:")},
    )


def usage_key(name: str) -> str:
    """The Redis hash holding key ``name``'s usage (for ``polychat keys usage``)."""
    return _keys(name)[-1]


def _describe(error: BaseException) -> str:
    # The messages name host and port at most, never the password; keep them short.
    return f"{type(error).__name__}: {str(error)[:200]}"
