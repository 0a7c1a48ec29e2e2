"""The limit counters in Redis: every step is one Lua script (one round trip, atomic), shared by every gateway
process and replica that uses the same Redis. The rules are :class:`polychat.server._limits_memory.MemoryLimits`'s.

Keys of a gateway key NAME (one hash tag, so a Redis Cluster keeps them on one shard)::

    polychat:limits:{NAME}:win    sorted set: request id -> admission time (ms), the last minute
    polychat:limits:{NAME}:amt    hash: request id -> tokens counted in the minute (reserved, then settled)
    polychat:limits:{NAME}:held   sorted set: "TOKENS:ID" of each request in flight -> its lease's end (ms); past
                                  it, the reservation is charged in full
    polychat:limits:{NAME}:st     hash: window (tokens in the minute), reserved, used (budget), requests,
                                  prompt_tokens, completion_tokens, total_tokens, refused:<limit>
    polychat:limits:{NAME}:done:ID  marker (1 day): a request whose reservation met an outage was resolved once

Why this shape: the script runs on every limited request, and Redis spends about a microsecond on each command a
script calls (more on a write) — so the counters are read with one HMGET and written back with one HSET, a
request's reservation is one member of ``held`` (its size travels in the member, so settling is one ZREM), one
window serves the requests and the tokens limits, and housekeeping is not done per request: entries that left the
window and leases that ended are swept at most every :data:`SWEEP_MS` (and at once when a tokens limit is
reached, so the window it checks is exact). Until swept, a stale entry counts neither against the requests limit
(it counts the window by time) nor twice against anything else; a reservation whose lease ended may still be
settled with its real usage until the sweep charges it in full. A request costs about ten commands.

Time comes from Redis (``TIME``), so replicas with skewed clocks still share one window. Usage that must survive a
Redis restart needs persistence on (``appendonly yes``): see the README's multi-replica section.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from typing import Any

from ..config._types import GatewayKeySpec
from ._limits_backend import ADMITTED, LEASE_MS, WINDOW_MS, BackendUnavailable, KeyUsage, Settlement, Verdict
from ._resp import Connection, ReplyError

_PREFIX = "polychat:limits:"
_PARTS = ("win", "amt", "held", "st")
#: Milliseconds between sweeps of a key's expired window entries and ended leases.
SWEEP_MS = 1000

# The counters live in Lua locals between one HMGET and one HSET (the script is atomic, so nothing else writes
# them meanwhile). Integers are written with %d: Lua numbers are doubles, and Redis would print 1e17 as "1e+17".
_COMMON = """
local win, amt, held, st = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local FIELDS = {'window', 'reserved', 'used', 'requests', 'prompt_tokens', 'completion_tokens', 'total_tokens',
  'swept'}
