"""RetryProvider and IterListProvider: providers made of providers, tried per :class:`FailoverPlan`.

Every decision is the plan's (:mod:`.plan`), every deadline the attempt's (:mod:`.attempt`); the loop that
sleeps, calls and records is written once, async, in :mod:`polychat._async.failover`, and its sync twin
:mod:`polychat._sync.failover` is generated from it. A stream holds back chunks until the first one with content,
so a provider failing before it says anything is replaced invisibly. Once content has reached the caller, a failure
raises :class:`~polychat.errors.StreamInterruptedError` with the partial text — or, with ``resume=True``, the
answer continues on the next provider, with repeated text trimmed and the chunks saying who produced them
(:mod:`._stream`).
"""

from __future__ import annotations

import copy
import logging
import random
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from .. import _constants as C
from .._async import failover as _async_failover
from .._failover import UNSET, CallPolicy, FailoverPolicy
from .._sync import failover as _sync_failover
from ..errors import ConfigError, StreamInterruptedError
from ..providers.base import Provider, as_provider
from .breaker import DEFAULT_BREAKER, CircuitBreaker
from .plan import FailoverPlan, Step

if TYPE_CHECKING:
    from .._context import CallContext
    from .._request import ChatRequest
    from ..types import ChatCompletion, ChatCompletionChunk, Model

log = logging.getLogger("polychat")


