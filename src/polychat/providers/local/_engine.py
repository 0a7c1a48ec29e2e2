"""The model's side of Local: one long-lived thread per loaded model that does all its llama.cpp work (loading,
reading prompts, generating), taking jobs from a queue one at a time; the shared registry of such engines; and
their shutdown at interpreter exit.

Kept apart because this is the only place that touches llama.cpp (imported lazily, on first load) and the only
place with threads of its own; the provider and the callers' side only submit jobs and wait.
"""

from __future__ import annotations

import atexit
import codecs
import contextlib
import json
import os
import queue
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

from ...errors import APIError, BadRequestError
from ._params import _Plan, _refuse

if TYPE_CHECKING:
    from llama_cpp import Llama
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter
    from llama_cpp.llama_grammar import LlamaGrammar

#: Seconds the interpreter waits at exit for running generations to stop (each stops within one token).
EXIT_JOIN_TIMEOUT = 5.0

# Brackets the number of a message in the rendered template, where its text goes in as text only (private-use
# characters no template alters; the caller's own text never passes through the template, so it cannot fake them).
_SLOT = "\ue000"


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
    #: The most bytes of text one token stands for (computed on the first long prompt): a prompt of more than
    #: ``n_ctx`` times this many bytes cannot fit, whatever it holds, and is refused without being tokenised.
    max_token_bytes: int | None = None

    def token_bytes_max(self) -> int:
        if self.max_token_bytes is None:
            llama = self.llama
            self.max_token_bytes = max(len(llama.detokenize([t], special=True)) for t in range(llama.n_vocab()))
        return self.max_token_bytes


