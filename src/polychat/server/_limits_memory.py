"""Per-key limits counted in this process: :class:`MemoryLimits`, the backend a gateway without Redis uses.

It applies the same rules as the Redis scripts in :mod:`polychat.server._limits_redis`, in Python, so the tests run
the same cases against both. With ``--workers N`` each worker has its own counters: the limits then hold per worker,
not in total.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence

from ..config._types import GatewayKeySpec
from ._limits_backend import ADMITTED, LEASE_MS, WINDOW_MS, KeyUsage, Settlement, Verdict


class _KeyState:
    __slots__ = ("requests", "reservations", "reserved", "tokens", "usage", "used", "window", "window_total")

    def __init__(self) -> None:
        self.requests: deque[tuple[float, str]] = deque()  # (time, rid) of admissions in the window
        self.tokens: deque[tuple[float, str]] = deque()  # (time, rid) of token entries in the window
        self.window: dict[str, int] = {}  # rid -> tokens counted in the window
        self.window_total = 0  # sum of ``window`` (kept, not recomputed: the window may hold many entries)
        self.reservations: dict[str, tuple[int, float]] = {}  # rid -> (tokens, lease deadline)
        self.reserved = 0  # sum of the reservations' tokens
        self.used = 0
        self.usage = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


class MemoryLimits:
    """Counters in this process (the same rules as the Redis scripts, in Python). With ``--workers N`` each worker
    has its own: the limits then hold per worker, not in total."""

    def __init__(self) -> None:
        self._keys: dict[str, _KeyState] = {}
        self._refused: dict[str, dict[str, int]] = {}
        self._recorded: set[str] = set()

    def _state(self, name: str) -> _KeyState:
        st = self._keys.get(name)
        if st is None:
            st = self._keys[name] = _KeyState()
        return st

    async def reserve(self, spec: GatewayKeySpec, rid: str, tokens: int, settle: Sequence[Settlement] = ()) -> Verdict:
        now = time.monotonic() * 1000
        st = self._state(spec.name)
        for item in settle:
            self._settle(st, item)
        if rid in st.reservations:
            return ADMITTED  # a retried call (see the Redis script)
        # Leases run out in the order reservations were made (dicts keep insertion order): expired ones are in front.
        while st.reservations:
            oldest, (held, until) = next(iter(st.reservations.items()))
            if until > now:
                break
            del st.reservations[oldest]
            st.reserved -= held
            st.used += held
        cutoff = now - WINDOW_MS
        while st.requests and st.requests[0][0] <= cutoff:
            st.requests.popleft()
        while st.tokens and st.tokens[0][0] <= cutoff:
            st.window_total -= st.window.pop(st.tokens.popleft()[1], 0)
        verdict = self._check(spec, st, tokens, now)
        if not verdict.ok:
            refused = self._refused.setdefault(spec.name, {})
            refused[verdict.limit] = refused.get(verdict.limit, 0) + 1
            return verdict
        st.requests.append((now, rid))
        st.usage["requests"] += 1
        if spec.tokens_per_minute is not None:
            st.tokens.append((now, rid))
            st.window[rid] = tokens
            st.window_total += tokens
        st.reservations[rid] = (tokens, now + LEASE_MS)
        st.reserved += tokens
        return ADMITTED

    @staticmethod
    def _check(spec: GatewayKeySpec, st: _KeyState, tokens: int, now: float) -> Verdict:
        rpm, tpm, budget = spec.requests_per_minute, spec.tokens_per_minute, spec.budget_tokens
        if rpm is not None and len(st.requests) >= rpm:
            return Verdict(False, "requests", int(st.requests[-rpm][0] + WINDOW_MS - now))
        if tpm is not None:
            if tokens > tpm:
                return Verdict(False, "too_large", -1)
            total = st.window_total
            if total + tokens > tpm:
                need, freed = total + tokens - tpm, 0
                for at, rid in st.tokens:
                    freed += st.window.get(rid, 0)
                    if freed >= need:
                        return Verdict(False, "tokens", int(at + WINDOW_MS - now))
                return Verdict(False, "tokens", WINDOW_MS)
        if budget is not None:
            if tokens > budget:
                return Verdict(False, "too_large", -1)
            if st.used + st.reserved + tokens > budget:
                return Verdict(False, "budget", 1000 if st.reserved else -1)
        return ADMITTED

    async def settle(self, spec: GatewayKeySpec, settlements: Sequence[Settlement]) -> None:
        st = self._state(spec.name)
        for item in settlements:
            self._settle(st, item)

    def _settle(self, st: _KeyState, item: Settlement) -> None:
        rid, tokens, prompt, completion, _ = item
        reservation = st.reservations.pop(rid, None)
        if reservation is None:
            return  # settled already, or charged in full when its lease ran out
        st.reserved -= reservation[0]
        st.used += tokens
        if rid in st.window:
            st.window_total += tokens - st.window[rid]
            st.window[rid] = tokens
        self._count(st, tokens, prompt, completion)

    async def record(self, spec: GatewayKeySpec, item: Settlement, served: bool) -> None:
        rid, tokens, prompt, completion, _ = item
        # In one process a reservation cannot half-happen (this backend never raises BackendUnavailable, so this is
        # never called by the Limiter and the set stays empty), but the rules are the Redis script's all the same.
        if rid in self._recorded:
            return
        self._recorded.add(rid)
        st = self._state(spec.name)
        reservation = st.reservations.pop(rid, None)
        if reservation is not None:
            st.reserved -= reservation[0]
            st.usage["requests"] -= 1
            st.requests = deque(entry for entry in st.requests if entry[1] != rid)  # rare: only after an outage
            st.window_total -= st.window.pop(rid, 0)
        if served:
            st.used += tokens
            st.usage["requests"] += 1
            self._count(st, tokens, prompt, completion)

    @staticmethod
    def _count(st: _KeyState, tokens: int, prompt: int, completion: int) -> None:
        st.usage["prompt_tokens"] += prompt
        st.usage["completion_tokens"] += completion
        st.usage["total_tokens"] += tokens

    async def usage(self, name: str) -> KeyUsage:
        st = self._state(name)
        return KeyUsage(
            used=st.used,
            reserved=st.reserved,
            refused=dict(self._refused.get(name, {})),
            **st.usage,
        )

    async def aclose(self) -> None:
        return None
