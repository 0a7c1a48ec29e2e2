"""The failover switches as one typed object, and the one place they are checked and merged.

A :class:`FailoverPolicy` can be given at four levels: the client (``Client(resume=True)``, or a config file's
``[defaults]``), a chain (``RetryProvider(resume=False)``, or a config route), a provider (its own
``first_token_timeout`` / ``idle_timeout``) and the call (``create(..., resume=True)``). ``None`` means "not set
here", so an explicit ``False`` at a more specific level beats ``True`` at a less specific one. :meth:`merged` is
the only merge; :func:`problem` the only check of a value; :data:`SWITCHES` (the struct's fields) the only list of
names — the client, RetryProvider, ``create()``, the config file and the gateway all take them from here.

It sits below :mod:`polychat.routing` (which applies it) so that request validation can use it without importing
the failover engine. :class:`CallPolicy` is what the engine works with: one call's settings, resolved.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from msgspec import Struct
from msgspec.structs import asdict

from . import _constants as C
from ._timeouts import Limits
from .errors import ConfigError

if TYPE_CHECKING:
    from .providers.base import Provider

__all__ = ["SWITCHES", "CallPolicy", "FailoverPolicy", "problem"]


class FailoverPolicy(Struct, frozen=True, kw_only=True):
    """Failover switches of one level (client, chain or call); ``None``: not set at this level.

    * ``first_token_timeout`` / ``idle_timeout``: seconds to the first content chunk / between chunks (streams);
    * ``response_timeout``: seconds to a whole non-stream answer, per attempt (unset: 6 × ``first_token_timeout``
      when that is set, else 300 s — :func:`answer_timeout`);
    * ``deadline``: seconds for the whole call, retries and failovers included;
    * ``hedge_after``: seconds without a first token after which the next provider is started too;
    * ``resume``: continue an interrupted stream on the next provider instead of raising;
    * ``allow_empty``: accept an empty answer instead of failing over.
    """

    first_token_timeout: float | None = None
    idle_timeout: float | None = None
    response_timeout: float | None = None
    deadline: float | None = None
    hedge_after: float | None = None
    resume: bool | None = None
    allow_empty: bool | None = None

    @classmethod
    def checked(cls, values: Mapping[str, Any], error: Callable[[str, str], Exception] | None = None) -> FailoverPolicy:
        """The switches of ``values`` (other keys are ignored; None means not set), each value checked.

        ``error(name, problem)`` builds the exception for a bad value (default: :class:`ConfigError`), so each
        level reports in its own terms (``InvalidRequestError`` for a call, a file and line for a config file).
        """
        found: dict[str, Any] = {}
        for name in SWITCHES:
            value = values.get(name)
            if value is None:
                continue
            bad = problem(name, value)
            if bad is not None:
                raise (error or _config_error)(name, bad)
            found[name] = value if name in _FLAGS else float(value)
        return cls(**found) if found else UNSET

    def merged(self, *less_specific: FailoverPolicy) -> FailoverPolicy:
        """This policy with what it leaves unset filled in from ``less_specific`` levels, most specific first."""
        values = {name: value for name, value in asdict(self).items() if value is not None}
        for level in less_specific:
            for name, value in asdict(level).items():
                if value is not None:
                    values.setdefault(name, value)
        return FailoverPolicy(**values)

    def set_values(self) -> dict[str, Any]:
        """The switches this level sets, by name (for display and for building a client from a config)."""
        return {name: value for name, value in asdict(self).items() if value is not None}


#: Every switch's name, in declaration order: the struct's fields, so there is no second list to keep in step.
SWITCHES: tuple[str, ...] = FailoverPolicy.__struct_fields__
_FLAGS = frozenset({"resume", "allow_empty"})
#: A level that sets nothing (shared: the struct is frozen).
UNSET = FailoverPolicy()


def problem(name: str, value: Any) -> str | None:
    """What is wrong with ``value`` for switch ``name`` (None: nothing). The only check of these values."""
    if name in _FLAGS:
        return None if isinstance(value, bool) else "must be true or false"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (value > 0 and math.isfinite(value)):
        return f"must be a positive number of seconds, got {value!r}"
    return None


def _config_error(name: str, bad: str) -> ConfigError:
    return ConfigError(f"{name} {bad}")


class CallPolicy(Struct, frozen=True):
    """One call's failover settings, resolved: the call's over the chain's over the client's, with the deadline
    turned into a point in time. A provider's own ``first_token_timeout`` / ``idle_timeout`` sit between the call's
    and the chain's; they are looked up per attempt by :meth:`limits`."""

    first_token_timeout: float | None = None
    idle_timeout: float | None = None
    response_timeout: float | None = None
    deadline_at: float | None = None
    hedge_after: float | None = None
    resume: bool = False
    allow_empty: bool = False
    # What the call itself set; these beat a provider's own first_token_timeout / idle_timeout.
    call_first_token: bool = False
    call_idle: bool = False

    @classmethod
    def resolve(cls, call: FailoverPolicy, *less_specific: FailoverPolicy) -> CallPolicy:
        p = call.merged(*less_specific)
        return cls(
            first_token_timeout=p.first_token_timeout,
            idle_timeout=p.idle_timeout,
            response_timeout=p.response_timeout,
            deadline_at=time.monotonic() + p.deadline if p.deadline is not None else None,
            hedge_after=p.hedge_after,
            resume=bool(p.resume),
            allow_empty=bool(p.allow_empty),
            call_first_token=call.first_token_timeout is not None,
            call_idle=call.idle_timeout is not None,
        )

    def limits(self, provider: Provider, *, stream: bool) -> Limits:
        first = self.first_token_timeout
        own_first = getattr(provider, "first_token_timeout", None)
        if own_first is not None and not self.call_first_token:
            first = own_first
        if not stream:
            return Limits(answer_timeout(self.response_timeout, first), None, self.deadline_at)
        idle = self.idle_timeout
        own_idle = getattr(provider, "idle_timeout", None)
        if own_idle is not None and not self.call_idle:
            idle = own_idle
        return Limits(first, idle, self.deadline_at)


def answer_timeout(response_timeout: float | None, first_token_timeout: float | None) -> float:
    """A non-stream attempt's limit: ``response_timeout``, else a multiple of the first-token limit in effect, else
    :data:`~polychat._constants.RESPONSE_TIMEOUT` (the numbers, and why: :mod:`polychat._constants`)."""
    if response_timeout is not None:
        return response_timeout
    if first_token_timeout is not None:
        return first_token_timeout * C.RESPONSE_TIMEOUT_FACTOR
    return C.RESPONSE_TIMEOUT
