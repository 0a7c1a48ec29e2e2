"""The request side of Local: each OpenAI parameter checked against what llama.cpp can do, and the request
translated into a :class:`_Plan` — all before anything is loaded or generated.

Kept apart because it is pure (no llama.cpp, no threads): the table of parameters (:data:`_PARAMS`) is the one
place that decides what Local honours, accepts or refuses, and tests read it directly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...errors import UnsupportedParameterError

if TYPE_CHECKING:
    from ..._request import ChatRequest

log = logging.getLogger("polychat")

#: Sampling when the request leaves it open: llama-cpp-python's ``create_chat_completion`` defaults but for the
#: temperature and repeat penalty below, so an answer here matches llama.cpp's own chat API given the same request
#: and settings. Temperature 0 (greedy): at 0.2 (llama-cpp-python's default, the SmolLM2 authors' advice) the 135M
#: model answered "What is the capital of France?" with Paris in 14 of 20 seeds and with "La femme de France, la
#: femme de France." in others; greedy answers it the same, right, every time, and bench/eval_local.py shows no more
#: runaways for it. (OpenAI's default of 1 makes it ramble.) A request's ``temperature`` replaces it.
DEFAULT_TEMPERATURE = 0.0
DEFAULT_TOP_P = 0.95
DEFAULT_TOP_K = 40
DEFAULT_MIN_P = 0.05
#: Sampling penalty on tokens already in the last 64, where llama-cpp-python's chat API uses 1.0. At 1.0 the 135M
#: model loops ("la Béton Rouge, la Béton Rouge, ...") on everyday questions. bench/eval_local.py (75 answers, default
#: system prompt, temperature 0.2): 1.1 (llama.cpp's CLI default) left 4 runaways, 1.15 left 1 with as many right
#: answers, 1.2 left 1 but got 5 fewer right; with temperature 0, 1.15 left none. ``extra_body={"repeat_penalty":
#: 1.0}`` undoes it.
DEFAULT_REPEAT_PENALTY = 1.15
#: The system message used when the caller sends none. The template's own default ("You are a helpful AI assistant
#: named SmolLM, trained by Hugging Face") invites the model to talk about itself and ramble; this one asks for what
#: a person waiting at a prompt wants. A caller's system (or developer) message, even an empty one, replaces it;
#: ``Local(system_prompt=None)`` goes back to the template's.
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant. Answer briefly and directly, in the language of the question."


# -- request checks (pure) ---------------------------------------------------------------------------------------


def _refuse(param: str, why: str, provider: str | None, value: Any = None) -> UnsupportedParameterError:
    """The error for something Local cannot do: a 400 (``BadRequestError``) and an ``InvalidRequestError`` naming
    ``param``, like every provider's refusals."""
    shown = param if value is None else f"{param}={value!r}"
    message = (
        f"{provider or 'The local model'} cannot honour {shown}: {why}. Remove it, pass drop_unsupported=True to "
        "let providers drop what they cannot honour, or send the request to a provider that supports it."
    )
    detail = f"{provider or 'The local model'} cannot honour {shown}: {why}"
    return UnsupportedParameterError(message, param=param, provider=provider or "", detail=detail)


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


def _template_messages(
    messages: list[dict[str, Any]], provider: str, system_prompt: str | None = None
) -> tuple[list[dict[str, str]], str | None]:
    """The messages as the chat template takes them, and the text of a last assistant message to continue.
    ``system_prompt`` goes first when no message is a system or developer one."""
    out: list[dict[str, str]] = []
    if system_prompt is not None and not any(m["role"] in ("system", "developer") for m in messages):
        out.append({"role": "system", "content": system_prompt})
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


def build_plan(request: ChatRequest, provider: str, *, system_prompt: str | None = DEFAULT_SYSTEM_PROMPT) -> _Plan:
    """Check ``request`` for what llama.cpp can do; raise :class:`BadRequestError` naming what it cannot (or, when
    the call says ``drop_unsupported=True``, leave it out and log it). ``system_prompt``: the system message used
    when the request has none (None: the chat template's own)."""
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
        "repeat_penalty": DEFAULT_REPEAT_PENALTY,
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
    messages, prefill = _template_messages(request.messages, provider, system_prompt)
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