class RetryProvider(Provider):
    """Try ``providers`` in order (shuffled per request with ``shuffle=True``), each up to ``max_retries`` more
    times for retryable errors; with ``single_provider_retry=True`` only the first, up to ``max_retries`` retries.

    Providers may be classes (instantiated from the environment) or instances; one class may appear twice with
    different settings. Failover switches (each also settable per client and per call; the call's beat the
    chain's, which beat the client's; None leaves the switch to the client; see :class:`polychat.FailoverPolicy`):

    * ``first_token_timeout`` / ``idle_timeout``: seconds to the first content chunk / between chunks (streams);
    * ``deadline``: seconds for the whole call, retries and failovers included;
    * ``hedge_after``: seconds without a first token after which the next provider is started too;
    * ``resume``: continue an interrupted stream on the next provider instead of raising (default False);
    * ``allow_empty``: accept empty answers instead of failing over (default False).

    ``breaker``: a :class:`CircuitBreaker` (default: the calling client's, from its ``breaker_store``, else the
    process-wide one), or False for none.
    """

    def __init__(
        self,
        providers: Iterable[Any],
        shuffle: bool = False,
        single_provider_retry: bool = False,
        max_retries: int = C.RETRY_PROVIDER_MAX_RETRIES,
        *,
        first_token_timeout: float | None = None,
        idle_timeout: float | None = None,
        response_timeout: float | None = None,
        deadline: float | None = None,
        hedge_after: float | None = None,
        resume: bool | None = None,
        allow_empty: bool | None = None,
        breaker: CircuitBreaker | bool | None = None,
        retry_after_cap: float = C.RETRY_AFTER_CAP,
        name: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._specs = list(providers)
        if not self._specs:
            raise ConfigError(f"{type(self).__name__} needs at least one provider")
        self._wrap([as_provider(p) for p in self._specs])
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ConfigError(f"max_retries must be a whole number >= 0, got {max_retries!r}")
        self.failover = FailoverPolicy.checked(
            {
                "first_token_timeout": first_token_timeout,
                "idle_timeout": idle_timeout,
                "response_timeout": response_timeout,
                "deadline": deadline,
                "hedge_after": hedge_after,
                "resume": resume,
                "allow_empty": allow_empty,
            }
        )
        super().__init__(name=name or "+".join(p.name for p in self.providers))
        self.shuffle = shuffle
        self.single_provider_retry = single_provider_retry
        self.max_retries = max_retries
        self.breaker: CircuitBreaker | None = (
            DEFAULT_BREAKER if breaker is None or breaker is True else (breaker or None)
        )
        #: The chain left the breaker to its caller: a client's own breaker (``breaker_store=``) then applies.
        self._default_breaker = breaker is None or breaker is True
        self.retry_after_cap = retry_after_cap
        self._rng = rng or random.Random()
        self._policies: dict[FailoverPolicy, CallPolicy] = {}

    def bind(self, *, api_key: Any = None, base_url: str | None = None) -> Provider:
        if not (api_key or base_url):
            return self
        bound = copy.copy(self)
        bound._wrap([as_provider(p, api_key=api_key, base_url=base_url) for p in self._specs])
        return bound

    def _wrap(self, providers: list[Provider]) -> None:
        """Take ``providers`` as the chain's members: it answers for the first one's capabilities and default
        model."""
        self.providers = providers
        self.capabilities = providers[0].capabilities
        self.default_model = providers[0].default_model

    def members(self) -> list[Provider]:
        return [m for p in self.providers for m in p.members()]

    # -- per call ------------------------------------------------------------------------------------------------

    def resolve(self, ctx: CallContext) -> CallPolicy:
        """This call's failover settings: the call's, else this chain's, else the client's."""
        if ctx.failover is UNSET and ctx.client_failover.deadline is None and self.failover.deadline is None:
            # The common call: no per-call switches and nothing time-based, so the policy is the same every time.
            cached = self._policies.get(ctx.client_failover)
            if cached is None:
                cached = self._policies[ctx.client_failover] = CallPolicy.resolve(
                    UNSET, self.failover, ctx.client_failover
                )
            return cached
        return CallPolicy.resolve(ctx.failover, self.failover, ctx.client_failover)

    def plan(self, request: ChatRequest, policy: CallPolicy, ctx: CallContext | None = None) -> FailoverPlan:
        breaker = self.breaker
        if ctx is not None and ctx.breaker is not None and self._default_breaker:
            breaker = ctx.breaker
        order = list(self.providers)
        if self.shuffle:
            self._rng.shuffle(order)
        return FailoverPlan(
            order,
            self.max_retries,
            self.single_provider_retry,
            request.model,
            self._rng,
            breaker=breaker,
            deadline_at=policy.deadline_at,
            retry_after_cap=self.retry_after_cap,
            record=ctx.record if ctx is not None else None,
            proxy_of=ctx.proxy_for if ctx is not None and ctx.record is not None else None,
        )

    def _note(self, step: Step, error: BaseException, plan: FailoverPlan) -> None:
        nxt = plan.next_step()
        if nxt is None:
            what = "giving up"
        elif nxt.provider is step.provider:
            what = f"retrying in {nxt.delay:.2f}s"
        else:
            what = f"switching to {nxt.provider.name}"
        log.warning("polychat: %s failed (%s: %s); %s", step.provider.name, type(error).__name__, error, what)

    def _fail(self, plan: FailoverPlan, step: Step, error: BaseException, elapsed: float) -> None:
        plan.failed(step, error, elapsed)
        self._note(step, error, plan)

    @staticmethod
    def _interrupted(step: Step, error: BaseException, partial: str) -> StreamInterruptedError:
        err = StreamInterruptedError(
            f"The stream from {step.provider.name} failed after content was sent: {error}",
            partial=partial,
            provider=step.provider.name,
            cause=error,
        )
        err.__cause__ = error
        return err

    # -- the calls: one loop, written async in polychat._async.failover, generated sync in polychat._sync.failover --

    def complete(self, request: ChatRequest, ctx: CallContext) -> ChatCompletion:
        return _sync_failover.complete(self, request, ctx)

    def stream(self, request: ChatRequest, ctx: CallContext) -> Iterator[ChatCompletionChunk]:
        return _sync_failover.stream(self, request, ctx)

    async def acomplete(self, request: ChatRequest, ctx: CallContext) -> ChatCompletion:
        return await _async_failover.complete(self, request, ctx)

    def astream(self, request: ChatRequest, ctx: CallContext) -> AsyncIterator[ChatCompletionChunk]:
        return _async_failover.stream(self, request, ctx)

    # -- models --------------------------------------------------------------------------------------------------

    async def alist_models(self, ctx: CallContext) -> list[Model]:
        return await self.providers[0].alist_models(ctx)

    def list_models(self, ctx: CallContext) -> list[Model]:
        return self.providers[0].list_models(ctx)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.providers!r}, shuffle={self.shuffle}, "
            f"single_provider_retry={self.single_provider_retry}, max_retries={self.max_retries})"
        )


def default_chain(*, api_key: Any = None, base_url: str | None = None) -> Provider:
    """What ``Client()`` uses when no provider is given: the members of
    :func:`polychat.providers.defaults.default_members`, tried in that order."""
    from ..providers.defaults import default_members

    members = default_members(api_key=api_key, base_url=base_url)
    if len(members) == 1:
        return members[0]
    return RetryProvider(members, max_retries=1, name="default")


class IterListProvider(RetryProvider):
    """Try each provider once, in order (shuffled per request with ``shuffle=True``); no retries."""

    def __init__(self, providers: Iterable[Any], shuffle: bool = False, **kwargs: Any) -> None:
        super().__init__(providers, shuffle=shuffle, single_provider_retry=False, max_retries=0, **kwargs)