local c = {}
local stored = redis.call('HMGET', st, unpack(FIELDS))
for i, f in ipairs(FIELDS) do c[f] = tonumber(stored[i]) or 0 end
local changed = false
local function save()
  if not changed then return end
  local out = {}
  for _, f in ipairs(FIELDS) do
    out[#out + 1] = f
    out[#out + 1] = string.format('%d', c[f])
  end
  redis.call('HSET', st, unpack(out))
end
-- the tokens counted for ids, which are then forgotten (in chunks: Lua's unpack stops at a few thousand values)
local function forget(ids)
  local sum = 0
  for s = 1, #ids, 1000 do
    local part = {unpack(ids, s, math.min(s + 999, #ids))}
    local found = false
    for _, v in ipairs(redis.call('HMGET', amt, unpack(part))) do
      if v then
        sum = sum + tonumber(v)
        found = true
      end
    end
    if found then redis.call('HDEL', amt, unpack(part)) end
  end
  return sum
end
-- settlements: ARGV[first..] in fives (id, tokens, prompt, completion, tokens reserved); one whose reservation is
-- no longer held (settled already, or charged when its lease ended) is left alone, so a batch sent twice counts once
local function settle(first)
  for i = first, #ARGV, 5 do
    local id, tokens = ARGV[i], tonumber(ARGV[i + 1])
    if redis.call('ZREM', held, ARGV[i + 4] .. ':' .. id) == 1 then
      c.reserved = c.reserved - tonumber(ARGV[i + 4])
      c.used = c.used + tokens
      local counted = redis.call('HGET', amt, id)
      if counted then
        redis.call('HSET', amt, id, tokens)
        c.window = c.window + tokens - tonumber(counted)
      end
      c.prompt_tokens = c.prompt_tokens + tonumber(ARGV[i + 2])
      c.completion_tokens = c.completion_tokens + tonumber(ARGV[i + 3])
      c.total_tokens = c.total_tokens + tokens
      changed = true
    end
  end
end
-- housekeeping: entries that left the window (cutoff and before), and reservations whose gateway never settled
-- them, charged in full (the upstream may have served them)
local function sweep(cutoff)
  local old = redis.call('ZRANGEBYSCORE', win, '-inf', cutoff)
  if #old > 0 then
    c.window = c.window - forget(old)
    redis.call('ZREMRANGEBYSCORE', win, '-inf', cutoff)
  end
  local dead = redis.call('ZRANGEBYSCORE', held, '-inf', now)
  if #dead > 0 then
    for _, member in ipairs(dead) do
      local r = tonumber(string.match(member, '^(%d+):'))
      c.reserved = c.reserved - r
      c.used = c.used + r
    end
    redis.call('ZREMRANGEBYSCORE', held, '-inf', now)
  end
  c.swept = now
  changed = true
end
"""

# ARGV: the key's limits and times, the number K of reservations, K pairs (id, tokens), then settlements. The
# reservations are decided in order, each seeing the ones before it, exactly as K separate calls would be.
_RESERVE = (
    _COMMON
    + """
local rpm, tpm, budget = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local window_ms, lease_ms, sweep_ms = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local k = tonumber(ARGV[7])
local cutoff = now - window_ms
settle(8 + 2 * k)  -- earlier requests' settlements ride along: one round trip for both
if now - c.swept >= sweep_ms then sweep(cutoff) end
local function reserve(id, est_text)
  local est = tonumber(est_text)
  local function refuse(limit, wait)
    -- a client that retried a command whose reply it lost must not be refused by its own first admission
    if redis.call('ZSCORE', win, id) then return 1, '', 0 end
    redis.call('HINCRBY', st, 'refused:' .. limit, 1)
    return 0, limit, wait
  end
  if rpm > 0 then
    local count = redis.call('ZCOUNT', win, '(' .. cutoff, '+inf')
    if count >= rpm then
      local first = redis.call('ZRANGEBYSCORE', win, '(' .. cutoff, '+inf', 'WITHSCORES', 'LIMIT', count - rpm, 1)
      return refuse('requests', tonumber(first[2]) + window_ms - now)
    end
  end
  if tpm > 0 then
    if est > tpm then return refuse('too_large', -1) end
    if c.window + est > tpm and c.swept < now then sweep(cutoff) end  -- the window must be exact to refuse
    if c.window + est > tpm then
      -- when does enough of the window run out? walk it from the oldest entry
      local need, freed = c.window + est - tpm, 0
      local entries = redis.call('ZRANGE', win, 0, -1, 'WITHSCORES')
      for s = 1, #entries, 2000 do
        local ids = {}
        for i = s, math.min(s + 1999, #entries), 2 do ids[#ids + 1] = entries[i] end
        local amounts = redis.call('HMGET', amt, unpack(ids))
        for j, v in ipairs(amounts) do
          freed = freed + (tonumber(v) or 0)
          if freed >= need then return refuse('tokens', tonumber(entries[s + 2 * j - 1]) + window_ms - now) end
        end
      end
      return refuse('tokens', window_ms)
    end
  end
  if budget > 0 then
    if est > budget then return refuse('too_large', -1) end
    if c.used + c.reserved + est > budget then
      if c.reserved > 0 then return refuse('budget', 1000) end
      return refuse('budget', -1)
    end
  end
  if redis.call('ZADD', win, 'NX', now, id) == 0 then return 1, '', 0 end  -- a retried command, admitted once
  c.requests = c.requests + 1
  if tpm > 0 then
    redis.call('HSET', amt, id, est)
    c.window = c.window + est
  end
  c.reserved = c.reserved + est
  redis.call('ZADD', held, now + lease_ms, est_text .. ':' .. id)
  changed = true
  return 1, '', 0
end
local out = {}
for i = 1, k do
  local ok, limit, wait = reserve(ARGV[6 + 2 * i], ARGV[7 + 2 * i])
  out[#out + 1] = ok
  out[#out + 1] = limit
  out[#out + 1] = wait
end
save()
return out
"""
)

_SETTLE = _COMMON + "settle(1)\nsave()\nreturn 1\n"

_RECORD = (
    _COMMON
    + """
local id, tokens, prompt, completion = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if not redis.call('SET', KEYS[5], '1', 'NX', 'PX', 86400000) then return 0 end
-- the reservation may have been made with only its reply lost: undo it
if redis.call('ZREM', held, ARGV[5] .. ':' .. id) == 1 then
  c.reserved = c.reserved - tonumber(ARGV[5])
  redis.call('ZREM', win, id)
  c.requests = c.requests - 1
  c.window = c.window - forget({id})
  changed = true
end
if ARGV[6] == '1' then
  c.requests = c.requests + 1
  c.used = c.used + tokens
  c.prompt_tokens = c.prompt_tokens + prompt
  c.completion_tokens = c.completion_tokens + completion
  c.total_tokens = c.total_tokens + tokens
  changed = true
end
save()
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


class _Batch:
    """Reservations of one key made while the connection was busy, sent together in one script call."""

    __slots__ = ("pairs", "settle", "spec", "waiters")

    def __init__(self, spec: GatewayKeySpec) -> None:
        self.spec = spec
        self.pairs: list[Any] = []  # id, tokens, id, tokens, ...
        self.settle: list[Settlement] = []
        self.waiters: list[asyncio.Future[Verdict]] = []


class RedisLimits:
    """:class:`~polychat.server._limits_backend.LimitBackend` over one lean pipelined connection
    (:mod:`polychat.server._resp`); connection and timeout errors become :class:`BackendUnavailable` (the
    :class:`Limiter` applies ``redis_failure``).

    Under load, reservations batch: while the connection is busy, a key's reservations of one turn of the event
    loop go to Redis as one script call (the script decides them in order, as separate calls would), which spares
    Redis the fixed cost of a call per request. An idle connection sends a reservation at once, so a lone request
    waits for nothing."""

    def __init__(self, url: str) -> None:
        self._conn = Connection(url)
        self._key_names: dict[str, list[str]] = {}
        self._batches: dict[str, _Batch] = {}
        self._sending: set[asyncio.Task[None]] = set()

    @classmethod
    def from_url(cls, url: str) -> RedisLimits:
        return cls(url)

    def _keys(self, name: str) -> list[str]:
        keys = self._key_names.get(name)
        if keys is None:
            keys = self._key_names[name] = _keys(name)
        return keys

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
        batch = self._batches.get(spec.name)
        if batch is None:
            if not self._conn.busy:
                return (await self._reserve(spec, [rid, tokens], settle))[0]
            batch = self._batches[spec.name] = _Batch(spec)
            asyncio.get_running_loop().call_soon(self._send, spec.name)
        waiter: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
        batch.pairs += (rid, tokens)
        batch.settle += settle
        batch.waiters.append(waiter)
        return await waiter

    def _send(self, name: str) -> None:
        task = asyncio.ensure_future(self._answer(self._batches.pop(name)))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _answer(self, batch: _Batch) -> None:
        try:
            verdicts = await self._reserve(batch.spec, batch.pairs, batch.settle)
        except BackendUnavailable as e:
            for waiter in batch.waiters:
                if not waiter.done():
                    waiter.set_exception(BackendUnavailable(str(e)))
            return
        except asyncio.CancelledError:  # the loop is shutting down
            for waiter in batch.waiters:
                waiter.cancel()
            raise
        except Exception as e:  # a bug: each waiter hears of it
            for waiter in batch.waiters:
                if not waiter.done():
                    waiter.set_exception(e)
            return
        for waiter, verdict in zip(batch.waiters, verdicts, strict=True):
            if not waiter.done():  # a waiter cancelled meanwhile settles its reservation itself (see Limiter.admit)
                waiter.set_result(verdict)

    async def _reserve(self, spec: GatewayKeySpec, pairs: list[Any], settle: Sequence[Settlement]) -> list[Verdict]:
        args: list[Any] = [
            spec.requests_per_minute or 0,
            spec.tokens_per_minute or 0,
            spec.budget_tokens or 0,
            WINDOW_MS,
            LEASE_MS,
            SWEEP_MS,
            len(pairs) // 2,
            *pairs,
        ]
        for item in settle:
            args += item
        flat = await self._run(_RESERVE_SCRIPT, self._keys(spec.name), args)
        return [
            ADMITTED if ok else Verdict(False, limit.decode() if isinstance(limit, bytes) else str(limit), int(wait))
            for ok, limit, wait in zip(flat[::3], flat[1::3], flat[2::3], strict=True)
        ]

    async def settle(self, spec: GatewayKeySpec, settlements: Sequence[Settlement]) -> None:
        args: list[Any] = []
        for item in settlements:
            args += item
        await self._run(_SETTLE_SCRIPT, self._keys(spec.name), args)

    async def record(self, spec: GatewayKeySpec, item: Settlement, served: bool) -> None:
        keys = [*self._keys(spec.name), f"{_PREFIX}{{{spec.name}}}:done:{item.rid}"]
        await self._run(_RECORD_SCRIPT, keys, [*item, 1 if served else 0])

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