#: Where a job stands: "queued" -> "running" -> "done", or "dropped" when cancelled before it ran.
_State = Literal["queued", "running", "done", "dropped"]
#: What an engine's ``observer`` is told about a job: it entered a state ("queued", "running", "done"), a stop was
#: asked for ("cancelled"; its state says whether it was dropped), a piece of its prompt was read ("piece"), or a
#: piece of its answer was produced ("text").
_Event = Literal["queued", "running", "cancelled", "done", "piece", "text"]

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
        self.state: _State = "queued"
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
        #: Called with a job and each :data:`_Event` of it, in the thread where it happens (a running job's, in the
        #: model's thread, which waits for it to return). For tests and benchmarks: they wait for a job to reach a
        #: point, or hold it there, instead of guessing how fast the model is.
        self.observer: Callable[[_Job, _Event], None] | None = None

    @property
    def loaded(self) -> bool:
        return self._loaded is not None

    @property
    def busy(self) -> bool:
        """Whether a job is running now (a closed stream's job is over by the time close() returns)."""
        return self._running is not None

    def _notify(self, job: _Job, event: _Event) -> None:
        observer = self.observer
        if observer is not None:
            observer(job, event)

    def submit(self, job: _Job) -> None:
        self._notify(job, "queued")  # before the model's thread can see it, so the events come in order
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
            running = job.state == "running"
        self._notify(job, "cancelled")
        return running

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
            self._notify(job, "running")
            try:
                job.result = job.work(self._load(), job)
            except BaseException as e:
                job.error = e
            finally:
                with self._lock:
                    job.state, self._running = "done", None
                self._notify(job, "done")
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
        return self._generate(loaded, plan, prompt, grammar, job)

    def _prompt(self, loaded: _Loaded, plan: _Plan) -> list[int]:
        """The prompt's tokens: the chat template's text may hold control tokens (``<|im_start|>``...), the
        caller's text never does — a message saying ``<|im_end|>`` is read as those characters, not as the end of a
        turn. Refuses, before tokenising anything, messages too long to fit the context whatever they hold."""
        texts = [m["content"] for m in plan.messages]
        if plan.prefill is not None:
            texts.append(plan.prefill)
        size = sum(len(t.encode("utf-8")) for t in texts)
        # One token stands for at least one byte, so only a prompt longer than n_ctx bytes needs the exact bound.
        if size > self.n_ctx and size > self.n_ctx * loaded.token_bytes_max():
            raise self._too_long(f"The messages are {size} bytes long: more than the model's context window of")
        tokens: list[int] = []
        for text, is_template in self._render(loaded, plan, texts):
            if text:
                tokens += loaded.llama.tokenize(text.encode("utf-8"), add_bos=False, special=is_template)
        if len(tokens) >= self.n_ctx:
            raise self._too_long(f"The messages take {len(tokens)} tokens, but the model's context window is")
        return tokens

    def _too_long(self, what: str) -> BadRequestError:
        message = (
            f"{what} {self.n_ctx} tokens (prompt and answer together). Shorten the messages, or use "
            "Local(n_ctx=...) with a larger window."
        )
        error = {"message": message, "type": "invalid_request_error", "param": "messages"}
        body = {"error": {**error, "code": "context_length_exceeded"}}
        return BadRequestError(message, status_code=400, body=body)

    @staticmethod
    def _render(loaded: _Loaded, plan: _Plan, texts: list[str]) -> list[tuple[str, bool]]:
        """The prompt as (text, is_template) pieces: the template is rendered with numbered slots in place of the
        messages' texts, and each slot is then replaced by its text (when continuing an assistant message, the
        prompt ends with its text)."""
        slots = [{"role": m["role"], "content": f"{_SLOT}{i}{_SLOT}"} for i, m in enumerate(plan.messages)]
        try:
            if plan.prefill is None:
                rendered = loaded.chat(messages=cast(Any, slots)).prompt
            else:
                cursor = f"{_SLOT}{len(slots)}{_SLOT}"
                slots.append({"role": "assistant", "content": cursor})
                rendered = loaded.continuation(messages=cast(Any, slots)).prompt
                at = rendered.rfind(cursor)
                if at < 0:
                    raise ValueError("the chat template dropped the assistant message to continue")
                rendered = rendered[: at + len(cursor)]
            parts = rendered.split(_SLOT)
            pieces: list[tuple[str, bool]] = []
            for k, part in enumerate(parts):
                if k % 2 == 0:
                    pieces.append((part, True))
                elif part.isdigit() and int(part) < len(texts) and k + 1 < len(parts):
                    pieces.append((texts[int(part)], False))
                else:
                    raise ValueError("the chat template altered the messages' text in a way Local cannot follow")
        except Exception as e:
            raise _refuse("messages", f"the model's chat template rejected them ({e})", None) from e
        return pieces

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

    def _read_prompt(self, llama: Llama, prompt: list[int], job: _Job, *, fresh: bool) -> bool:
        """Read all but the last ``n_batch``-token piece of the prompt, checking whether ``job`` was cancelled
        between pieces (False: cancelled). ``llama.generate()`` then reads the last piece, just as it would have read
        the whole prompt (the same pieces, so the same numbers). When llama.cpp already holds all of the prompt but
        at most one piece (the earlier turns of a chat) and ``fresh`` is not asked for, this does nothing and
        ``generate()`` reuses that prefix."""
        n = self.n_batch
        if not fresh:
            same = 0
            for a, b in zip(llama.input_ids[: llama.n_tokens].tolist(), prompt, strict=False):
                if a != b:
                    break
                same += 1
            if len(prompt) - same <= n:
                return True
        llama.reset()
        for start in range(0, (len(prompt) - 1) // n * n, n):
            if job.cancelled.is_set():
                return False
            llama.eval(prompt[start : start + n])
            self._notify(job, "piece")
        return True

    def _generate(
        self,
        loaded: _Loaded,
        plan: _Plan,
        prompt: list[int],
        grammar: LlamaGrammar | None,
        job: _Job,
    ) -> _Outcome:
        import llama_cpp

        llama, cancel, emit = loaded.llama, job.cancelled, job.emit if job.forward else None
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
            if not self._read_prompt(llama, prompt, job, fresh=plan.seed is not None):
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
                            self._notify(job, "text")
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
            llama.reset()  # whatever llama.cpp holds now is not to be trusted
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
